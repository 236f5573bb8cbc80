package statistics

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// Window is a stretch of time during which one set of routing weights
// was in force: Counts[i] is how many units (users, requests) variant i
// received in it, Weights[i] the weight variant i had. Weights need not
// sum to 1 or 100; only their shares matter.
type Window struct {
	Counts  []uint64
	Weights []float64
}

// SRM is the result of SampleRatioMismatch.
type SRM struct {
	ChiSquare float64
	DF        int
	P         float64
	Observed  []uint64  // summed over the windows
	Expected  []float64 // summed over the windows
}

// SampleRatioMismatch tests whether the observed split across variants
// fits the weights that were in force, with Pearson's chi-square
// goodness-of-fit test. Each window contributes its own total times
// each variant's weight share to that variant's expected count, so a
// weight change mid-rollout is not mistaken for a mismatch; the test is
// then run on the sums, as scipy.stats.chisquare(observed, expected).
//
// Variants whose expected count is 0 (weight 0 in every window) are
// left out of the statistic and of the degrees of freedom, so an
// idle variant does not turn the result into NaN. If such a variant
// received any traffic anyway, that is an infinite mismatch: ChiSquare
// is +Inf and P is 0. With fewer than two variants expecting traffic,
// or no traffic at all, there is nothing to compare: ChiSquare is 0 and
// P is 1 (SciPy: nan for df = 0).
func SampleRatioMismatch(windows []Window) (SRM, error) {
	if len(windows) == 0 {
		return SRM{}, fmt.Errorf("statistics: no windows")
	}
	k := len(windows[0].Counts)
	if k == 0 {
		return SRM{}, fmt.Errorf("statistics: window 0 has no variants")
	}
	r := SRM{Observed: make([]uint64, k), Expected: make([]float64, k)}
	for w, win := range windows {
		if len(win.Counts) != k || len(win.Weights) != k {
			return SRM{}, fmt.Errorf("statistics: window %d has %d counts and %d weights, want %d of each", w, len(win.Counts), len(win.Weights), k)
		}
		var sumW, total float64
		for i, wt := range win.Weights {
			if !(wt >= 0) || math.IsInf(wt, 0) {
				return SRM{}, fmt.Errorf("statistics: window %d: weight %d must be finite and >= 0, got %v", w, i, wt)
			}
			sumW += wt
			total += float64(win.Counts[i])
			r.Observed[i] += win.Counts[i]
		}
		if total == 0 {
			continue
		}
		if sumW == 0 {
			return SRM{}, fmt.Errorf("statistics: window %d has traffic but all weights are 0", w)
		}
		for i, wt := range win.Weights {
			r.Expected[i] += total * wt / sumW
		}
	}
	cells := 0
	for i, e := range r.Expected {
		if e == 0 {
			if r.Observed[i] > 0 {
				r.ChiSquare = math.Inf(1)
			}
			continue
		}
		cells++
		d := float64(r.Observed[i]) - e
		r.ChiSquare += d * d / e
	}
	r.DF = cells - 1
	switch {
	case math.IsInf(r.ChiSquare, 1):
		r.P = 0
	case r.DF < 1:
		r.ChiSquare, r.P = 0, 1
	default:
		r.P = distuv.ChiSquared{K: float64(r.DF)}.Survival(r.ChiSquare)
	}
	return r, nil
}
