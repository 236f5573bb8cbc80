package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/metrics"
)

// fakeResults stands in for package stats in these tests: it serves the
// windows the simulation writes, so error ratios and sample sizes are
// exactly what a test sets. The end-to-end tests use the real recorder.
type fakeResults struct {
	mu      sync.Mutex
	windows map[string][]Window
}

func (f *fakeResults) Windows(endpoint string, since time.Time) []Window {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Window
	for _, w := range f.windows[endpoint] {
		if w.End.After(since) {
			out = append(out, w)
		}
	}
	return out
}

func (f *fakeResults) LatencyBounds() []float64 { return []float64{0.01, 0.1, 1} }

func (f *fakeResults) add(endpoint string, w Window) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.windows == nil {
		f.windows = map[string][]Window{}
	}
	f.windows[endpoint] = append(f.windows[endpoint], w)
}

const planYAML = `endpoints:
  - name: chat
    match: {path_prefix: /chat}
    sticky: {header: x-user-id}
    allow_target: true
    variants:
      - {name: stable, weight: 90, backends: ["10.0.0.1:80"]}
      - {name: canary, weight: 10, backends: ["10.0.0.2:80"]}
    rollout:
      canary: canary
      interval: 10s
      min_requests: 200
%s`

const defaultSteps = "      steps: [{weight: 20, bake: 1m}, {weight: 50, bake: 1m}, {weight: 100, bake: 1m}]\n"

const defaultGates = `      gates:
        - {metric: error_ratio, max_increase: 0}
        - {metric: srm}
`

// sim is a manager on a real live-control Controller (in memory or on a
// state file), fed simulated traffic window by window.
type sim struct {
	t       testing.TB
	now     time.Time
	ctrl    *control.Controller
	mgr     *Manager
	res     *fakeResults
	met     *metrics.Metrics
	src     rand.Source
	applied []map[string]int // every config's weights, in order
	// preview is the canary's answers per window from x-modelsplit-target
	// requests (they reach it at weight 0).
	preview int
}

func newSim(t testing.TB, extra string, persister control.Persister, seed uint64) *sim {
	t.Helper()
	if extra == "" {
		extra = defaultGates
	}
	if !strings.Contains(extra, "strategy:") && !strings.Contains(extra, "steps:") {
		extra = defaultSteps + extra
	}
	cfg, err := config.Parse("plan.yaml", []byte(fmt.Sprintf(planYAML, extra)))
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC), res: &fakeResults{}, met: metrics.New(),
		src: rand.NewPCG(seed, 11)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.ctrl = control.New(ctx, control.Options{Metrics: s.met, Persister: persister, Now: func() time.Time { return s.now },
		Apply: func(c *config.Config) error {
			e, _ := c.Endpoint("chat")
			s.applied = append(s.applied, currentWeights(e))
			return nil
		}})
	if _, err := s.ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	s.mgr = New(Options{Controller: s.ctrl, Results: s.res, Metrics: s.met, Now: func() time.Time { return s.now }})
	return s
}

func (s *sim) weights() map[string]int {
	e, _ := s.ctrl.Effective().Endpoint("chat")
	return currentWeights(e)
}

// window simulates one 10s window of traffic at the weights in force:
// requests split by weight, errors drawn at each variant's error ratio,
// new users drawn by weight (srmBias shifts the canary's share of them).
func (s *sim) window(requests int, errRatio map[string]float64, srmBias float64) {
	w := s.weights()
	total := 0
	for _, v := range w {
		total += v
	}
	win := Window{Start: s.now, End: s.now.Add(10 * time.Second), Weights: w, Variants: map[string]VariantCounts{}}
	newUsers := requests / 5
	canaryShare := float64(w["canary"])/float64(total) + srmBias
	onCanary := uint64(0)
	if canaryShare > 0 {
		onCanary = uint64(distuv.Binomial{N: float64(newUsers), P: min(canaryShare, 1), Src: s.src}.Rand())
	}
	for _, name := range []string{"stable", "canary"} {
		n := uint64(requests * w[name] / total)
		if name == "canary" {
			n += uint64(s.preview)
		}
		var errs uint64
		if n > 0 && errRatio[name] > 0 {
			errs = uint64(distuv.Binomial{N: float64(n), P: errRatio[name], Src: s.src}.Rand())
		}
		assigned := onCanary
		if name == "stable" {
			assigned = uint64(newUsers) - onCanary
		}
		win.Variants[name] = VariantCounts{Responses: n, Errors: errs, Assigned: assigned, Latency: []uint64{n, 0, 0, 0}}
	}
	s.res.add("chat", win)
	s.now = s.now.Add(10 * time.Second)
	s.mgr.Tick(context.Background())
}

func (s *sim) status() api.RolloutStatus {
	st, err := s.mgr.Status("chat")
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// run simulates windows until the rollout ends or limit windows passed;
// it returns the phase and the canary's and baseline's answered requests.
func (s *sim) run(limit, requests int, errRatio map[string]float64) (string, uint64, uint64) {
	var c, b uint64
	for range limit {
		s.window(requests, errRatio, 0)
		w := s.res.windows["chat"][len(s.res.windows["chat"])-1]
		c += w.Variants["canary"].Responses
		b += w.Variants["stable"].Responses
		if st := s.status(); st.Phase != api.PhaseRunning {
			return st.Phase, c, b
		}
	}
	return s.status().Phase, c, b
}

func TestHealthyCanaryReachesFullTrafficThroughEveryStep(t *testing.T) {
	s := newSim(t, "", nil, 1)
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	var canaryWeights []int
	for range 200 {
		s.window(2000, map[string]float64{"stable": 0.01, "canary": 0.01}, 0)
		w := s.weights()["canary"]
		if len(canaryWeights) == 0 || canaryWeights[len(canaryWeights)-1] != w {
			canaryWeights = append(canaryWeights, w)
		}
		if s.status().Phase != api.PhaseRunning {
			break
		}
	}
	st := s.status()
	if st.Phase != api.PhasePromoted {
		t.Fatalf("phase %s at step %d (%s), want promoted", st.Phase, st.Step, st.Reason)
	}
	if !slices.Equal(canaryWeights, []int{20, 50, 100}) {
		t.Errorf("canary weights went %v, want 20, 50, 100", canaryWeights)
	}
	if w := s.weights(); w["canary"] != 100 || w["stable"] != 0 {
		t.Errorf("weights after the promotion %v", w)
	}
	// Audited as the rollout's, steps merged, and the endpoint is free again.
	var actions []string
	for _, a := range s.ctrl.Audit(50) {
		if a.Actor == Actor {
			actions = append(actions, fmt.Sprintf("%s/%d", a.Action, max(a.Count, 1)))
			if a.Plan != st.Plan {
				t.Errorf("audit entry of plan %q, want %q", a.Plan, st.Plan)
			}
		}
	}
	sort.Strings(actions)
	if want := []string{"rollout_promote/1", "rollout_start/1", "rollout_step/2"}; !slices.Equal(actions, want) {
		t.Errorf("rollout audit %v, want %v", actions, want)
	}
	if _, err := s.ctrl.SetWeights("chat", map[string]int{"stable": 50, "canary": 50}, control.Requester{}); err != nil {
		t.Errorf("a person cannot change the weights after the rollout ended: %v", err)
	}
}

func TestFailingCanaryRollsBackWithinOneInterval(t *testing.T) {
	s := newSim(t, "", nil, 2)
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	// During the rollout a person cannot move the weights.
	_, err := s.ctrl.SetWeights("chat", map[string]int{"stable": 50, "canary": 50}, control.Requester{})
	if err == nil || !strings.Contains(err.Error(), "rollout plan") {
		t.Errorf("set-weights during a rollout: %v, want a refusal naming the rollout plan", err)
	}
	phase, c, _ := s.run(100, 2000, map[string]float64{"stable": 0.01, "canary": 0.20})
	st := s.status()
	if phase != api.PhaseRolledBack {
		t.Fatalf("phase %s, want rolled_back", phase)
	}
	// The first check with min_requests on both sides decides: the canary
	// gets 20% of 2,000 per window, so 200 are there after one window.
	if c > 400 {
		t.Errorf("rolled back after %d canary requests; the first check with 200 should have", c)
	}
	if w := s.weights(); w["stable"] != 90 || w["canary"] != 10 {
		t.Errorf("weights after the rollback %v, want the pre-rollout 90/10", w)
	}
	if !strings.Contains(st.Reason, "error_ratio") || !strings.Contains(st.Reason, "p=") {
		t.Errorf("reason %q lacks the gate and its p-value", st.Reason)
	}
	var rb *api.AuditEntry
	for _, a := range s.ctrl.Audit(50) {
		if a.Action == "auto_rollback" {
			rb = &a
		}
	}
	if rb == nil || rb.Actor != Actor || !strings.Contains(rb.Detail, "error_ratio") {
		t.Fatalf("no auto_rollback audit entry with the gate: %+v", rb)
	}
	if got := testutil.ToFloat64(s.met.RolloutRollbacks.WithLabelValues("chat", "error_ratio")); got != 1 {
		t.Errorf("rollbacks metric %v, want 1", got)
	}
}

// A/A: the canary is exactly as good as the baseline; checking the
// always-valid test at every interval through all three steps must
// roll back at most 5% of the runs.
func TestAAFalseRollbacksAtMostFivePercent(t *testing.T) {
	runs := 1000
	if testing.Short() {
		runs = 200
	}
	rollbacks := 0
	for i := range runs {
		s := newSim(t, "", nil, uint64(1000+i))
		if _, err := s.mgr.Start("chat", "test"); err != nil {
			t.Fatal(err)
		}
		if phase, _, _ := s.run(60, 1000, map[string]float64{"stable": 0.01, "canary": 0.01}); phase == api.PhaseRolledBack {
			rollbacks++
		}
	}
	rate := float64(rollbacks) / float64(runs)
	t.Logf("A/A: %d false rollbacks in %d runs (%.1f%%)", rollbacks, runs, 100*rate)
	if rate > 0.05 {
		t.Errorf("A/A false rollback rate %.1f%%, want at most 5%%", 100*rate)
	}
}

// A canary at twice the baseline's error ratio (1% → 2%) is rolled back;
// the median number of requests it took is reported.
func TestDoubledErrorRatioIsRolledBack(t *testing.T) {
	const runs = 200
	var needed []int
	for i := range runs {
		s := newSim(t, "", nil, uint64(5000+i))
		if _, err := s.mgr.Start("chat", "test"); err != nil {
			t.Fatal(err)
		}
		phase, c, b := s.run(120, 1000, map[string]float64{"stable": 0.01, "canary": 0.02})
		if phase != api.PhaseRolledBack {
			continue
		}
		needed = append(needed, int(c+b))
	}
	sort.Ints(needed)
	if len(needed) < runs*95/100 {
		t.Fatalf("rolled back in %d of %d runs, want at least 95%%", len(needed), runs)
	}
	t.Logf("1%% → 2%%: rolled back in %d of %d runs; median %d requests (canary and baseline together), p90 %d",
		len(needed), runs, needed[len(needed)/2], needed[len(needed)*9/10])
}

// SRM: new users land 52/48 although the weights say 50/50.
func TestSampleRatioMismatchRollsBack(t *testing.T) {
	s := newSim(t, "", nil, 3)
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	s.now = s.now.Add(2 * time.Minute) // straight to the 50% step's traffic below
	for range 100 {
		s.window(2000, map[string]float64{"stable": 0.01, "canary": 0.01}, 0)
		if s.status().Step == 2 {
			break
		}
	}
	if s.status().Step != 2 {
		t.Fatalf("never reached step 2: %+v", s.status())
	}
	for range 100 {
		s.window(10000, map[string]float64{"stable": 0.01, "canary": 0.01}, 0.02)
		if s.status().Phase != api.PhaseRunning {
			break
		}
	}
	st := s.status()
	if st.Phase != api.PhaseRolledBack || !strings.Contains(st.Reason, "srm") {
		t.Fatalf("phase %s, reason %q: want rolled back by srm", st.Phase, st.Reason)
	}
	t.Logf("SRM: %s", st.Reason)
}

// A paused rollout keeps its bake time; a restart (a new controller and
// manager on the same state file) resumes at the same step with the bake
// time it had left.
func TestPauseResumeAndRestartKeepTheStep(t *testing.T) {
	file := control.FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}
	s := newSim(t, "", file, 4)
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	for s.status().Step < 2 {
		s.window(2000, map[string]float64{"stable": 0.01, "canary": 0.01}, 0)
	}
	s.window(2000, map[string]float64{"stable": 0.01, "canary": 0.01}, 0) // 10s into step 2
	st, err := s.mgr.Pause("chat", "test")
	if err != nil {
		t.Fatal(err)
	}
	if st.BakeRemaining != 50 {
		t.Errorf("paused with %vs of bake left, want 50", st.BakeRemaining)
	}
	// Paused: no step advances however long it stays so.
	for range 20 {
		s.window(2000, map[string]float64{"stable": 0.01, "canary": 0.01}, 0)
	}
	if st := s.status(); st.Step != 2 || st.Phase != api.PhasePaused {
		t.Fatalf("paused rollout moved: %+v", st)
	}
	if _, err := s.mgr.Resume("chat", "test"); err != nil {
		t.Fatal(err)
	}
	// "Kill" this process: a new controller and manager on the same file.
	now := s.now
	s2 := newSim(t, "", file, 5)
	s2.now = now
	st = s2.status()
	if st.Step != 2 || st.Phase != api.PhaseRunning || st.NextStepDue == nil || st.NextStepDue.Sub(now) != 50*time.Second {
		t.Fatalf("after the restart: step %d, phase %s, next step due %v (want step 2, running, in 50s)", st.Step, st.Phase, st.NextStepDue)
	}
	if w := s2.weights(); w["canary"] != 50 {
		t.Errorf("after the restart the weights are %v, want the step's 50/50", w)
	}
	for range 4 {
		s2.window(2000, map[string]float64{"stable": 0.01, "canary": 0.01}, 0)
	}
	if st := s2.status(); st.Step != 2 {
		t.Fatalf("advanced before the bake time left was over: %+v", st)
	}
	for range 10 {
		s2.window(2000, map[string]float64{"stable": 0.01, "canary": 0.01}, 0)
	}
	if st := s2.status(); st.Step != 3 {
		t.Fatalf("did not advance after the bake time left: %+v", st)
	}
}

// A gate that cannot be computed holds the step, counted and never
// promoted on missing data.
func TestUnreachablePrometheusHoldsTheRollout(t *testing.T) {
	s := newSim(t, "      prometheus: http://127.0.0.1:1\n      gates:\n        - {metric: promql, query: 'sum(up)', max: 5}\n", nil, 6)
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		s.window(2000, map[string]float64{"stable": 0.01, "canary": 0.01}, 0)
	}
	st := s.status()
	if st.Phase != api.PhaseRunning || st.Step != 1 {
		t.Fatalf("phase %s step %d: an unreachable Prometheus must hold step 1", st.Phase, st.Step)
	}
	var v *api.GateVerdict
	for _, g := range st.Gates {
		if g.Gate == "promql" {
			v = &g
		}
	}
	if v == nil || v.Verdict != api.VerdictError || !strings.Contains(v.Detail, "unreachable") {
		t.Fatalf("promql verdict %+v, want error naming the unreachable server", v)
	}
	if got := testutil.ToFloat64(s.met.RolloutGateErrors.WithLabelValues("chat", "promql")); got < 90 {
		t.Errorf("gate errors counted %v, want one per check", got)
	}
}

// The persisted record is JSON that a newer replica reads back.
func TestRecordRoundTrip(t *testing.T) {
	s := newSim(t, "", nil, 7)
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	raw, ok := s.ctrl.ActorState("chat")
	if !ok {
		t.Fatal("no actor state stored")
	}
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil || rec.Plan == "" || rec.Canary != "canary" || rec.Before["stable"] != 90 {
		t.Fatalf("record %s: %v", raw, err)
	}
}
