package bandit

import (
	"math"
	"math/rand/v2"
	"sort"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/modelsplit/modelsplit/statistics"
)

// Arm is what the bandit knows of one arm: rewards counted, their sum
// and sum of squares.
type Arm struct {
	Name  string  `json:"name"`
	N     float64 `json:"n"`
	Sum   float64 `json:"sum"`
	SumSq float64 `json:"sum_sq"`
}

// Mean is the arm's mean reward (0 with no rewards).
func (a Arm) Mean() float64 {
	if a.N == 0 {
		return 0
	}
	return a.Sum / a.N
}

// Interval is a 95% interval for the arm's mean: Wilson's for binary
// rewards, mean ± 1.96 standard errors for numeric ones.
func (a Arm) Interval(numeric bool) (lo, hi float64) {
	if a.N == 0 {
		if numeric {
			return math.Inf(-1), math.Inf(1)
		}
		return 0, 1
	}
	if !numeric {
		s := min(max(math.Round(a.Sum), 0), a.N)
		lo, hi, err := statistics.WilsonInterval(uint64(s), uint64(a.N), 0.05)
		if err == nil {
			return lo, hi
		}
	}
	se := math.Sqrt(a.variance() / a.N)
	return a.Mean() - 1.96*se, a.Mean() + 1.96*se
}

func (a Arm) variance() float64 {
	if a.N < 2 {
		return math.Inf(1)
	}
	m := a.Mean()
	return max((a.SumSq-a.N*m*m)/(a.N-1), 1e-12)
}

// sampler draws one plausible mean per arm from its posterior: Beta(1 +
// successes, 1 + failures) for binary rewards (a uniform prior); for
// numeric rewards Normal(mean, s²/n), with a flat prior (an arm with
// fewer than two rewards draws from a wide Normal around the others, so
// it is tried).
type sampler struct {
	draw []func() float64
}

func newSampler(arms []Arm, numeric bool, src rand.Source) sampler {
	s := sampler{draw: make([]func() float64, len(arms))}
	var spread, center float64
	if numeric {
		var n float64
		for _, a := range arms {
			if a.N >= 2 {
				center += a.Sum
				n += a.N
				spread = max(spread, math.Sqrt(a.variance()))
			}
		}
		if n > 0 {
			center /= n
		}
		spread = max(spread, 1)
	}
	for i, a := range arms {
		switch {
		case !numeric:
			succ := min(max(a.Sum, 0), a.N)
			b := distuv.Beta{Alpha: 1 + succ, Beta: 1 + a.N - succ, Src: src}
			s.draw[i] = b.Rand
		case a.N < 2:
			nd := distuv.Normal{Mu: center, Sigma: 10 * spread, Src: src}
			s.draw[i] = nd.Rand
		default:
			nd := distuv.Normal{Mu: a.Mean(), Sigma: math.Sqrt(a.variance() / a.N), Src: src}
			s.draw[i] = nd.Rand
		}
	}
	return s
}

// ProbBest estimates each arm's posterior probability of having the
// highest mean reward from draws Monte Carlo samples; src makes it
// reproducible (replicas given the same counts and seed agree exactly).
func ProbBest(arms []Arm, numeric bool, draws int, src rand.Source) []float64 {
	out := make([]float64, len(arms))
	if len(arms) == 0 || draws <= 0 {
		return out
	}
	s := newSampler(arms, numeric, src)
	for range draws {
		best, bv := 0, math.Inf(-1)
		for i, d := range s.draw {
			if v := d(); v > bv {
				best, bv = i, v
			}
		}
		out[best]++
	}
	for i := range out {
		out[i] /= float64(draws)
	}
	return out
}

// Allocate turns the bandit arms' probabilities of being best into
// shares (percent) of share: every arm gets floor, the rest is split in
// proportion to the probabilities (Thompson sampling's allocation).
func Allocate(pbest []float64, floor, share float64) []float64 {
	out := make([]float64, len(pbest))
	if len(pbest) == 0 {
		return out
	}
	rest := share - floor*float64(len(pbest))
	if rest < 0 {
		rest, floor = 0, share/float64(len(pbest))
	}
	total := 0.0
	for _, p := range pbest {
		total += p
	}
	for i, p := range pbest {
		if total > 0 {
			out[i] = floor + rest*p/total
		} else {
			out[i] = floor + rest/float64(len(pbest))
		}
	}
	return out
}

// Basis turns shares (percent, summing to 100) into integer weights
// summing to exactly 10,000 (largest remainder; ties: the earlier arm).
func Basis(shares []float64) []int {
	out := make([]int, len(shares))
	type rem struct {
		i int
		r float64
	}
	var rems []rem
	sum := 0
	for i, s := range shares {
		x := s * 100
		out[i] = int(math.Floor(x))
		sum += out[i]
		rems = append(rems, rem{i, x - math.Floor(x)})
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r > rems[b].r })
	for k := 0; sum < 10_000 && len(rems) > 0; k++ {
		out[rems[k%len(rems)].i]++
		sum++
	}
	return out
}
