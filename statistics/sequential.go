package statistics

import (
	"fmt"
	"math"
)

// DefaultTau is the standard deviation of the normal mixing
// distribution that NewSequentialTest and NewSequentialProportion use:
// one percentage point. The mSPRT stays valid for any Tau; Tau only
// decides which effects it detects fastest (those near Tau beyond the
// null). Error-ratio regressions worth a rollback, and drops in shadow
// agreement worth a look, are of that order. Set Tau to the excess over
// the null you most want to catch quickly if yours differ.
const DefaultTau = 0.01

// Verdict is the state of a sequential test after a look.
type Verdict struct {
	// P is the always-valid p-value: the running minimum over all looks
	// so far of 1/Λ (capped at 1). Rejecting when P <= Alpha at any look
	// keeps the false-rejection rate at most Alpha however often one looks.
	P float64
	// Estimate is the current point estimate (p_canary - p_baseline for
	// SequentialTest, the proportion for SequentialProportion).
	Estimate float64
	// Lower and Upper are an always-valid (1-Alpha) confidence interval
	// for the same quantity, one-sided: only the side the test looks at
	// is informative, the other is the trivial bound (-1 or 1 for a
	// difference, 0 or 1 for a proportion). It is the running
	// intersection of each look's confidence set, and it excludes the
	// null exactly when Reject is true.
	Lower, Upper float64
	// Reject is P <= Alpha: the null hypothesis is rejected (for
	// SequentialTest: the canary is worse by more than the margin).
	Reject bool
	// Looks counts the updates that had data in both arms.
	Looks int
}

// SequentialTest is a one-sided mixture sequential probability ratio
// test (mSPRT; Johari, Pekelis and Walsh, "Always valid inference",
// 2017/2022) of
//
//	H0: p_canary - p_baseline <= Margin  against  H1: ... > Margin
//
// for two error ratios, fed cumulative counts at each check interval.
// It may be checked after every interval without inflating the
// false-rejection rate beyond Alpha, and stopped as soon as it rejects.
//
// Construct it with NewSequentialTest; the zero value has Alpha and Tau
// 0 and Update refuses it. All fields are exported so a controller can
// persist the test (e.g. encoding/json) and resume it after a restart:
// the state is the running minimum p-value, the running confidence
// bound and the last counts, which must only grow.
type SequentialTest struct {
	Margin float64 `json:"margin"`
	Alpha  float64 `json:"alpha"`
	Tau    float64 `json:"tau"`

	State SequentialState `json:"state"`
}

// SequentialState is the part of a sequential test that changes with
// each look.
type SequentialState struct {
	Looks int     `json:"looks"`
	MinP  float64 `json:"min_p"`
	// Bound is the running confidence bound (a maximum for a lower bound,
	// a minimum for an upper bound); meaningful once Looks > 0.
	Bound float64 `json:"bound"`
	// Last counts seen, to refuse counts that go backwards (a reset
	// counter must start a new test, not silently restart this one).
	Fail1 uint64 `json:"fail1"`
	N1    uint64 `json:"n1"`
	Fail2 uint64 `json:"fail2"`
	N2    uint64 `json:"n2"`
}

// NewSequentialTest returns a test of "the canary's error ratio exceeds
// the baseline's by more than margin" at level alpha, with DefaultTau.
func NewSequentialTest(margin, alpha float64) *SequentialTest {
	return &SequentialTest{Margin: margin, Alpha: alpha, Tau: DefaultTau}
}

// Update feeds the cumulative counts since the start of the test
// (failures and requests of the canary, then of the baseline) and
// returns the verdict so far. While an arm has no requests the look
// carries no information and the state is unchanged.
//
// Each look's likelihood ratio uses the normal approximation to the
// difference of proportions with a plug-in variance. The variance is
// estimated from (failures+1)/(requests+2) in each arm (Agresti–Caffo),
// so that an arm with no failures yet does not get variance 0, which
// would make a handful of early failures look like certainty; it
// converges to the ordinary estimate as counts grow. The normal
// approximation is what makes the guarantee approximate with very few
// failures; the A/A simulation in the tests measures it at 1% errors.
func (s *SequentialTest) Update(fail1, n1, fail2, n2 uint64) (Verdict, error) {
	if err := checkSequential(s.Alpha, s.Tau); err != nil {
		return Verdict{}, err
	}
	if !(s.Margin > -1 && s.Margin < 1) {
		return Verdict{}, fmt.Errorf("statistics: margin must be in (-1, 1), got %v", s.Margin)
	}
	if fail1 > n1 || fail2 > n2 {
		return Verdict{}, fmt.Errorf("statistics: failures exceed requests (canary %d/%d, baseline %d/%d)", fail1, n1, fail2, n2)
	}
	st := &s.State
	if n1 < st.N1 || n2 < st.N2 || fail1 < st.Fail1 || fail2 < st.Fail2 {
		return Verdict{}, fmt.Errorf("statistics: counts went backwards (canary %d/%d after %d/%d, baseline %d/%d after %d/%d); counts must be cumulative since the start",
			fail1, n1, st.Fail1, st.N1, fail2, n2, st.Fail2, st.N2)
	}
	st.Fail1, st.N1, st.Fail2, st.N2 = fail1, n1, fail2, n2
	v := Verdict{P: 1, Lower: -1, Upper: 1}
	if st.Looks > 0 {
		v.P, v.Lower = st.MinP, st.Bound
	}
	if n1 == 0 || n2 == 0 {
		v.Looks = st.Looks
		v.Reject = v.P <= s.Alpha
		return v, nil
	}
	f1, f2 := float64(n1), float64(n2)
	p1, p2 := float64(fail1)/f1, float64(fail2)/f2
	v.Estimate = p1 - p2
	variance := smoothedVariance(fail1, n1) + smoothedVariance(fail2, n2)
	logL := mixtureLogLR(v.Estimate-s.Margin, variance, s.Tau)
	v.P = math.Min(v.P, math.Exp(-math.Max(logL, 0)))
	v.Lower = math.Max(v.Lower, v.Estimate-mixtureThreshold(variance, s.Tau, s.Alpha))
	st.Looks++
	st.MinP, st.Bound = v.P, v.Lower
	v.Looks = st.Looks
	v.Reject = v.P <= s.Alpha
	return v, nil
}

// SequentialProportion is the one-sample version of SequentialTest: a
// one-sided mSPRT of a single proportion against a fixed value, for
// gates such as "shadow agreement stays at least 0.95":
//
//	Alternative Less:    H0: p >= Null  against  H1: p < Null
//	Alternative Greater: H0: p <= Null  against  H1: p > Null
//
// Less rejects when agreement has fallen below the floor (act on it);
// Greater rejects once the proportion is shown to exceed Null (e.g. to
// promote only when agreement is demonstrably above the floor). Same
// normal mixture and persistence as SequentialTest, but the variance is
// the one the null implies, Null(1-Null)/n, not a plug-in estimate;
// construct it with NewSequentialProportion. The confidence bound uses
// that variance too: it excludes Null exactly when Reject is true, and
// is an approximation of the confidence set away from Null.
type SequentialProportion struct {
	Null        float64     `json:"null"`
	Alternative Alternative `json:"alternative"`
	Alpha       float64     `json:"alpha"`
	Tau         float64     `json:"tau"`

	State SequentialState `json:"state"`
}

// Alternative picks the direction of a one-sided sequential test.
type Alternative int

const (
	// Less: the alternative is that the proportion is below the null.
	Less Alternative = iota + 1
	// Greater: the alternative is that the proportion is above the null.
	Greater
)

// NewSequentialProportion returns a one-sided test of a proportion
// against null at level alpha, with DefaultTau.
func NewSequentialProportion(null float64, alt Alternative, alpha float64) *SequentialProportion {
	return &SequentialProportion{Null: null, Alternative: alt, Alpha: alpha, Tau: DefaultTau}
}

// Update feeds the cumulative number of successes (e.g. agreements) and
// trials since the start and returns the verdict so far. With no trials
// yet the state is unchanged.
func (s *SequentialProportion) Update(successes, n uint64) (Verdict, error) {
	if err := checkSequential(s.Alpha, s.Tau); err != nil {
		return Verdict{}, err
	}
	if !(s.Null > 0 && s.Null < 1) {
		return Verdict{}, fmt.Errorf("statistics: null proportion must be in (0, 1), got %v", s.Null)
	}
	if s.Alternative != Less && s.Alternative != Greater {
		return Verdict{}, fmt.Errorf("statistics: alternative must be Less or Greater, got %d", s.Alternative)
	}
	if successes > n {
		return Verdict{}, fmt.Errorf("statistics: successes %d exceed trials %d", successes, n)
	}
	st := &s.State
	if n < st.N1 || successes < st.Fail1 {
		return Verdict{}, fmt.Errorf("statistics: counts went backwards (%d/%d after %d/%d); counts must be cumulative since the start", successes, n, st.Fail1, st.N1)
	}
	st.Fail1, st.N1 = successes, n
	v := Verdict{P: 1, Lower: 0, Upper: 1}
	if st.Looks > 0 {
		v.P = st.MinP
		if s.Alternative == Less {
			v.Upper = st.Bound
		} else {
			v.Lower = st.Bound
		}
	}
	if n == 0 {
		v.Looks = st.Looks
		v.Reject = v.P <= s.Alpha
		return v, nil
	}
	v.Estimate = float64(successes) / float64(n)
	// The null fixes the variance: p0(1-p0)/n is the exact variance of
	// the estimate at the boundary of H0, the least favourable point. A
	// plug-in estimate would be far too small near 0 or 1 (100 of 100
	// agreements against a 0.95 floor gave p = 0.001, when even the exact
	// binomial chance of that under p = 0.95 is 0.006).
	variance := s.Null * (1 - s.Null) / float64(n)
	delta := v.Estimate - s.Null
	if s.Alternative == Less {
		delta = -delta
	}
	logL := mixtureLogLR(delta, variance, s.Tau)
	v.P = math.Min(v.P, math.Exp(-math.Max(logL, 0)))
	w := mixtureThreshold(variance, s.Tau, s.Alpha)
	if s.Alternative == Less {
		v.Upper = math.Min(v.Upper, v.Estimate+w)
		st.Bound = v.Upper
	} else {
		v.Lower = math.Max(v.Lower, v.Estimate-w)
		st.Bound = v.Lower
	}
	st.Looks++
	st.MinP = v.P
	v.Looks = st.Looks
	v.Reject = v.P <= s.Alpha
	return v, nil
}

// AlphaSpending returns the level at which the k-th look (k >= 1) of a
// fixed-sample test (z-test, Welch, Mann–Whitney, SRM) must be judged so
// that looking at it again and again keeps the overall false-rejection
// rate at most alpha: alpha·6/(π²k²). The levels sum to alpha over all
// k = 1, 2, ... (Σ 1/k² = π²/6), so by the union bound a rejection at
// any look is an error with probability at most alpha. It is
// conservative (it ignores that successive looks are correlated) but
// needs no state besides k and works with any test. It returns 0 for k
// < 1 (no look, no alpha).
func AlphaSpending(alpha float64, k int) float64 {
	if k < 1 {
		return 0
	}
	kk := float64(k)
	return alpha * 6 / (math.Pi * math.Pi * kk * kk)
}

func checkSequential(alpha, tau float64) error {
	if err := checkAlpha(alpha); err != nil {
		return fmt.Errorf("%w (use the constructor: the zero value is not a usable test)", err)
	}
	if !(tau > 0) || math.IsInf(tau, 1) {
		return fmt.Errorf("statistics: tau must be > 0 and finite, got %v (use the constructor: the zero value is not a usable test)", tau)
	}
	return nil
}

// smoothedVariance is p̃(1-p̃)/n with p̃ = (x+1)/(n+2).
func smoothedVariance(x, n uint64) float64 {
	p := (float64(x) + 1) / (float64(n) + 2)
	return p * (1 - p) / float64(n)
}

// mixtureLogLR is log Λ for an estimate that exceeds the null by delta,
// with sampling variance v, under a normal mixing distribution of
// standard deviation tau over the alternative side only (a half-normal
// on effects beyond the null).
//
// With the full normal mixture N(null, τ²), the mSPRT statistic of
// Johari et al. is Λ = sqrt(v/(v+τ²))·exp(τ²δ²/(2v(v+τ²))). Keeping
// only the half on the alternative side (density doubled) multiplies it
// by 2·Φ(u), u = δτ/sqrt(v(v+τ²)), the posterior probability of that
// side. Λ is then a test martingale at the null and a supermartingale
// inside the one-sided null, so P(sup Λ >= 1/α) <= α (Ville).
// Since τ²δ²/(2v(v+τ²)) = u²/2, log Λ = ½log(v/(v+τ²)) + log 2 + u²/2 +
// log Φ(u).
func mixtureLogLR(delta, v, tau float64) float64 {
	t2 := tau * tau
	u := delta * tau / math.Sqrt(v*(v+t2))
	base := 0.5*math.Log(v/(v+t2)) + math.Ln2
	if u < -30 {
		// Φ(u) underflows near u = -38; exp(u²/2)Φ(u) tends to
		// 1/(|u|√(2π)) (relative error below 1/u² = 0.1%), and Λ is far
		// below 1 here, where p = 1 anyway.
		return base - math.Log(-u) - 0.5*math.Log(2*math.Pi)
	}
	return base + u*u/2 + math.Log(normalSF(-u))
}

// mixtureThreshold is the δ > 0 at which mixtureLogLR reaches
// log(1/alpha): every null value more than δ below the estimate is
// rejected at this look, so estimate-δ is this look's confidence bound.
// log Λ increases with δ (its derivative in u is u + φ(u)/Φ(u) > 0), so
// bisection on u converges; at u = 0 log Λ = ½log(v/(v+τ²)) < 0, and at
// u = sqrt(2(log(1/α) - ½log(v/(v+τ²)))) it is already above the target
// because 2Φ(u) >= 1 for u >= 0.
func mixtureThreshold(v, tau, alpha float64) float64 {
	t2 := tau * tau
	target := -math.Log(alpha)
	scale := math.Sqrt(v*(v+t2)) / tau // δ = u·scale
	lo, hi := 0.0, math.Sqrt(2*(target-0.5*math.Log(v/(v+t2))))
	for i := 0; i < 200 && hi-lo > 1e-15*hi; i++ {
		mid := 0.5 * (lo + hi)
		if mixtureLogLR(mid*scale, v, tau) < target {
			lo = mid
		} else {
			hi = mid
		}
	}
	return 0.5 * (lo + hi) * scale
}
