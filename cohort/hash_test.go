package cohort

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// BenchmarkHash is the hash alone: the salted user-key hash plus a weighted
// rendezvous pick among three variants.
func BenchmarkHash(b *testing.B) {
	seeds := []uint64{variantSeed("m", "s", "a"), variantSeed("m", "s", "b"), variantSeed("m", "s", "c")}
	weights := []float64{90, 5, 5}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i, sink := 0, 0
	for b.Loop() {
		sink += pickRendezvous(keyHash(42, keys[i&1023]), seeds, weights)
		i++
	}
	_ = sink
}

// The pick must not depend on the order variants are listed in.
func TestRendezvousIgnoresVariantOrder(t *testing.T) {
	seeds := []uint64{variantSeed("m", "", "a"), variantSeed("m", "", "b"), variantSeed("m", "", "c")}
	weights := []float64{50, 30, 20}
	rs := []uint64{seeds[2], seeds[0], seeds[1]}
	rw := []float64{weights[2], weights[0], weights[1]}
	back := []int{2, 0, 1} // index in the shuffled order → original index
	for i := 0; i < 10000; i++ {
		kh := keyHash(7, strconv.Itoa(i))
		if a, b := pickRendezvous(kh, seeds, weights), back[pickRendezvous(kh, rs, rw)]; a != b {
			t.Fatalf("key %d: %d in one order, %d in another", i, a, b)
		}
	}
	if pickRendezvous(1, seeds, []float64{0, 0, 0}) != -1 {
		t.Error("no variant has weight, yet one was picked")
	}
}

// Rendezvous monotonicity as a property over random weight changes of any
// number of variants at once: a user only moves from a to b if a's weight
// went down or b's went up.
func TestRendezvousMovesOnlyWithTheWeights(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 300; trial++ {
		n := 3 + rng.IntN(4)
		seeds := make([]uint64, n)
		before, after := make([]float64, n), make([]float64, n)
		for i := range seeds {
			seeds[i] = variantSeed("m", "s", strconv.Itoa(i))
			before[i], after[i] = float64(rng.IntN(4)*rng.IntN(50)), float64(rng.IntN(4)*rng.IntN(50))
		}
		before[0]++ // at least one serving variant on each side
		after[n-1]++
		for u := 0; u < 2000; u++ {
			kh := keyHash(9, strconv.Itoa(u))
			from, to := pickRendezvous(kh, seeds, before), pickRendezvous(kh, seeds, after)
			if from != to && after[from] >= before[from] && after[to] <= before[to] {
				t.Fatalf("weights %v → %v moved user %d from %d to %d although neither weight moved that way", before, after, u, from, to)
			}
		}
	}
}
