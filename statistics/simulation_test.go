package statistics

import (
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"
)

// The simulations draw binomial counts per check interval (not per
// request) from fixed seeds, so they are fast and give the same figures
// on every run.

const (
	simIntervals = 30
	simPerArm    = 500 // requests per arm per interval
)

// runSequential feeds one rollout's cumulative counts to a fresh
// SequentialTest and returns the requests per arm at the first
// rejection, or 0 if it never rejected within the horizon.
func runSequential(t *testing.T, src rand.Source, pCanary, pBaseline float64) uint64 {
	t.Helper()
	canary := distuv.Binomial{N: simPerArm, P: pCanary, Src: src}
	baseline := distuv.Binomial{N: simPerArm, P: pBaseline, Src: src}
	s := NewSequentialTest(0, 0.05)
	var f1, f2, n uint64
	for range simIntervals {
		f1 += uint64(canary.Rand())
		f2 += uint64(baseline.Rand())
		n += simPerArm
		v, err := s.Update(f1, n, f2, n)
		if err != nil {
			t.Fatal(err)
		}
		if v.Reject {
			return n
		}
	}
	return 0
}

// A/A: both arms at 1% errors, checked after every interval. The
// always-valid guarantee says at most alpha of such rollouts may ever be
// rejected.
func TestSimulationAAFalseRejections(t *testing.T) {
	const runs = 1000
	src := rand.NewPCG(1, 2)
	rejected := 0
	for range runs {
		if runSequential(t, src, 0.01, 0.01) > 0 {
			rejected++
		}
	}
	rate := float64(rejected) / runs
	t.Logf("A/A at 1%% errors, %d looks of %d requests per arm: %d of %d runs falsely rejected (%.1f%%)", simIntervals, simPerArm, rejected, runs, 100*rate)
	if rate > 0.05 {
		t.Errorf("false-rejection rate %.3f exceeds alpha 0.05", rate)
	}
}

// The canary at twice the baseline's error ratio (1% -> 2%) must be
// caught within the horizon in at least 95% of rollouts.
func TestSimulationDoubledErrorsRejected(t *testing.T) {
	const runs = 200
	src := rand.NewPCG(3, 4)
	var needed []uint64
	for range runs {
		if n := runSequential(t, src, 0.02, 0.01); n > 0 {
			needed = append(needed, n)
		}
	}
	power := float64(len(needed)) / runs
	slices.Sort(needed)
	median := uint64(0)
	if len(needed) > 0 {
		median = needed[len(needed)/2]
	}
	t.Logf("1%% -> 2%%: rejected in %d of %d runs (%.1f%%) within %d requests per arm; median %d requests per arm to reject (among rejected runs)",
		len(needed), runs, 100*power, simIntervals*simPerArm, median)
	if power < 0.95 {
		t.Errorf("rejected in %.3f of runs, want >= 0.95", power)
	}
}

// SRM: 20,000 users assigned 52/48 (one deterministic draw) against
// 50/50 weights must be flagged at p < 0.001.
func TestSimulationSRM5248(t *testing.T) {
	src := rand.NewPCG(5, 6)
	a := uint64(distuv.Binomial{N: 20000, P: 0.52, Src: src}.Rand())
	r, err := SampleRatioMismatch([]Window{{Counts: []uint64{a, 20000 - a}, Weights: []float64{50, 50}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SRM 52/48 draw: %d/%d users, chi2 %.2f, p %.3g", a, 20000-a, r.ChiSquare, r.P)
	if !(r.P < 0.001) {
		t.Errorf("p = %v, want < 0.001", r.P)
	}
	// The exact 10,400/9,600 split is in the reference values too.
	r, _ = SampleRatioMismatch([]Window{{Counts: []uint64{10400, 9600}, Weights: []float64{50, 50}}})
	t.Logf("SRM exact 10400/9600: chi2 %.2f, p %.3g", r.ChiSquare, r.P)
	if !(r.P < 0.001) {
		t.Errorf("exact split: p = %v, want < 0.001", r.P)
	}
}
