package statistics

import (
	"fmt"
	"math"
)

// MannWhitney is the result of MannWhitneyHistogram.
type MannWhitney struct {
	// U is the statistic of the first sample: the number of (x, y) pairs
	// with x > y plus half the tied pairs (SciPy's U1).
	U float64
	P PValues
}

// MannWhitneyHistogram runs the Mann–Whitney U test (Wilcoxon rank-sum)
// on two samples given as histograms over the same buckets: x[i] and
// y[i] are the numbers of observations in bucket i (per bucket, not
// cumulative as Prometheus exposes them), buckets in increasing order.
// Only the order of buckets matters, not their bounds, and all
// observations in one bucket count as ties: the result equals
// scipy.stats.mannwhitneyu(xs, ys, method="asymptotic",
// use_continuity=True, alternative=...) on samples in which each
// observation is replaced by its bucket's index. The normal
// approximation uses SciPy's tie correction and continuity correction.
// P.Greater is for "x tends to be larger than y" (canary slower).
//
// The test compares whole distributions through ranks, so a long tail
// or a few huge outliers do not swamp it as they do a t-test on means;
// that is why latency gates use it. It needs no assumption of shape but
// loses power when most observations share one bucket (coarse buckets).
// When every observation is in one bucket the variance is 0; as SciPy,
// every p-value is then 1.
func MannWhitneyHistogram(x, y []uint64) (MannWhitney, error) {
	if len(x) != len(y) {
		return MannWhitney{}, fmt.Errorf("statistics: histograms have %d and %d buckets, want the same buckets", len(x), len(y))
	}
	var n1, n2, u, below, ties float64
	for i := range x {
		xi, yi := float64(x[i]), float64(y[i])
		u += xi * (below + 0.5*yi)
		below += yi
		n1 += xi
		n2 += yi
		t := xi + yi
		ties += t*t*t - t
	}
	if n1 == 0 || n2 == 0 {
		return MannWhitney{}, fmt.Errorf("statistics: both histograms need observations (n1 = %v, n2 = %v)", n1, n2)
	}
	n := n1 + n2
	s := math.Sqrt(n1 * n2 / 12 * ((n + 1) - ties/(n*(n-1))))
	mu := n1 * n2 / 2
	r := MannWhitney{U: u}
	if !(s > 0) {
		r.P = noEvidence
		return r, nil
	}
	// As SciPy: each one-sided p uses its own U and the continuity
	// correction towards the mean; the two-sided one uses max(U1, U2).
	u2 := n1*n2 - u
	z := func(uu float64) float64 { return (uu - mu - 0.5) / s }
	r.P = PValues{
		Greater:  normalSF(z(u)),
		Less:     normalSF(z(u2)),
		TwoSided: math.Min(1, 2*normalSF(z(math.Max(u, u2)))),
	}
	return r, nil
}

// HistogramQuantile estimates the q-quantile (0 <= q <= 1) of a sample
// given as a histogram, by the rule of Prometheus' histogram_quantile:
// find the bucket holding the observation of rank q·total and
// interpolate linearly between its lower and upper bound, as if its
// observations were spread evenly. upperBounds must increase strictly;
// counts are per bucket (not cumulative). The first bucket's lower bound
// is 0 when its upper bound is positive (latencies), otherwise the
// answer in it is its upper bound. A quantile landing in a final +Inf
// bucket returns the largest finite bound, as Prometheus does, so a
// high quantile is only ever as good as the top finite bucket.
//
// One difference from Prometheus: for q = 0 with empty leading buckets
// Prometheus returns NaN; here empty buckets are skipped and the lower
// bound of the first non-empty bucket is returned. An empty histogram
// returns ErrNoData (Prometheus: NaN).
func HistogramQuantile(q float64, upperBounds []float64, counts []uint64) (float64, error) {
	if !(q >= 0 && q <= 1) {
		return 0, fmt.Errorf("statistics: quantile must be in [0, 1], got %v", q)
	}
	if len(upperBounds) != len(counts) || len(counts) == 0 {
		return 0, fmt.Errorf("statistics: %d bounds and %d counts, want the same number > 0", len(upperBounds), len(counts))
	}
	var total float64
	for i, b := range upperBounds {
		if math.IsNaN(b) || (i > 0 && !(b > upperBounds[i-1])) {
			return 0, fmt.Errorf("statistics: upper bounds must increase strictly (bound %d is %v)", i, b)
		}
		total += float64(counts[i])
	}
	if total == 0 {
		return 0, ErrNoData
	}
	rank := q * total
	var cum float64
	for i, c := range counts {
		prev := cum
		cum += float64(c)
		if c == 0 || cum < rank {
			continue
		}
		end := upperBounds[i]
		if math.IsInf(end, 1) {
			if i == 0 {
				return 0, fmt.Errorf("statistics: every observation is in the +Inf bucket")
			}
			return upperBounds[i-1], nil
		}
		start := 0.0
		if i > 0 {
			start = upperBounds[i-1]
		} else if end <= 0 {
			return end, nil
		}
		return start + (end-start)*((rank-prev)/float64(c)), nil
	}
	// Unreachable: cum reaches total >= rank at the last non-empty bucket.
	return 0, fmt.Errorf("statistics: rank %v beyond total %v", rank, total)
}
