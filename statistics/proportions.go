package statistics

import "math"

// ZTest is the result of TwoProportionZTest.
type ZTest struct {
	// P1, P2 are the observed proportions x1/n1 and x2/n2; Diff is P1-P2.
	P1, P2, Diff float64
	// Z is (P1-P2)/SE with the pooled standard error.
	Z float64
	P PValues
}

// TwoProportionZTest tests H0: p1 = p2 with the pooled-variance z
// statistic, the same statistic and p-values as statsmodels'
// proportions_ztest([x1, x2], [n1, n2]) (value 0, prop_var False).
// P.Greater is the p-value for p1 > p2.
//
// When neither or both samples are all events, the pooled variance is 0
// and statsmodels returns nan; here Z is 0 and every p-value is 1: the
// two samples are identical and give no evidence of a difference.
func TwoProportionZTest(x1, n1, x2, n2 uint64) (ZTest, error) {
	if err := checkCount("sample 1", x1, n1); err != nil {
		return ZTest{}, err
	}
	if err := checkCount("sample 2", x2, n2); err != nil {
		return ZTest{}, err
	}
	f1, f2 := float64(n1), float64(n2)
	r := ZTest{P1: float64(x1) / f1, P2: float64(x2) / f2}
	r.Diff = r.P1 - r.P2
	pooled := (float64(x1) + float64(x2)) / (f1 + f2)
	se := math.Sqrt(pooled * (1 - pooled) * (1/f1 + 1/f2))
	if se == 0 {
		r.P = noEvidence
		return r, nil
	}
	r.Z = r.Diff / se
	r.P = normalPValues(r.Z)
	return r, nil
}

// WilsonInterval is the Wilson score interval for a proportion x/n at
// level 1-alpha, as statsmodels' proportion_confint(method="wilson").
// Unlike the Wald interval it stays inside [0, 1] and has width > 0 at
// x = 0 and x = n, where gates start.
func WilsonInterval(x, n uint64, alpha float64) (lo, hi float64, err error) {
	if err := checkCount("sample", x, n); err != nil {
		return 0, 0, err
	}
	if err := checkAlpha(alpha); err != nil {
		return 0, 0, err
	}
	lo, hi = wilson(float64(x)/float64(n), float64(n), zCrit(alpha))
	return lo, hi, nil
}

func wilson(q, n, crit float64) (lo, hi float64) {
	crit2 := crit * crit
	denom := 1 + crit2/n
	center := (q + crit2/(2*n)) / denom
	dist := crit * math.Sqrt(q*(1-q)/n+crit2/(4*n*n)) / denom
	return center - dist, center + dist
}

// NewcombeInterval is Newcombe's hybrid score interval (his method 10)
// for p1-p2 at level 1-alpha, built from the two Wilson intervals, as
// statsmodels' confint_proportions_2indep(method="newcomb",
// compare="diff"). It is chosen over the Wald interval because it keeps
// sensible coverage with few events and does not collapse to a point
// when one arm has none, which is the usual state of an error ratio at
// the start of a rollout.
func NewcombeInterval(x1, n1, x2, n2 uint64, alpha float64) (lo, hi float64, err error) {
	if err := checkCount("sample 1", x1, n1); err != nil {
		return 0, 0, err
	}
	if err := checkCount("sample 2", x2, n2); err != nil {
		return 0, 0, err
	}
	if err := checkAlpha(alpha); err != nil {
		return 0, 0, err
	}
	crit := zCrit(alpha)
	p1, p2 := float64(x1)/float64(n1), float64(x2)/float64(n2)
	l1, u1 := wilson(p1, float64(n1), crit)
	l2, u2 := wilson(p2, float64(n2), crit)
	diff := p1 - p2
	dLow := math.Sqrt((p1-l1)*(p1-l1) + (u2-p2)*(u2-p2))
	dUpp := math.Sqrt((p2-l2)*(p2-l2) + (u1-p1)*(u1-p1))
	return diff - dLow, diff + dUpp, nil
}
