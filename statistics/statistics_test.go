package statistics

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

// Bad input is an error naming the problem, never a panic or a NaN.
func TestBadInput(t *testing.T) {
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"z n1 zero", func() error { _, err := TwoProportionZTest(0, 0, 1, 2); return err }, "n must be > 0"},
		{"z x > n", func() error { _, err := TwoProportionZTest(3, 2, 1, 2); return err }, "exceed n"},
		{"wilson alpha", func() error { _, _, err := WilsonInterval(1, 2, 0); return err }, "alpha must be in (0, 1)"},
		{"newcombe x > n", func() error { _, _, err := NewcombeInterval(1, 2, 5, 4, 0.05); return err }, "sample 2: events 5 exceed n 4"},
		{"welch n 1", func() error { _, err := WelchTTest(Summary{1, 0, 0}, Summary{5, 0, 1}); return err }, "n must be >= 2"},
		{"welch negative variance", func() error { _, err := WelchTTest(Summary{3, 0, -1}, Summary{5, 0, 1}); return err }, "variance must be finite and >= 0"},
		{"welch nan mean", func() error { _, err := WelchTTest(Summary{3, math.NaN(), 1}, Summary{5, 0, 1}); return err }, "mean must be finite"},
		{"srm no windows", func() error { _, err := SampleRatioMismatch(nil); return err }, "no windows"},
		{"srm lengths", func() error {
			_, err := SampleRatioMismatch([]Window{{Counts: []uint64{1, 2}, Weights: []float64{1}}})
			return err
		}, "want 2 of each"},
		{"srm negative weight", func() error {
			_, err := SampleRatioMismatch([]Window{{Counts: []uint64{1, 2}, Weights: []float64{1, -1}}})
			return err
		}, "must be finite and >= 0"},
		{"srm traffic without weights", func() error {
			_, err := SampleRatioMismatch([]Window{{Counts: []uint64{1, 2}, Weights: []float64{0, 0}}})
			return err
		}, "all weights are 0"},
		{"mwu buckets differ", func() error { _, err := MannWhitneyHistogram([]uint64{1, 2}, []uint64{1}); return err }, "same buckets"},
		{"mwu empty sample", func() error { _, err := MannWhitneyHistogram([]uint64{0, 0}, []uint64{1, 1}); return err }, "need observations"},
		{"quantile q", func() error { _, err := HistogramQuantile(1.5, []float64{1}, []uint64{1}); return err }, "quantile must be in [0, 1]"},
		{"quantile bounds", func() error { _, err := HistogramQuantile(0.5, []float64{2, 1}, []uint64{1, 1}); return err }, "increase strictly"},
		{"quantile all in +Inf", func() error {
			_, err := HistogramQuantile(0.5, []float64{math.Inf(1)}, []uint64{3})
			return err
		}, "+Inf bucket"},
		{"sequential zero value", func() error { _, err := new(SequentialTest).Update(0, 1, 0, 1); return err }, "zero value"},
		{"sequential failures > n", func() error { _, err := NewSequentialTest(0, 0.05).Update(2, 1, 0, 1); return err }, "failures exceed requests"},
		{"sequential margin", func() error { _, err := NewSequentialTest(1, 0.05).Update(0, 1, 0, 1); return err }, "margin must be in (-1, 1)"},
		{"proportion zero value", func() error { _, err := new(SequentialProportion).Update(0, 1); return err }, "zero value"},
		{"proportion null", func() error { _, err := NewSequentialProportion(1, Less, 0.05).Update(0, 1); return err }, "null proportion"},
		{"proportion alternative", func() error { _, err := NewSequentialProportion(0.9, 0, 0.05).Update(0, 1); return err }, "Less or Greater"},
	}
	for _, c := range cases {
		err := c.call()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	if _, err := HistogramQuantile(0.5, []float64{1, 2}, []uint64{0, 0}); !errors.Is(err, ErrNoData) {
		t.Errorf("empty histogram: %v, want ErrNoData", err)
	}
}

func TestSequentialCountsMustGrow(t *testing.T) {
	s := NewSequentialTest(0, 0.05)
	if _, err := s.Update(5, 100, 3, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(4, 200, 3, 200); err == nil || !strings.Contains(err.Error(), "went backwards") {
		t.Errorf("fewer failures than before: %v, want counts went backwards", err)
	}
	p := NewSequentialProportion(0.95, Less, 0.05)
	if _, err := p.Update(90, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Update(90, 99); err == nil || !strings.Contains(err.Error(), "went backwards") {
		t.Errorf("fewer trials than before: %v, want counts went backwards", err)
	}
}

// A test persisted mid-way (JSON) and resumed gives the same verdicts as
// one that ran without interruption, and the running minimum p and
// bound survive the trip.
func TestSequentialResume(t *testing.T) {
	looks := [][4]uint64{{0, 500, 0, 500}, {3, 1000, 2, 1000}, {12, 1500, 4, 1500}, {25, 2000, 8, 2000}, {26, 2500, 14, 2500}, {28, 3000, 20, 3000}}
	straight := NewSequentialTest(0, 0.05)
	var want []Verdict
	for _, l := range looks {
		v, err := straight.Update(l[0], l[1], l[2], l[3])
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, v)
	}
	s := NewSequentialTest(0, 0.05)
	for i, l := range looks {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var r SequentialTest
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		s = &r
		v, err := s.Update(l[0], l[1], l[2], l[3])
		if err != nil {
			t.Fatal(err)
		}
		if v != want[i] {
			t.Errorf("look %d resumed %+v, straight %+v", i, v, want[i])
		}
	}
	// The later looks have weaker evidence; the always-valid p and bound
	// keep the earlier, stronger values.
	last := want[len(want)-1]
	if !last.Reject || last.P != want[3].P || last.Lower != want[3].Lower {
		t.Errorf("running minimum lost: %+v after %+v", last, want[3])
	}
}

// An arm without requests carries no information: the state does not
// move, and a first look without data leaves p at 1.
func TestSequentialNoData(t *testing.T) {
	s := NewSequentialTest(0, 0.05)
	v, err := s.Update(0, 0, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if v.P != 1 || v.Reject || v.Looks != 0 || v.Lower != -1 || v.Upper != 1 {
		t.Errorf("no canary data: %+v", v)
	}
	p := NewSequentialProportion(0.95, Greater, 0.05)
	v, err = p.Update(0, 0)
	if err != nil || v.P != 1 || v.Lower != 0 || v.Upper != 1 {
		t.Errorf("no trials: %+v %v", v, err)
	}
}

func TestAlphaSpending(t *testing.T) {
	var sum float64
	for k := 1; k <= 1_000_000; k++ {
		sum += AlphaSpending(0.05, k)
	}
	// Σ_{k>N} 1/k² < 1/N, so the partial sum is within 0.05·6/π²/N of 0.05.
	if sum > 0.05 || sum < 0.05-0.05*6/(math.Pi*math.Pi)/1e6 {
		t.Errorf("levels sum to %v, want 0.05 in the limit", sum)
	}
	if got, want := AlphaSpending(0.05, 1), 0.05*6/(math.Pi*math.Pi); math.Abs(got-want) > 1e-15*want {
		t.Errorf("first look %v, want %v", got, want)
	}
	if AlphaSpending(0.05, 0) != 0 {
		t.Error("k = 0 must spend nothing")
	}
}

func TestHistogramQuantileEdges(t *testing.T) {
	inf := math.Inf(1)
	cases := []struct {
		q      float64
		bounds []float64
		counts []uint64
		want   float64
	}{
		{0, []float64{1, 2, 3}, []uint64{0, 4, 4}, 1},        // q 0: lower edge of first non-empty bucket
		{1, []float64{1, 2, inf}, []uint64{1, 1, 1}, 2},      // top lands in +Inf: largest finite bound
		{0.5, []float64{1, 2, inf}, []uint64{0, 10, 0}, 1.5}, // middle of the only bucket
		{0.5, []float64{10}, []uint64{4}, 5},                 // single bucket from 0
	}
	for _, c := range cases {
		got, err := HistogramQuantile(c.q, c.bounds, c.counts)
		if err != nil || got != c.want {
			t.Errorf("q %v of %v/%v = %v, %v; want %v", c.q, c.bounds, c.counts, got, err, c.want)
		}
	}
}

// The edges of the input checks: alpha 1, bounds that repeat, bounds and
// counts of different lengths, no buckets at all. Each is refused.
func TestInputEdges(t *testing.T) {
	if _, _, err := WilsonInterval(1, 2, 1); err == nil || !strings.Contains(err.Error(), "alpha must be in (0, 1)") {
		t.Errorf("alpha 1: %v, want refused", err)
	}
	if _, _, err := NewcombeInterval(1, 2, 1, 2, 1); err == nil {
		t.Error("Newcombe with alpha 1: no error")
	}
	if _, err := HistogramQuantile(0.5, []float64{1, 1}, []uint64{1, 1}); err == nil || !strings.Contains(err.Error(), "increase strictly") {
		t.Errorf("repeated bound: %v, want refused", err)
	}
	if _, err := HistogramQuantile(0.5, []float64{1, 2}, []uint64{1}); err == nil || !strings.Contains(err.Error(), "want the same number") {
		t.Errorf("2 bounds, 1 count: %v, want refused", err)
	}
	if _, err := HistogramQuantile(0.5, nil, nil); err == nil || !strings.Contains(err.Error(), "want the same number") {
		t.Errorf("no buckets: %v, want refused", err)
	}
}

// The sequential tests' checks at their boundaries: a margin of -1 and a
// null of 0 are refused; every request failing, or one count standing
// still while the others grow, is accepted; one count going backwards
// alone is refused.
func TestSequentialBoundaries(t *testing.T) {
	if _, err := NewSequentialTest(-1, 0.05).Update(0, 1, 0, 1); err == nil || !strings.Contains(err.Error(), "margin must be in (-1, 1)") {
		t.Errorf("margin -1: %v, want refused", err)
	}
	if _, err := NewSequentialProportion(0, Greater, 0.05).Update(0, 1); err == nil || !strings.Contains(err.Error(), "null proportion") {
		t.Errorf("null 0: %v, want refused", err)
	}
	s := NewSequentialTest(0, 0.05)
	if _, err := s.Update(10, 10, 0, 10); err != nil {
		t.Errorf("every canary request failed: %v, want accepted", err)
	}
	if _, err := NewSequentialTest(0, 0.05).Update(0, 10, 10, 10); err != nil {
		t.Errorf("every baseline request failed: %v, want accepted", err)
	}
	if _, err := s.Update(10, 30, 0, 10); err != nil {
		t.Errorf("failures and baseline unchanged: %v, want accepted", err)
	}
	for _, c := range [][4]uint64{{10, 29, 0, 10}, {10, 30, 0, 9}} {
		s := *s
		if _, err := s.Update(c[0], c[1], c[2], c[3]); err == nil || !strings.Contains(err.Error(), "went backwards") {
			t.Errorf("after 10/30 and 0/10, %v: %v, want counts went backwards", c, err)
		}
	}
}

// Reject is P <= Alpha: a resumed test whose running p-value is exactly
// alpha rejects, with or without new data.
func TestSequentialRejectsAtAlpha(t *testing.T) {
	st := SequentialState{Looks: 1, MinP: 0.05, Bound: 0.001, Fail1: 1, N1: 100, Fail2: 1, N2: 100}
	s := &SequentialTest{Margin: 0, Alpha: 0.05, Tau: DefaultTau, State: st}
	v, err := s.Update(1, 100, 1, 100)
	if err != nil || v.P != 0.05 || !v.Reject {
		t.Errorf("running p = alpha, no new evidence: %+v %v, want P 0.05 and Reject", v, err)
	}
	st.N1, st.Fail1 = 0, 0
	s = &SequentialTest{Margin: 0, Alpha: 0.05, Tau: DefaultTau, State: st}
	v, err = s.Update(0, 0, 1, 100)
	if err != nil || v.P != 0.05 || !v.Reject || v.Looks != 1 {
		t.Errorf("running p = alpha, no canary data: %+v %v, want P 0.05, Reject, 1 look", v, err)
	}
}

// The zero tau and an infinite one are refused like the zero value.
func TestSequentialTau(t *testing.T) {
	for _, tau := range []float64{0, math.Inf(1)} {
		s := &SequentialTest{Alpha: 0.05, Tau: tau}
		if _, err := s.Update(0, 1, 0, 1); err == nil || !strings.Contains(err.Error(), "tau must be > 0 and finite") {
			t.Errorf("tau %v: %v, want refused", tau, err)
		}
	}
}

// The confidence bound is the point where the look's likelihood ratio
// reaches 1/alpha: log Λ at the bound's distance from the estimate is
// log(1/alpha), over variances from a handful of requests to millions
// and mixing spreads from the default to one wider than any proportion.
func TestMixtureThresholdReachesTheTarget(t *testing.T) {
	for _, v := range []float64{1e-9, 1e-6, 1e-4, 0.01, 0.25} {
		for _, alpha := range []float64{0.001, 0.05, 0.2} {
			for _, tau := range []float64{DefaultTau, 0.1, 2} {
				d := mixtureThreshold(v, tau, alpha)
				if got, want := mixtureLogLR(d, v, tau), -math.Log(alpha); !(d > 0) || math.Abs(got-want) > 1e-9*want {
					t.Errorf("v %v alpha %v tau %v: threshold %v gives log Λ %v, want %v", v, alpha, tau, d, got, want)
				}
			}
		}
	}
}

// A canary far better than the baseline (estimate far below the null)
// is no evidence against the null: p stays 1, on the first look and
// later.
func TestSequentialFarOnTheNullSide(t *testing.T) {
	s := NewSequentialTest(0, 0.05)
	for _, l := range [][4]uint64{{0, 10_000, 5_000, 10_000}, {0, 20_000, 10_000, 20_000}} {
		v, err := s.Update(l[0], l[1], l[2], l[3])
		if err != nil || v.P != 1 || v.Reject {
			t.Errorf("canary 0%% against baseline 50%% (%v): %+v %v, want p 1", l, v, err)
		}
	}
	p := NewSequentialProportion(0.5, Less, 0.05)
	if v, err := p.Update(10_000, 10_000); err != nil || v.P != 1 || v.Reject {
		t.Errorf("every trial a success against Less than 0.5: %+v %v, want p 1", v, err)
	}
}

// A proportion test counts its looks, keeps its running p-value and
// bound across them, and rejects exactly when its bound excludes the
// null; a running p of exactly alpha rejects.
func TestSequentialProportionLooks(t *testing.T) {
	for _, alt := range []Alternative{Less, Greater} {
		p := NewSequentialProportion(0.9, alt, 0.05)
		succ := func(n uint64) uint64 { // 80% or 100%: far on the alternative side
			if alt == Less {
				return n * 8 / 10
			}
			return n
		}
		var first Verdict
		for i, n := range []uint64{500, 1000, 1500} {
			s := succ(n)
			if i == 2 {
				s = succ(1000) + n - 1000 // then weaker: all of the rest one way
				if alt == Greater {
					s = succ(1000) // all of the rest failures
				}
			}
			v, err := p.Update(s, n)
			if err != nil {
				t.Fatal(err)
			}
			if v.Looks != i+1 {
				t.Errorf("%v look %d: Looks %d", alt, i+1, v.Looks)
			}
			if i == 0 {
				first = v
			}
			excluded := (alt == Less && v.Upper < 0.9) || (alt == Greater && v.Lower > 0.9)
			if v.Reject != excluded || v.Reject != (v.P <= 0.05) {
				t.Errorf("%v look %d: %+v: Reject, P <= alpha and the bound excluding 0.9 disagree", alt, i+1, v)
			}
			if v.P > first.P {
				t.Errorf("%v look %d: p %v above the first look's %v", alt, i+1, v.P, first.P)
			}
		}
		if !first.Reject {
			t.Errorf("%v: first look %+v did not reject", alt, first)
		}
	}
	q := &SequentialProportion{Null: 0.9, Alternative: Less, Alpha: 0.05, Tau: DefaultTau,
		State: SequentialState{Looks: 1, MinP: 0.05, Bound: 0.85, Fail1: 90, N1: 100}}
	if v, err := q.Update(90, 100); err != nil || v.P != 0.05 || !v.Reject || v.Looks != 2 {
		t.Errorf("running p = alpha: %+v %v, want P 0.05, Reject, 2 looks", v, err)
	}
	q0 := &SequentialProportion{Null: 0.9, Alternative: Greater, Alpha: 0.05, Tau: DefaultTau,
		State: SequentialState{Looks: 1, MinP: 0.05, Bound: 0.91}}
	if v, err := q0.Update(0, 0); err != nil || v.P != 0.05 || !v.Reject || v.Looks != 1 || v.Lower != 0.91 {
		t.Errorf("running p = alpha, no trials: %+v %v, want P 0.05, Reject, 1 look, bound kept", v, err)
	}
}

// A window without traffic is skipped, not the end of the windows; a
// variant expecting nothing is left out, not the end of the variants.
func TestSRMSkipsEmptyParts(t *testing.T) {
	r, err := SampleRatioMismatch([]Window{
		{Counts: []uint64{0, 0}, Weights: []float64{1, 1}},
		{Counts: []uint64{90, 10}, Weights: []float64{1, 1}},
	})
	if err != nil || r.Observed[0] != 90 || r.Expected[0] != 50 || r.ChiSquare != 64 || r.DF != 1 || !(r.P < 1e-14) {
		t.Errorf("empty window then 90/10 at 50/50: %+v %v, want chi-square 64 on 1 df", r, err)
	}
	r, err = SampleRatioMismatch([]Window{{Counts: []uint64{0, 90, 10}, Weights: []float64{0, 1, 1}}})
	if err != nil || r.ChiSquare != 64 || r.DF != 1 || !(r.P < 1e-14) {
		t.Errorf("idle variant first, then 90/10 at 50/50: %+v %v, want chi-square 64 on 1 df", r, err)
	}
}

// Welch's errors name the sample at fault.
func TestWelchNamesTheSample(t *testing.T) {
	good := Summary{N: 5, Mean: 1, Variance: 1}
	for _, bad := range []Summary{{N: 1, Variance: 1}, {N: 5, Mean: math.Inf(1), Variance: 1}, {N: 5, Variance: math.NaN()}} {
		if _, err := WelchTTest(good, bad); err == nil || !strings.Contains(err.Error(), "sample 2:") {
			t.Errorf("second sample %+v: %v, want an error naming sample 2", bad, err)
		}
		if _, err := WelchTTest(bad, good); err == nil || !strings.Contains(err.Error(), "sample 1:") {
			t.Errorf("first sample %+v: %v, want an error naming sample 1", bad, err)
		}
	}
}
