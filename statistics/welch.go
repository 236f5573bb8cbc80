package statistics

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// Summary describes one sample by its size, mean and unbiased sample
// variance (divisor n-1), which is what a metrics pipeline can keep
// incrementally (count, sum, sum of squares).
type Summary struct {
	N        uint64
	Mean     float64
	Variance float64
}

// TTest is the result of WelchTTest.
type TTest struct {
	T  float64
	DF float64 // Welch–Satterthwaite degrees of freedom
	P  PValues
}

// WelchTTest tests H0: mean1 = mean2 without assuming equal variances,
// from summary statistics: the same t, df and p-values as
// scipy.stats.ttest_ind_from_stats(m1, sqrt(v1), n1, m2, sqrt(v2), n2,
// equal_var=False, alternative=...). P.Greater is for mean1 > mean2.
//
// Each sample needs n >= 2 (the variance is undefined for n = 1). When
// both variances are 0, df is undefined; as SciPy, df is then 1 and
// different means give t = ±Inf with p = 0 in their direction; equal
// means (SciPy: nan) give t = 0 and every p-value 1.
func WelchTTest(a, b Summary) (TTest, error) {
	for i, s := range []Summary{a, b} {
		if s.N < 2 {
			return TTest{}, fmt.Errorf("statistics: sample %d: n must be >= 2, got %d", i+1, s.N)
		}
		if math.IsNaN(s.Mean) || math.IsInf(s.Mean, 0) {
			return TTest{}, fmt.Errorf("statistics: sample %d: mean must be finite, got %v", i+1, s.Mean)
		}
		if !(s.Variance >= 0) || math.IsInf(s.Variance, 0) {
			return TTest{}, fmt.Errorf("statistics: sample %d: variance must be finite and >= 0, got %v", i+1, s.Variance)
		}
	}
	n1, n2 := float64(a.N), float64(b.N)
	vn1, vn2 := a.Variance/n1, b.Variance/n2
	diff := a.Mean - b.Mean
	if vn1+vn2 == 0 {
		switch {
		case diff > 0:
			return TTest{T: math.Inf(1), DF: 1, P: PValues{TwoSided: 0, Greater: 0, Less: 1}}, nil
		case diff < 0:
			return TTest{T: math.Inf(-1), DF: 1, P: PValues{TwoSided: 0, Greater: 1, Less: 0}}, nil
		}
		return TTest{DF: 1, P: noEvidence}, nil
	}
	df := (vn1 + vn2) * (vn1 + vn2) / (vn1*vn1/(n1-1) + vn2*vn2/(n2-1))
	t := diff / math.Sqrt(vn1+vn2)
	r := TTest{T: t, DF: df}
	r.P = PValues{
		TwoSided: math.Min(1, 2*studentSF(math.Abs(t), df)),
		Greater:  studentSF(t, df),
		Less:     studentSF(-t, df),
	}
	return r, nil
}

// studentSF is the upper tail of Student's t with df degrees of freedom.
// gonum's StudentsT.Survival evaluates the regularized incomplete beta
// at df/(df+t²), which keeps relative precision in the tail for any df
// that a test sees; the t < 0 side is 1 - tail and needs only absolute
// precision.
func studentSF(t, df float64) float64 {
	return distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}.Survival(t)
}
