package cohort

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/modelsplit/modelsplit/config"
)

// BenchmarkHash is the new-user pick alone: the pick hash plus the interval
// search among three variants.
func BenchmarkHash(b *testing.B) {
	cum := cumulative(config.ScaledWeights([]config.Variant{{Weight: 90}, {Weight: 5}, {Weight: 5}}))
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i, sink := 0, 0
	for b.Loop() {
		sink += pickInterval(pickHash("", keys[i&1023]), cum)
		i++
	}
	_ = sink
}

func cumulative(ws []uint32) []uint64 {
	out := make([]uint64, len(ws))
	var c uint64
	for i, w := range ws {
		c += uint64(w)
		out[i] = c
	}
	return out
}

func variantsOf(ws ...int) []config.Variant {
	vs := make([]config.Variant, len(ws))
	for i, w := range ws {
		vs[i] = config.Variant{Name: strconv.Itoa(i), Weight: w}
	}
	return vs
}

// Zero-weight variants are never picked, and a pick always lands on a
// serving variant.
func TestPickSkipsDrainedVariants(t *testing.T) {
	cum := cumulative(config.ScaledWeights(variantsOf(0, 70, 0, 30, 0)))
	for u := 0; u < 20000; u++ {
		i := pickInterval(pickHash("", strconv.Itoa(u)), cum)
		if i != 1 && i != 3 {
			t.Fatalf("user %d picked variant %d, which has weight 0", u, i)
		}
	}
}

// The salt changes who lands where (it is what resets an experiment), and
// it is the same as hashing salt+key (what Envoy's hash policy sees after
// the rewrite that prepends it).
func TestPickHashSalt(t *testing.T) {
	moved := 0
	for u := 0; u < 1000; u++ {
		k := "user-" + strconv.Itoa(u)
		if pickHash("s1", k) != pickHash("", "s1"+k) {
			t.Fatalf("salted hash of %q is not the hash of salt+key", k)
		}
		if pickHash("s1", k)%2 != pickHash("", k)%2 {
			moved++
		}
	}
	if moved < 400 || moved > 600 {
		t.Errorf("a salt moved %d of 1000 users between halves, want about 500", moved)
	}
}

// With two variants, raising the second (a canary listed after the
// baseline) only ever moves users onto it, for any steps, because the
// scaled total never changes.
func TestRaisingTheCanaryOnlyMovesUsersOntoIt(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 200; trial++ {
		n := 2
		before := make([]int, n)
		for i := range before {
			before[i] = 1 + rng.IntN(50)
		}
		after := append([]int(nil), before...)
		after[n-1] += 1 + rng.IntN(200)
		// The others may be rescaled by any common factor: shares are what count.
		cb, ca := cumulative(config.ScaledWeights(variantsOf(before...))), cumulative(config.ScaledWeights(variantsOf(after...)))
		for u := 0; u < 2000; u++ {
			h := pickHash("", "u"+strconv.Itoa(u))
			from, to := pickInterval(h, cb), pickInterval(h, ca)
			if from != to && to != n-1 {
				t.Fatalf("weights %v → %v moved user %d from %d to %d, not onto the raised variant", before, after, u, from, to)
			}
		}
	}
}

// Scaled weights sum to WeightScale, keep each share within one unit
// (plus one per tiny weight lifted to 1), and
// never drop a positive weight to 0.
func TestScaledWeights(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 2000; trial++ {
		n := 1 + rng.IntN(6)
		ws := make([]int, n)
		total := 0
		for i := range ws {
			if rng.IntN(3) > 0 {
				ws[i] = rng.IntN(1_000_000) + 1
				if rng.IntN(4) == 0 {
					ws[i] = 1
				}
			}
			total += ws[i]
		}
		got := config.ScaledWeights(variantsOf(ws...))
		tol := 1.0001 // rounding, plus one unit per tiny weight lifted to 1
		for _, w := range ws {
			if w > 0 && float64(w)*config.WeightScale < float64(total) {
				tol++
			}
		}
		sum := 0
		for i, g := range got {
			sum += int(g)
			if ws[i] == 0 && g != 0 && total > 0 {
				t.Fatalf("%v → %v: weight 0 got %d", ws, got, g)
			}
			if ws[i] > 0 && g == 0 {
				t.Fatalf("%v → %v: positive weight dropped to 0", ws, got)
			}
			if total > 0 {
				exact := float64(ws[i]) * config.WeightScale / float64(total)
				if d := float64(g) - exact; (d > tol || d < -tol) && g != 1 {
					t.Fatalf("%v → %v: share %d is %.2f from exact %.2f", ws, got, i, d, exact)
				}
			}
		}
		if sum != config.WeightScale {
			t.Fatalf("%v → %v sums to %d", ws, got, sum)
		}
	}
	if got := config.ScaledWeights(variantsOf(90, 10)); got[0] != 9000 || got[1] != 1000 {
		t.Errorf("90/10 → %v, want 9000/1000", got)
	}
	if got := config.ScaledWeights(variantsOf(1, 1, 1)); got[0]+got[1]+got[2] != 10000 || got[0] != 3334 {
		t.Errorf("1/1/1 → %v, want 3334/3333/3333", got)
	}
}
