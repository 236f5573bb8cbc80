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
