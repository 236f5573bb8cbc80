package bandit

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/modelsplit/modelsplit/statistics"
)

// arm is an Arm from its rewards.
func arm(xs ...float64) Arm {
	a := Arm{N: float64(len(xs))}
	for _, x := range xs {
		a.Sum += x
		a.SumSq += x * x
	}
	return a
}

func TestArmMeanAndInterval(t *testing.T) {
	if m := (Arm{}).Mean(); m != 0 {
		t.Errorf("mean without rewards %v, want 0", m)
	}
	if lo, hi := (Arm{}).Interval(true); !math.IsInf(lo, -1) || !math.IsInf(hi, 1) {
		t.Errorf("numeric interval without rewards [%v, %v], want unbounded", lo, hi)
	}
	if lo, hi := (Arm{}).Interval(false); lo != 0 || hi != 1 {
		t.Errorf("binary interval without rewards [%v, %v], want [0, 1]", lo, hi)
	}
	// Binary: Wilson's interval of the rounded successes, clamped to [0, N].
	for _, c := range []struct {
		a    Arm
		succ uint64
	}{{Arm{N: 100, Sum: 30}, 30}, {Arm{N: 100, Sum: 29.6}, 30}, {Arm{N: 10, Sum: -2}, 0}, {Arm{N: 10, Sum: 12}, 10}} {
		lo, hi := c.a.Interval(false)
		wlo, whi, _ := statistics.WilsonInterval(c.succ, uint64(c.a.N), 0.05)
		if lo != wlo || hi != whi {
			t.Errorf("binary %+v: [%v, %v], want Wilson's of %d/%v [%v, %v]", c.a, lo, hi, c.succ, c.a.N, wlo, whi)
		}
	}
	// Numeric: mean ± 1.96 standard errors of the sample variance.
	for _, xs := range [][]float64{{1, 3}, {1, 2, 3, 4}, {-5, 0, 5, 10, 20}} {
		a := arm(xs...)
		n, mean := float64(len(xs)), a.Sum/float64(len(xs))
		var ss float64
		for _, x := range xs {
			ss += (x - mean) * (x - mean)
		}
		se := math.Sqrt(ss / (n - 1) / n)
		lo, hi := a.Interval(true)
		if math.Abs(lo-(mean-1.96*se)) > 1e-9 || math.Abs(hi-(mean+1.96*se)) > 1e-9 {
			t.Errorf("numeric %v: [%v, %v], want %v ± %v", xs, lo, hi, mean, 1.96*se)
		}
	}
	// One numeric reward has no variance: the interval is unbounded; equal
	// rewards have a tiny floor on theirs.
	if lo, hi := arm(3).Interval(true); !math.IsInf(lo, -1) || !math.IsInf(hi, 1) {
		t.Errorf("one numeric reward: [%v, %v], want unbounded", lo, hi)
	}
	if v := arm(2, 2, 2).variance(); v != 1e-12 {
		t.Errorf("variance of equal rewards %v, want the floor 1e-12", v)
	}
}

// A numeric arm with fewer than two rewards is drawn from a wide Normal
// centred on the others' pooled mean, ten times their largest standard
// deviation wide, so it is tried: against arms at 0 and 10 (sd 2) it is
// best when its draw from N(5, 20) passes 10, P = 1-Φ(0.25) ≈ 0.401.
func TestUntriedNumericArmIsDrawnWide(t *testing.T) {
	spread := func(mean float64) Arm {
		xs := make([]float64, 1000)
		for i := range xs {
			xs[i] = mean - 2
			if i%2 == 0 {
				xs[i] = mean + 2
			}
		}
		return arm(xs...)
	}
	for _, untried := range []Arm{{}, arm(1000)} {
		p := ProbBest([]Arm{spread(0), untried, spread(10)}, true, 20_000, rand.NewPCG(3, 4))
		if p[1] < 0.38 || p[1] > 0.42 || p[0] > 0.01 {
			t.Errorf("untried arm %+v: P(best) %v, want about 0.401 for it and about 0 for the arm at 0", untried, p)
		}
	}
	// With no arm tried, every arm is centred on 0 with width 10: each is
	// best about a third of the time.
	p := ProbBest([]Arm{{}, {}, arm(7)}, true, 30_000, rand.NewPCG(5, 6))
	for i := range p {
		if p[i] < 0.31 || p[i] > 0.36 {
			t.Errorf("no arm tried: P(best) %v, want about 1/3 each", p)
		}
	}
	if p := ProbBest(nil, true, 100, rand.NewPCG(1, 1)); len(p) != 0 {
		t.Errorf("no arms: %v", p)
	}
	if p := ProbBest([]Arm{{}, {}}, false, 0, rand.NewPCG(1, 1)); p[0] != 0 || p[1] != 0 {
		t.Errorf("no draws: %v, want zeros", p)
	}
}

// Binary arms draw from Beta(1+successes, 1+failures): equal counts are
// best half the time each, and successes beyond N count as N.
func TestBinaryArmsDrawFromBeta(t *testing.T) {
	p := ProbBest([]Arm{{N: 50, Sum: 10}, {N: 50, Sum: 10}}, false, 20_000, rand.NewPCG(8, 9))
	if p[0] < 0.48 || p[0] > 0.52 || math.Abs(p[0]+p[1]-1) > 1e-12 {
		t.Errorf("equal binary arms: %v, want about half each, summing to 1", p)
	}
	// 9 of 10 against 60 of 100 (clamped): the first is ahead.
	p = ProbBest([]Arm{{N: 10, Sum: 9}, {N: 100, Sum: 60}}, false, 20_000, rand.NewPCG(8, 10))
	if p[0] < 0.95 {
		t.Errorf("9/10 against 60/100: %v, want the first best", p)
	}
	p = ProbBest([]Arm{{N: 10, Sum: 50}, {N: 10, Sum: 5}}, false, 20_000, rand.NewPCG(8, 11))
	if p[0] < 0.95 {
		t.Errorf("10/10 (50 clamped) against 5/10: %v, want the first best", p)
	}
}

// Shares follow the probabilities' proportions even when they do not sum
// to 1.
func TestAllocateInProportion(t *testing.T) {
	got := Allocate([]float64{1, 3}, 0, 100)
	if got[0] != 25 || got[1] != 75 {
		t.Fatalf("Allocate(1, 3) = %v, want 25 and 75", got)
	}
}

func TestAllocateWithoutProbabilities(t *testing.T) {
	got := Allocate([]float64{0, 0, 0, 0}, 10, 80)
	for _, x := range got {
		if x != 20 {
			t.Fatalf("no probabilities: %v, want 20 each (floor 10 plus an even share of 40)", got)
		}
	}
	if got := Allocate(nil, 10, 80); len(got) != 0 {
		t.Fatalf("no arms: %v", got)
	}
}

func TestBasisLargestRemainder(t *testing.T) {
	if got := Basis(nil); len(got) != 0 {
		t.Errorf("Basis of no shares = %v", got)
	}
	for _, c := range []struct {
		shares []float64
		want   []int
	}{
		{[]float64{33.335, 33.335, 33.33}, []int{3334, 3333, 3333}},
		{[]float64{10.004, 39.998, 49.998}, []int{1000, 4000, 5000}},
		{[]float64{50, 50}, []int{5000, 5000}},
		{[]float64{12.5, 12.5, 25, 50}, []int{1250, 1250, 2500, 5000}},
		{[]float64{60.001, 39.999}, []int{6000, 4000}}, // the larger remainder, not the larger share
	} {
		got := Basis(c.shares)
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("Basis(%v) = %v, want %v", c.shares, got, c.want)
				break
			}
		}
	}
}

func TestFinite(t *testing.T) {
	for x, want := range map[float64]float64{math.Inf(1): 0, math.Inf(-1): 0, 2e300: 0, -2e300: 0, 1e300: 1e300, -1e300: -1e300, 0.5: 0.5} {
		if got := finite(x); got != want {
			t.Errorf("finite(%v) = %v, want %v", x, got, want)
		}
	}
	if finite(math.NaN()) != 0 {
		t.Error("finite(NaN) is not 0")
	}
}

// An arm with two rewards already centres the untried ones: against an
// arm at 10 (two rewards) an untried arm drawn around 10 is best half the
// time.
func TestTwoRewardsCentreTheUntried(t *testing.T) {
	p := ProbBest([]Arm{arm(10, 10), {}}, true, 20_000, rand.NewPCG(12, 13))
	if p[1] < 0.47 || p[1] > 0.53 {
		t.Errorf("untried arm against one at 10 with two rewards: P(best) %v, want about 0.5", p)
	}
}

// Two rewards are enough for an arm's own posterior: arms at 0 and 10
// with two rewards each are told apart.
func TestTwoRewardsDrawFromTheArm(t *testing.T) {
	p := ProbBest([]Arm{arm(-1, 1), arm(9, 11)}, true, 20_000, rand.NewPCG(14, 15))
	if p[1] < 0.99 {
		t.Errorf("arms at 0 and 10 with two rewards each: P(best) %v, want the second almost surely", p)
	}
}
