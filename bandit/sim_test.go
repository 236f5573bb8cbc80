package bandit

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// policy returns the next batch's shares (percent) from the arms so far.
type policy func(arms []Arm, update int) []float64

// simulate sends users one by one to arms drawn by the policy's shares,
// each earning a Bernoulli reward at its arm's rate, updating the shares
// every batch users. It returns the cumulative expected regret at each
// checkpoint and the best arm's share of the batch that ends at share.
func simulate(rates []float64, users, batch int, checkpoints []int, share int, seed uint64, next policy) (regret map[int]float64, bestShare float64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	best := 0
	for i, r := range rates {
		if r > rates[best] {
			best = i
		}
	}
	arms := make([]Arm, len(rates))
	shares := make([]float64, len(rates))
	for i := range shares {
		shares[i] = 100 / float64(len(rates))
	}
	regret = map[int]float64{}
	cum, update, onBest := 0.0, 0, 0
	for u := 1; u <= users; u++ {
		x := rng.Float64() * 100
		a := len(shares) - 1
		for i, s := range shares {
			if x < s {
				a = i
				break
			}
			x -= s
		}
		r := 0.0
		if rng.Float64() < rates[a] {
			r = 1
		}
		arms[a].N++
		arms[a].Sum += r
		arms[a].SumSq += r * r
		cum += rates[best] - rates[a]
		if u > share-batch && u <= share && a == best {
			onBest++
		}
		for _, c := range checkpoints {
			if u == c {
				regret[c] = cum
			}
		}
		if u%batch == 0 {
			update++
			shares = next(arms, update)
		}
	}
	return regret, float64(onBest) / float64(batch)
}

func thompsonPolicy(seed uint64, floor float64) policy {
	return func(arms []Arm, update int) []float64 {
		return Allocate(ProbBest(arms, false, 2000, rand.NewPCG(seed, uint64(update))), floor, 100)
	}
}

func epsilonGreedy(eps float64) policy {
	return func(arms []Arm, _ int) []float64 {
		best := 0
		for i, a := range arms {
			if a.Mean() > arms[best].Mean() {
				best = i
			}
		}
		out := make([]float64, len(arms))
		for i := range out {
			out[i] = 100 * eps / float64(len(arms))
		}
		out[best] += 100 * (1 - eps)
		return out
	}
}

func uniform(arms []Arm, _ int) []float64 {
	out := make([]float64, len(arms))
	for i := range out {
		out[i] = 100 / float64(len(arms))
	}
	return out
}

// Bernoulli arms 4%, 5% and 6%, weights updated every 1,000 users, floor
// 5%: by 50,000 users at least 70% of new users go to the best arm, and
// the cumulative regret is below ε-greedy (ε = 0.1) and uniform
// allocation over the same users (10 seeds).
func TestThompsonBeatsEpsilonGreedyAndUniform(t *testing.T) {
	rates := []float64{0.04, 0.05, 0.06}
	checks := []int{10_000, 50_000, 100_000}
	var table strings.Builder
	fmt.Fprintf(&table, "seed | Thompson 10k/50k/100k | ε-greedy 10k/50k/100k | uniform 10k/50k/100k | best arm's share at 50k\n")
	var sumT, sumE, sumU [3]float64
	for seed := uint64(1); seed <= 10; seed++ {
		rt, share := simulate(rates, 100_000, 1000, checks, 50_000, seed, thompsonPolicy(seed, 1))
		re, _ := simulate(rates, 100_000, 1000, checks, 50_000, seed, epsilonGreedy(0.1))
		ru, _ := simulate(rates, 100_000, 1000, checks, 50_000, seed, uniform)
		fmt.Fprintf(&table, "%4d | %5.0f %5.0f %5.0f | %5.0f %5.0f %5.0f | %5.0f %5.0f %5.0f | %.1f%%\n", seed,
			rt[checks[0]], rt[checks[1]], rt[checks[2]], re[checks[0]], re[checks[1]], re[checks[2]],
			ru[checks[0]], ru[checks[1]], ru[checks[2]], 100*share)
		for i, c := range checks {
			sumT[i] += rt[c]
			sumE[i] += re[c]
			sumU[i] += ru[c]
		}
		if share < 0.70 {
			t.Errorf("seed %d: %.1f%% of the users around 50,000 went to the best arm, want at least 70%%", seed, 100*share)
		}
	}
	fmt.Fprintf(&table, "mean | %5.0f %5.0f %5.0f | %5.0f %5.0f %5.0f | %5.0f %5.0f %5.0f |\n",
		sumT[0]/10, sumT[1]/10, sumT[2]/10, sumE[0]/10, sumE[1]/10, sumE[2]/10, sumU[0]/10, sumU[1]/10, sumU[2]/10)
	t.Logf("cumulative expected regret (rewards lost against always the best arm):\n%s", table.String())
	if sumT[2] >= sumE[2] || sumT[2] >= sumU[2] {
		t.Errorf("regret at 100k: Thompson %.0f, ε-greedy %.0f, uniform %.0f; Thompson must be lowest", sumT[2]/10, sumE[2]/10, sumU[2]/10)
	}
}

func TestAllocateAndBasis(t *testing.T) {
	got := Allocate([]float64{0, 0.25, 0.75}, 5, 80)
	want := []float64{5, 5 + 65*0.25, 5 + 65*0.75}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-9 || d < -1e-9 {
			t.Fatalf("Allocate = %v, want %v", got, want)
		}
	}
	b := Basis([]float64{33.335, 33.335, 33.33})
	if s := b[0] + b[1] + b[2]; s != 10_000 {
		t.Fatalf("Basis sums to %d: %v", s, b)
	}
	// A floor too large for the share splits it evenly.
	if got := Allocate([]float64{1, 0}, 60, 100); got[0] != 50 || got[1] != 50 {
		t.Fatalf("over-floored Allocate = %v", got)
	}
}

// The same counts and seed give the same probabilities (replicas agree);
// an arm far ahead is almost surely best.
func TestProbBestIsReproducible(t *testing.T) {
	arms := []Arm{{N: 5000, Sum: 200}, {N: 5000, Sum: 250}, {N: 5000, Sum: 400}}
	a := ProbBest(arms, false, 4000, rand.NewPCG(7, 1))
	b := ProbBest(arms, false, 4000, rand.NewPCG(7, 1))
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different answers: %v vs %v", a, b)
		}
	}
	if a[2] < 0.99 {
		t.Fatalf("an arm at 8%% against 4%% and 5%% over 5,000 each: P(best) %v", a)
	}
	num := []Arm{{N: 1000, Sum: 500, SumSq: 1000}, {N: 1000, Sum: 700, SumSq: 1200}}
	if p := ProbBest(num, true, 4000, rand.NewPCG(7, 2)); p[1] < 0.99 {
		t.Fatalf("numeric arms with means 0.5 and 0.7 over 1,000 each: %v", p)
	}
}
