package rollout

import (
	"fmt"
	"math"

	"github.com/modelsplit/modelsplit/statistics"
)

// The gates' statistics, from package statistics.

// sequential is an always-valid one-sided test that the canary's error
// ratio exceeds the baseline's by more than a margin; it is fed the
// cumulative counts at every check.
type sequential struct{ t *statistics.SequentialTest }

func newSequential(margin, alpha float64) *sequential {
	return &sequential{t: statistics.NewSequentialTest(margin, alpha)}
}

func (s *sequential) update(failC, nC, failB, nB uint64) (p float64, reject bool, err error) {
	v, err := s.t.Update(failC, nC, failB, nB)
	if err != nil {
		return 1, false, err
	}
	return v.P, v.Reject, nil
}

// spentAlpha is the level for the k-th check of a fixed-sample test
// checked repeatedly: the levels of all checks sum to at most alpha.
func spentAlpha(alpha float64, k int) float64 { return statistics.AlphaSpending(alpha, k) }

// histQuantile reads quantile q off per-bucket latency counts (the last
// bucket is +Inf).
func histQuantile(bounds []float64, counts []uint64, q float64) (float64, error) {
	if len(counts) != len(bounds)+1 {
		return 0, fmt.Errorf("latency histogram has %d buckets for %d bounds", len(counts), len(bounds))
	}
	return statistics.HistogramQuantile(q, append(append([]float64(nil), bounds...), math.Inf(1)), counts)
}

// mannWhitneyGreater is the one-sided p-value that the canary's latency
// (c) is stochastically greater than the baseline's (b).
func mannWhitneyGreater(c, b []uint64) (float64, error) {
	if len(c) != len(b) {
		return 1, fmt.Errorf("latency histograms of different shapes (%d and %d buckets)", len(c), len(b))
	}
	mw, err := statistics.MannWhitneyHistogram(c, b)
	if err != nil {
		return 1, err
	}
	return mw.P.Greater, nil
}

// agreementTest is an always-valid one-sided test that a shadow's
// agreement is below a floor.
type agreementTest struct {
	t *statistics.SequentialProportion
}

func newAgreementTest(floor, alpha float64) *agreementTest {
	return &agreementTest{t: statistics.NewSequentialProportion(floor, statistics.Less, alpha)}
}

func (a *agreementTest) update(agreed, compared uint64) (p float64, reject bool, err error) {
	v, err := a.t.Update(agreed, compared)
	if err != nil {
		return 1, false, err
	}
	return v.P, v.Reject, nil
}

// srm tests new-user counts against the weights in force when they were
// assigned (one entry per distinct set of weights). It returns the
// statistic, the p-value and the canary's expected share.
func srm(ws []srmWindow, names []string, canary string) (chi2, p, expCanary float64, err error) {
	in := make([]statistics.Window, 0, len(ws))
	var expC, total float64
	for _, w := range ws {
		sw := statistics.Window{Counts: make([]uint64, len(names)), Weights: make([]float64, len(names))}
		var sum, n float64
		for i, name := range names {
			sw.Counts[i] = w.assigned[name]
			sw.Weights[i] = float64(w.weights[name])
			sum += sw.Weights[i]
			n += float64(sw.Counts[i])
		}
		if sum > 0 {
			expC += n * float64(w.weights[canary]) / sum
		}
		total += n
		in = append(in, sw)
	}
	res, err := statistics.SampleRatioMismatch(in)
	if err != nil {
		return 0, 1, 0, err
	}
	if total > 0 {
		expCanary = expC / total
	}
	return res.ChiSquare, res.P, expCanary, nil
}
