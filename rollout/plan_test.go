package rollout

import (
	"context"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// endpointOf is an endpoint with the named variants and weights, in order.
func endpointOf(nameWeights ...any) *config.Endpoint {
	e := &config.Endpoint{Name: "chat"}
	for i := 0; i < len(nameWeights); i += 2 {
		e.Variants = append(e.Variants, config.Variant{Name: nameWeights[i].(string), Weight: nameWeights[i+1].(int)})
	}
	return e
}

func weights(s []step) []int {
	out := make([]int, len(s))
	for i, x := range s {
		out[i] = x.Weight
	}
	return out
}

func TestScheduleOfEachStrategy(t *testing.T) {
	for _, c := range []struct {
		p    config.Rollout
		want []int
	}{
		{config.Rollout{Strategy: "linear", Linear: &config.LinearRollout{Step: 25}}, []int{25, 50, 75, 100}},
		{config.Rollout{Strategy: "linear", Linear: &config.LinearRollout{Step: 30}}, []int{30, 60, 90, 100}},
		{config.Rollout{Strategy: "linear", Linear: &config.LinearRollout{Step: 100}}, []int{100}},
		{config.Rollout{Strategy: "blue_green", BlueGreen: &config.BlueGreenRollout{}}, []int{0, 100}},
		{config.Rollout{Strategy: "experiment", Experiment: &config.Experiment{Weight: 50}}, []int{50}},
		{config.Rollout{Steps: []config.RolloutStep{{Weight: 5}, {Weight: 50}}}, []int{5, 50}},
	} {
		if got := weights(schedule(&c.p)); !slices.Equal(got, c.want) {
			t.Errorf("%s %+v: steps %v, want %v", c.p.Strategy, c.p.Linear, got, c.want)
		}
	}
}

// The baseline is named, or the other variant with the most weight;
// a tie goes to the first in config order.
func TestBaselineOf(t *testing.T) {
	e := endpointOf("a", 30, "b", 30, "c", 40)
	for _, c := range []struct {
		p      config.Rollout
		before map[string]int
		want   string
	}{
		{config.Rollout{Canary: "c"}, map[string]int{"a": 30, "b": 30, "c": 40}, "a"},
		{config.Rollout{Canary: "a"}, map[string]int{"a": 30, "b": 30, "c": 40}, "c"},
		{config.Rollout{Canary: "a", Baseline: "b"}, map[string]int{"a": 30, "b": 30, "c": 40}, "b"},
		{config.Rollout{Canary: "a"}, map[string]int{"a": 100, "b": 0, "c": 0}, "b"},
	} {
		if got := baselineOf(&c.p, e, c.before); got != c.want {
			t.Errorf("canary %s baseline %q over %v: %s, want %s", c.p.Canary, c.p.Baseline, c.before, got, c.want)
		}
	}
}

// The rest of 100 is shared in proportion to the weights before the
// rollout, the remainder going to the largest fractions; a variant that
// had none gets none.
func TestStepWeights(t *testing.T) {
	e := endpointOf("a", 50, "b", 30, "c", 20, "d", 0)
	before := map[string]int{"a": 50, "b": 30, "c": 20, "d": 0}
	for _, c := range []struct {
		pct  int
		want map[string]int
	}{
		{10, map[string]int{"a": 56, "b": 34, "c": 10, "d": 0}}, // 56.25 and 33.75: b's .75 wins
		{0, map[string]int{"a": 63, "b": 37, "c": 0, "d": 0}},   // 62.5 and 37.5: a tie goes to a
		{100, map[string]int{"a": 0, "b": 0, "c": 100, "d": 0}},
		{99, map[string]int{"a": 1, "b": 0, "c": 99, "d": 0}}, // 0.625 and 0.375
	} {
		got, err := stepWeights(e, "c", c.pct, before)
		if err != nil || !maps.Equal(got, c.want) {
			t.Errorf("c at %d%%: %v %v, want %v", c.pct, got, err, c.want)
		}
	}
	// Two points left over after the floors: the first two in config order
	// (equal remainders) get one each.
	if got, err := stepWeights(endpointOf("a", 1, "b", 1, "c", 1, "d", 0), "d", 50, map[string]int{"a": 1, "b": 1, "c": 1, "d": 0}); err != nil ||
		!maps.Equal(got, map[string]int{"a": 17, "b": 17, "c": 16, "d": 50}) {
		t.Errorf("d at 50%% over three equal others: %v %v, want 17, 17, 16", got, err)
	}
	if _, err := stepWeights(endpointOf("a", 0, "c", 100), "c", 50, map[string]int{"a": 0, "c": 100}); err == nil ||
		!strings.Contains(err.Error(), "no variant other than the canary") {
		t.Errorf("no traffic to keep on the others: %v", err)
	}
	if got, err := stepWeights(endpointOf("a", 0, "c", 100), "c", 100, map[string]int{"a": 0, "c": 100}); err != nil || got["c"] != 100 || got["a"] != 0 {
		t.Errorf("canary at 100%% with nothing else: %v %v", got, err)
	}
	if got := promotedWeights(e, "b"); !maps.Equal(got, map[string]int{"a": 0, "b": 100, "c": 0, "d": 0}) {
		t.Errorf("promoted: %v", got)
	}
}

// A ramp only between 0% and 100%.
func TestRampOf(t *testing.T) {
	rec := &record{RolloutStatus: api.RolloutStatus{Canary: "c", Before: map[string]int{"a": 90, "c": 10}}}
	for pct, want := range map[int]bool{-1: false, 0: false, 1: true, 99: true, 100: false} {
		r := rampOf(rec, pct)
		if (r != nil) != want {
			t.Errorf("ramp at %d%%: %+v, want one: %v", pct, r, want)
		}
		if r != nil && (r.Canary != "c" || !maps.Equal(r.Base, rec.Before)) {
			t.Errorf("ramp at %d%%: %+v, want canary c over the weights before", pct, r)
		}
	}
}

func TestDefaults(t *testing.T) {
	// The default interval is the config's documented one (10s).
	if got := intervalOf(&config.Rollout{}); got != config.DefaultGateInterval.D() || got != DefaultInterval {
		t.Errorf("default interval %v, want the config's %v", got, config.DefaultGateInterval.D())
	}
	if got := intervalOf(&config.Rollout{Interval: config.Duration(time.Second)}); got != time.Second {
		t.Errorf("interval %v", got)
	}
	if got := minRequestsOf(&config.Rollout{}); got != DefaultMinRequests {
		t.Errorf("min requests %v", got)
	}
	if got := minRequestsOf(&config.Rollout{MinRequests: 1}); got != 1 {
		t.Errorf("min requests %v", got)
	}
	if got := confidenceOf(config.RolloutGate{}); got != DefaultConfidence {
		t.Errorf("confidence %v", got)
	}
	if got := confidenceOf(config.RolloutGate{Confidence: 0.5}); got != 0.5 {
		t.Errorf("confidence %v", got)
	}
	if ratio(3, 0) != 0 || ratio(1, 4) != 0.25 {
		t.Error("ratio")
	}
	if strategyOf(&config.Rollout{}) != "canary" || strategyOf(&config.Rollout{Strategy: "linear"}) != "linear" {
		t.Error("strategy")
	}
}

func TestSplitInStep(t *testing.T) {
	for _, c := range []struct {
		ws   []srmWindow
		want bool
	}{
		{nil, false},
		{[]srmWindow{{weights: map[string]int{"a": 100, "b": 0}}}, false},
		{[]srmWindow{{weights: map[string]int{"a": 100, "b": 0}}, {weights: map[string]int{"a": 99, "b": 1}}}, true},
		{[]srmWindow{{weights: map[string]int{"a": 1, "b": 1, "c": 0}}}, true},
	} {
		if got := splitInStep(c.ws); got != c.want {
			t.Errorf("%v: %v, want %v", c.ws, got, c.want)
		}
	}
}

// The SRM gate's expected canary share is the new users the weights in
// force should have sent it, over all the step's windows.
func TestSRMExpectedShare(t *testing.T) {
	ws := []srmWindow{
		{weights: map[string]int{"a": 90, "c": 10}, assigned: map[string]uint64{"a": 900, "c": 100}},
		{weights: map[string]int{"a": 50, "c": 50}, assigned: map[string]uint64{"a": 1400, "c": 1600}},
		{weights: map[string]int{"a": 0, "c": 0}, assigned: map[string]uint64{}},
	}
	chi2, p, exp, err := srm(ws, []string{"a", "c"}, "c")
	// expected c: 100 + 1500 of 4000; observed 1700.
	// (A window whose weights are all 0 adds nothing: not NaN.)
	if err != nil || !(math.Abs(exp-1600.0/4000) <= 1e-12) || !(chi2 > 0) || !(p < 1) {
		t.Errorf("srm: chi2 %v p %v expected %v %v, want expected share 0.4", chi2, p, exp, err)
	}
	if _, _, exp, err := srm(nil, []string{"a", "c"}, "c"); err == nil && exp != 0 {
		t.Errorf("no windows: expected share %v", exp)
	}
	// Weights but no new users yet: nothing to expect, and nothing wrong.
	empty := []srmWindow{{weights: map[string]int{"a": 50, "c": 50}, assigned: map[string]uint64{}}}
	if chi2, p, exp, err := srm(empty, []string{"a", "c"}, "c"); err != nil || exp != 0 || chi2 != 0 || p != 1 {
		t.Errorf("no new users: chi2 %v p %v expected share %v %v, want 0, 1, 0", chi2, p, exp, err)
	}
}

// The baseline's evidence is the step's while it has enough or takes
// traffic, else the whole rollout's (blue-green after the switch).
func TestBaselineEvidence(t *testing.T) {
	r := newRun("p", 2, time.Time{})
	r.stepEv, r.allEv = newEvidence(), newEvidence()
	r.stepEv.variants["a"] = &VariantCounts{Responses: 10}
	r.allEv.variants["a"] = &VariantCounts{Responses: 500}
	rec := &record{RolloutStatus: api.RolloutStatus{Baseline: "a", Weights: map[string]int{"a": 0, "c": 100}}}
	if got := baselineEvidence(rec, r, 10); got.Responses != 10 {
		t.Errorf("step has the minimum: %d responses, want the step's 10", got.Responses)
	}
	if got := baselineEvidence(rec, r, 11); got.Responses != 500 {
		t.Errorf("step short of the minimum, no weight: %d, want the rollout's 500", got.Responses)
	}
	rec.Weights["a"] = 1
	if got := baselineEvidence(rec, r, 11); got.Responses != 10 {
		t.Errorf("step short, but with weight: %d, want the step's 10", got.Responses)
	}
}

// Windows add up per variant, latency bucket and shadow; windows with the
// same weights share one SRM window. A clone is independent.
func TestEvidenceAddsUp(t *testing.T) {
	ev := newEvidence()
	w1 := Window{Weights: map[string]int{"a": 1}, Variants: map[string]VariantCounts{"a": {Assigned: 1, Responses: 2, Errors: 1, Latency: []uint64{1, 1}}},
		Shadows: map[string]ShadowCounts{"s": {Compared: 3, Agreed: 2}}}
	w2 := Window{Weights: map[string]int{"a": 2}, Variants: map[string]VariantCounts{"a": {Assigned: 5, Responses: 4, Latency: []uint64{0, 1, 3}}}}
	ev.add(&w1)
	ev.add(&w2)
	ev.add(&w1)
	a := ev.variant("a")
	if a.Assigned != 7 || a.Responses != 8 || a.Errors != 2 || !slices.Equal(a.Latency, []uint64{2, 3, 3}) {
		t.Errorf("variant a %+v", a)
	}
	if s := ev.shadows["s"]; s == nil || s.Compared != 6 || s.Agreed != 4 {
		t.Errorf("shadow s %+v", s)
	}
	if len(ev.srm) != 2 || ev.srm[0].assigned["a"] != 2 || ev.srm[1].assigned["a"] != 5 {
		t.Errorf("srm windows %+v", ev.srm)
	}
	c := ev.clone()
	c.add(&w1)
	c.variants["a"].Latency[0] = 99
	if a := ev.variant("a"); a.Responses != 8 || a.Latency[0] != 2 || ev.shadows["s"].Compared != 6 || ev.srm[0].assigned["a"] != 2 {
		t.Errorf("adding to a clone changed the original: %+v", a)
	}
	if n := ev.variant("nope"); n.Responses != 0 || n.Latency != nil {
		t.Error("an unknown variant has counts")
	}
}

// The latency and promql gates at their thresholds.
func TestLatencyAndPromQLGates(t *testing.T) {
	m := New(Options{Results: &fakeResults{}, Prometheus: promValue(5)})
	e := endpointOf("a", 50, "c", 50)
	e.Rollout = &config.Rollout{Canary: "c", Prometheus: "http://prom"}
	rec := &record{RolloutStatus: api.RolloutStatus{Canary: "c", Baseline: "a", Weights: map[string]int{"a": 50, "c": 50}}}
	r := newRun("p", 1, time.Time{})
	r.checks = 1
	r.stepEv, r.allEv = newEvidence(), newEvidence()
	// bounds 0.01, 0.1, 1 (+Inf): canary all in (0.1, 1], baseline all in (0, 0.01].
	r.stepEv.variants["c"] = &VariantCounts{Responses: 100, Latency: []uint64{0, 0, 100, 0}}
	r.stepEv.variants["a"] = &VariantCounts{Responses: 100, Latency: []uint64{100, 0, 0, 0}}
	gate := func(g config.RolloutGate, minN uint64) apiVerdict {
		return m.gate(context.Background(), e, rec, r, 0, g, minN)
	}
	v := gate(config.RolloutGate{Metric: "latency", MaxIncrease: 0.5}, 100)
	// medians 0.55 and 0.005: 0.545 above a 0.5 allowance, p far below.
	if v.Verdict != api.VerdictFail || math.Abs(v.Canary-0.55) > 1e-12 || math.Abs(v.Baseline-0.005) > 1e-12 || v.PValue == nil || !(*v.PValue < 1e-6) {
		t.Errorf("median 0.545 s slower, allowed 0.5: %+v", v)
	}
	if v := gate(config.RolloutGate{Metric: "latency", MaxIncrease: 0.545}, 100); v.Verdict != api.VerdictPass {
		t.Errorf("exactly the allowance: %+v, want pass", v)
	}
	if v := gate(config.RolloutGate{Metric: "latency", Quantile: 0.99, MaxIncrease: 0.5}, 100); math.Abs(v.Canary-0.991) > 1e-12 {
		t.Errorf("p99: canary %v, want 0.991", v.Canary)
	}
	if v := gate(config.RolloutGate{Metric: "latency", MaxIncrease: 0.5}, 101); v.Verdict != api.VerdictPending {
		t.Errorf("short of min requests: %+v, want pending", v)
	}
	r.stepEv.variants["a"].Responses = 99
	if v := gate(config.RolloutGate{Metric: "latency", MaxIncrease: 0.5}, 100); v.Verdict != api.VerdictPending {
		t.Errorf("baseline short of min requests: %+v, want pending", v)
	}
	r.stepEv.variants["a"].Responses = 100
	r.stepEv.variants["a"].Latency = []uint64{1, 2, 3}
	if v := gate(config.RolloutGate{Metric: "latency", MaxIncrease: 0.5}, 100); v.Verdict != api.VerdictError {
		t.Errorf("histograms of different shapes: %+v, want an error", v)
	}
	for val, want := range map[float64]string{4.9: api.VerdictPass, 5: api.VerdictPass, 5.1: api.VerdictFail} {
		m.opts.Prometheus = promValue(val)
		if v := gate(config.RolloutGate{Metric: "promql", Query: "q", Max: 5}, 100); v.Verdict != want || v.Canary != val {
			t.Errorf("promql %v against max 5: %+v, want %s", val, v, want)
		}
	}
	if v := gate(config.RolloutGate{Metric: "nope"}, 100); v.Verdict != api.VerdictError {
		t.Errorf("unknown metric: %+v", v)
	}
}

type promValue float64

func (p promValue) Query(context.Context, string, string) (float64, error) { return float64(p), nil }

// check counts its checks from 1 (the first spends alpha·6/π²), and puts
// the sample gate first: pending below MinRequests per variant, on the
// baseline only while it takes traffic.
func TestCheckCountsAndSamples(t *testing.T) {
	m := New(Options{Results: &fakeResults{}})
	e := endpointOf("a", 50, "c", 50)
	e.Rollout = &config.Rollout{Canary: "c", MinRequests: 100, Gates: []config.RolloutGate{{Metric: "latency", MaxIncrease: 0.5}}}
	rec := &record{RolloutStatus: api.RolloutStatus{Canary: "c", Baseline: "a", Weights: map[string]int{"a": 50, "c": 50}}}
	r := newRun("p", 1, time.Time{})
	r.stepEv, r.allEv = newEvidence(), newEvidence()
	r.stepEv.variants["c"] = &VariantCounts{Responses: 100, Latency: []uint64{0, 0, 100, 0}}
	r.stepEv.variants["a"] = &VariantCounts{Responses: 100, Latency: []uint64{100, 0, 0, 0}}
	vs := m.check(context.Background(), e, rec, r)
	if r.checks != 1 || len(vs) != 2 || vs[0].Gate != "min_requests" || vs[0].Verdict != api.VerdictPass || vs[1].Verdict != api.VerdictFail {
		t.Fatalf("first check (%d): %+v, want the sample passing and the latency gate failing", r.checks, vs)
	}
	r.stepEv.variants["a"].Responses = 99
	if vs := m.check(context.Background(), e, rec, r); r.checks != 2 || vs[0].Verdict != api.VerdictPending {
		t.Fatalf("baseline 99 of 100 while it takes traffic: %+v, want pending", vs[0])
	}
	rec.Weights = map[string]int{"a": 0, "c": 100}
	if vs := m.check(context.Background(), e, rec, r); vs[0].Verdict != api.VerdictPass {
		t.Fatalf("baseline 99 without traffic: %+v, want pass on the canary alone", vs[0])
	}
	r.stepEv.variants["c"].Responses = 99
	if vs := m.check(context.Background(), e, rec, r); vs[0].Verdict != api.VerdictPending {
		t.Fatalf("canary 99 of 100: %+v, want pending", vs[0])
	}
	e.Rollout.Gates = nil
	if vs := m.check(context.Background(), e, rec, r); len(vs) != 1 || vs[0].Verdict != api.VerdictPass || !strings.Contains(vs[0].Detail, "no gates") {
		t.Fatalf("no gates, few requests: %+v, want the sample passing on bake time alone", vs)
	}
}

// collect adds each closed window once: to the whole rollout's evidence
// from the rollout's start, to the step's from the step's start; the
// open window counts in both answers but is never kept.
func TestCollectAddsEachWindowOnce(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	win := func(start int, n uint64, partial bool) Window {
		return Window{Start: at(start), End: at(start + 10), Partial: partial, Weights: map[string]int{"a": 1},
			Variants: map[string]VariantCounts{"a": {Responses: n}}}
	}
	res := &fakeResults{}
	for _, w := range []Window{win(-10, 1, false), win(0, 10, false), win(10, 100, false), win(20, 1000, false)} {
		res.add("chat", w)
	}
	rec := &record{RolloutStatus: api.RolloutStatus{Started: at(0)}}
	r := newRun("p", 2, at(20))
	r.collect(res, "chat", rec)
	if s, a := r.stepEv.variant("a").Responses, r.allEv.variant("a").Responses; s != 1000 || a != 1110 || !r.through.Equal(at(30)) {
		t.Fatalf("first collect: step %d all %d through %v, want 1000, 1110, 30s", s, a, r.through)
	}
	res.add("chat", win(30, 10000, true))
	r.collect(res, "chat", rec)
	if s, a := r.stepEv.variant("a").Responses, r.allEv.variant("a").Responses; s != 11000 || a != 11110 {
		t.Fatalf("with the open window: step %d all %d, want 11000 and 11110", s, a)
	}
	if s, a := r.stepClosed.variant("a").Responses, r.allClosed.variant("a").Responses; s != 1000 || a != 1110 || !r.through.Equal(at(30)) {
		t.Fatalf("the open window was kept: step %d all %d through %v", s, a, r.through)
	}
	r.collect(nil, "chat", rec)
	if a := r.allEv.variant("a").Responses; a != 1110 {
		t.Fatalf("without results: all %d, want the closed 1110", a)
	}
	// A run of the next step keeps the rollout's evidence, not the step's;
	// a run of another plan keeps nothing.
	n := r.next("p", 3, at(40))
	if n.allClosed.variant("a").Responses != 1110 || n.stepClosed.variant("a").Responses != 0 || !n.through.Equal(at(30)) {
		t.Fatalf("next step: all %d step %d", n.allClosed.variant("a").Responses, n.stepClosed.variant("a").Responses)
	}
	if o := r.next("q", 1, at(40)); o.allClosed.variant("a").Responses != 0 {
		t.Fatal("another plan kept the evidence")
	}
	// A window that began before the rollout, closed or open, is not the
	// rollout's, even when it ends after the rollout started.
	res2 := &fakeResults{}
	for _, w := range []Window{win(-5, 1, false), win(5, 10, false), win(15, 100, true)} {
		res2.add("chat", w)
	}
	r3 := newRun("p", 1, at(0))
	r3.collect(res2, "chat", rec)
	if s, a := r3.stepEv.variant("a").Responses, r3.allEv.variant("a").Responses; s != 110 || a != 110 {
		t.Fatalf("a closed window from before the rollout: step %d all %d, want 110 and 110", s, a)
	}
	res3 := &fakeResults{}
	res3.add("chat", win(-5, 1, true))
	r4 := newRun("p", 1, at(0))
	r4.collect(res3, "chat", rec)
	if s, a := r4.stepEv.variant("a").Responses, r4.allEv.variant("a").Responses; s != 0 || a != 0 {
		t.Fatalf("an open window from before the rollout: step %d all %d, want 0 and 0", s, a)
	}
	// An open window that began before the step counts for the rollout only.
	r2 := newRun("p", 2, at(35))
	r2.collect(res, "chat", rec)
	if s, a := r2.stepEv.variant("a").Responses, r2.allEv.variant("a").Responses; s != 0 || a != 11110 {
		t.Fatalf("open window from before the step: step %d all %d, want 0 and 11110", s, a)
	}
}

// The error-ratio gate waits for MinRequests on each side, then runs the
// sequential test and says at which confidence; the sample gate notes a
// canary that takes no user traffic while it lacks requests.
func TestErrorRatioGateAndSampleNote(t *testing.T) {
	m := New(Options{Results: &fakeResults{}})
	e := endpointOf("a", 100, "c", 0)
	e.Rollout = &config.Rollout{Canary: "c", MinRequests: 100, Gates: []config.RolloutGate{{Metric: "error_ratio", MaxIncrease: 0.01}}}
	rec := &record{RolloutStatus: api.RolloutStatus{Canary: "c", Baseline: "a", Weights: map[string]int{"a": 100, "c": 0}}}
	r := newRun("p", 1, time.Time{})
	r.stepEv, r.allEv = newEvidence(), newEvidence()
	r.stepEv.variants["c"] = &VariantCounts{Responses: 99}
	r.allEv.variants["c"] = &VariantCounts{Responses: 99, Errors: 50}
	r.allEv.variants["a"] = &VariantCounts{Responses: 1000}
	vs := m.check(context.Background(), e, rec, r)
	if !strings.Contains(vs[0].Detail, "takes no user traffic") || vs[1].Verdict != api.VerdictPending {
		t.Fatalf("canary at 0%% with 99 of 100: %+v", vs)
	}
	r.allEv.variants["c"].Responses, r.stepEv.variants["c"].Responses = 100, 100
	r.allEv.variants["a"].Responses = 99
	if vs := m.check(context.Background(), e, rec, r); strings.Contains(vs[0].Detail, "takes no user traffic") || vs[1].Verdict != api.VerdictPending {
		t.Fatalf("canary with 100, baseline 99: %+v", vs)
	}
	r.allEv.variants["a"].Responses = 100
	vs = m.check(context.Background(), e, rec, r)
	if v := vs[1]; v.Verdict == api.VerdictPending || v.PValue == nil || !strings.Contains(v.Detail, "with 95% confidence") {
		t.Fatalf("100 each: %+v, want a verdict at 95%% confidence", v)
	}
	r.allEv.variants["c"].Responses, r.allEv.variants["c"].Errors, r.allEv.variants["a"].Responses = 1000, 500, 1000
	if v := m.check(context.Background(), e, rec, r)[1]; v.Verdict != api.VerdictFail {
		t.Fatalf("50%% errors against none, 1000 each: %+v, want a failure", v)
	}
	rec.Weights = map[string]int{"a": 90, "c": 10}
	r.stepEv.variants["c"].Responses = 99
	if vs := m.check(context.Background(), e, rec, r); strings.Contains(vs[0].Detail, "takes no user traffic") {
		t.Fatalf("a canary with weight noted as taking no traffic: %+v", vs[0])
	}
}

// The SRM gate counts new users per side and waits for MinRequests of
// them while the step splits users; the latency gate names its quantile.
func TestSRMGateCounts(t *testing.T) {
	m := New(Options{Results: &fakeResults{}})
	e := endpointOf("a", 50, "c", 50)
	e.Rollout = &config.Rollout{Canary: "c"}
	rec := &record{RolloutStatus: api.RolloutStatus{Canary: "c", Baseline: "a", Weights: map[string]int{"a": 50, "c": 50}}}
	r := newRun("p", 1, time.Time{})
	r.stepEv, r.allEv = newEvidence(), newEvidence()
	w := Window{Weights: map[string]int{"a": 50, "c": 50}, Variants: map[string]VariantCounts{"a": {Assigned: 60}, "c": {Assigned: 40}}}
	r.stepEv.add(&w)
	v := m.gate(context.Background(), e, rec, r, 0, config.RolloutGate{Metric: "srm"}, 100)
	if v.Verdict == api.VerdictPending || v.CanaryN != 40 || v.BaseN != 60 || v.PValue == nil {
		t.Fatalf("100 new users, 40 on the canary, min 100: %+v, want a verdict on 40 and 60", v)
	}
	if v := m.gate(context.Background(), e, rec, r, 0, config.RolloutGate{Metric: "srm"}, 101); v.Verdict != api.VerdictPending {
		t.Fatalf("100 new users, min 101: %+v, want pending", v)
	}
	r.stepEv.variants["c"] = &VariantCounts{Responses: 10, Latency: []uint64{10, 0, 0, 0}}
	r.stepEv.variants["a"] = &VariantCounts{Responses: 10, Latency: []uint64{10, 0, 0, 0}}
	if v := m.gate(context.Background(), e, rec, r, 0, config.RolloutGate{Metric: "latency", Quantile: 0.9}, 10); !strings.HasPrefix(v.Detail, "p90 canary") {
		t.Fatalf("latency detail %q, want it to name p90", v.Detail)
	}
}

// The shadow-agreement gate waits for MinRequests comparisons, then fails
// an agreement shown below its floor.
func TestShadowAgreementGate(t *testing.T) {
	m := New(Options{Results: &fakeResults{}})
	e := endpointOf("a", 50, "c", 50)
	e.Rollout = &config.Rollout{Canary: "c"}
	rec := &record{RolloutStatus: api.RolloutStatus{Canary: "c", Baseline: "a", Weights: map[string]int{"a": 50, "c": 50}}}
	r := newRun("p", 1, time.Time{})
	r.stepEv, r.allEv = newEvidence(), newEvidence()
	g := config.RolloutGate{Metric: "shadow_agreement", Shadow: "m", MinAgreement: 0.95}
	gate := func() apiVerdict { return m.gate(context.Background(), e, rec, r, 0, g, 100) }
	if v := gate(); v.Verdict != api.VerdictPending || v.CanaryN != 0 || v.Gate != "shadow_agreement:m" || v.Baseline != 0.95 {
		t.Fatalf("no comparisons: %+v", v)
	}
	r.allEv.shadows["m"] = &ShadowCounts{Compared: 99, Agreed: 99}
	if v := gate(); v.Verdict != api.VerdictPending || v.CanaryN != 99 {
		t.Fatalf("99 of 100 comparisons: %+v, want pending with 99", v)
	}
	r.allEv.shadows["m"] = &ShadowCounts{Compared: 100, Agreed: 100}
	if v := gate(); v.Verdict != api.VerdictPass || v.CanaryN != 100 || v.PValue == nil {
		t.Fatalf("exactly 100 of 100 comparisons, all agreeing: %+v, want a verdict (pass)", v)
	}
	r.allEv.shadows["m"] = &ShadowCounts{Compared: 1000, Agreed: 1000}
	if v := gate(); v.Verdict != api.VerdictPass || v.CanaryN != 1000 || v.Canary != 1 || v.PValue == nil || !strings.Contains(v.Detail, "below 0.95 with 95% confidence") {
		t.Fatalf("all of 1000 agree: %+v, want pass", v)
	}
	r.allEv.shadows["m"] = &ShadowCounts{Compared: 2000, Agreed: 1500}
	if v := gate(); v.Verdict != api.VerdictFail || v.Canary != 0.75 {
		t.Fatalf("1500 of 2000 agree: %+v, want fail", v)
	}
	r.allEv.shadows["m"] = &ShadowCounts{Compared: 1000, Agreed: 1500} // counts went backwards
	if v := gate(); v.Verdict != api.VerdictError {
		t.Fatalf("counts going backwards: %+v, want an error", v)
	}
}
