package statistics

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// PValues holds the p-values of one test statistic for the three
// alternatives, so a caller picks the one its gate needs without
// calling the test again. "Greater" always means the first sample (the
// canary, by convention) is larger than the second.
type PValues struct {
	TwoSided float64 `json:"two_sided"`
	Greater  float64 `json:"greater"`
	Less     float64 `json:"less"`
}

// noEvidence is what the tests return when the data cannot tell the
// samples apart at all (for example no events in either arm): every
// p-value is 1, so no gate acts on it.
var noEvidence = PValues{TwoSided: 1, Greater: 1, Less: 1}

// ErrNoData is returned where a quantity is undefined without
// observations (a quantile of an empty histogram).
var ErrNoData = errors.New("statistics: no observations")

// normalSF is the upper tail P(Z > z) of the standard normal.
//
// It is computed as CDF(-z) on purpose: gonum's Normal.Survival is
// 0.5*(1-Erf(x)), which cancels catastrophically in the far tail (it
// returns 0 for z above about 8.3, where the true tail is 1e-17 and
// below), while Normal.CDF uses math.Erfc and keeps full relative
// precision down to the smallest subnormal (z near 38.5).
func normalSF(z float64) float64 {
	return distuv.UnitNormal.CDF(-z)
}

// normalPValues turns a z statistic into the three p-values.
func normalPValues(z float64) PValues {
	return PValues{
		TwoSided: math.Min(1, 2*normalSF(math.Abs(z))),
		Greater:  normalSF(z),
		Less:     normalSF(-z),
	}
}

// zCrit is the two-sided critical value z_{1-alpha/2}, computed from the
// lower tail so alpha near 0 does not lose digits in 1-alpha/2.
func zCrit(alpha float64) float64 {
	return -distuv.UnitNormal.Quantile(alpha / 2)
}

func checkAlpha(alpha float64) error {
	if !(alpha > 0 && alpha < 1) {
		return fmt.Errorf("statistics: alpha must be in (0, 1), got %v", alpha)
	}
	return nil
}

func checkCount(name string, x, n uint64) error {
	if n == 0 {
		return fmt.Errorf("statistics: %s: n must be > 0", name)
	}
	if x > n {
		return fmt.Errorf("statistics: %s: events %d exceed n %d", name, x, n)
	}
	return nil
}
