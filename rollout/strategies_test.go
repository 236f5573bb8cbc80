package rollout

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/api"
)

// runPlan drives a plan with healthy traffic until it ends, returning the
// canary's weight at every change and the final status.
func runPlan(t *testing.T, s *sim, windows int, errs map[string]float64) ([]int, api.RolloutStatus) {
	t.Helper()
	seen := []int{s.weights()["canary"]}
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	if w := s.weights()["canary"]; w != seen[0] {
		seen = append(seen, w)
	}
	for range windows {
		s.window(2000, errs, 0)
		if w := s.weights()["canary"]; w != seen[len(seen)-1] {
			seen = append(seen, w)
		}
		if s.status().Phase != api.PhaseRunning {
			break
		}
	}
	return seen, s.status()
}

var healthy = map[string]float64{"stable": 0.01, "canary": 0.01}

func TestLinearRolloutAddsItsStepEveryInterval(t *testing.T) {
	s := newSim(t, "      strategy: linear\n      linear: {step: 25, interval: 30s}\n"+defaultGates, nil, 20)
	seen, st := runPlan(t, s, 100, healthy)
	if st.Phase != api.PhasePromoted || !slices.Equal(seen, []int{10, 25, 50, 75, 100}) {
		t.Fatalf("linear: canary weights %v, phase %s; want 10 → 25, 50, 75, 100 and promoted", seen, st.Phase)
	}
}

// Blue-green: the preview gives the new variant no user traffic (only
// target-header requests), then the switch moves everyone; the gates keep
// comparing against the baseline's results from before the switch.
func TestBlueGreenPreviewsThenSwitches(t *testing.T) {
	s := newSim(t, "      strategy: blue_green\n      blue_green: {preview: 1m, rollback_window: 1m}\n"+defaultGates, nil, 21)
	s.preview = 300
	seen, st := runPlan(t, s, 100, healthy)
	if st.Phase != api.PhasePromoted || !slices.Equal(seen, []int{10, 0, 100}) {
		t.Fatalf("blue-green: canary weights %v, phase %s (%s); want 10 → 0 (preview), 100 and promoted", seen, st.Phase, st.Reason)
	}
	// Without preview traffic the preview never passes its sample gate.
	s2 := newSim(t, "      strategy: blue_green\n      blue_green: {preview: 1m, rollback_window: 1m}\n"+defaultGates, nil, 22)
	seen, st = runPlan(t, s2, 50, healthy)
	if st.Phase != api.PhaseRunning || st.Step != 1 {
		t.Fatalf("blue-green without preview traffic advanced: weights %v, %+v", seen, st)
	}
}

// A failing new variant after the blue-green switch goes back at once.
func TestBlueGreenRollsBackAfterTheSwitch(t *testing.T) {
	s := newSim(t, "      strategy: blue_green\n      blue_green: {preview: 30s, rollback_window: 10m}\n"+defaultGates, nil, 23)
	s.preview = 300
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	for s.status().Step < 2 {
		s.window(2000, healthy, 0)
	}
	phase, _, _ := s.run(30, 2000, map[string]float64{"stable": 0.01, "canary": 0.10})
	if phase != api.PhaseRolledBack || s.weights()["stable"] != 90 {
		t.Fatalf("after the switch: %s with weights %v; want rolled back to 90/10", phase, s.weights())
	}
}

// An A/B experiment holds its weights until a winner is clear, then
// promotes it; with no difference it keeps running.
func TestExperimentPromotesTheWinner(t *testing.T) {
	s := newSim(t, "      strategy: experiment\n      experiment: {weight: 50, duration: 1m}\n"+defaultGates, nil, 24)
	seen, st := runPlan(t, s, 200, map[string]float64{"stable": 0.03, "canary": 0.01})
	if st.Phase != api.PhasePromoted || !slices.Equal(seen, []int{10, 50, 100}) || !strings.Contains(st.Reason, "canary better") {
		t.Fatalf("experiment with a better canary: weights %v, %s (%s)", seen, st.Phase, st.Reason)
	}
	s2 := newSim(t, "      strategy: experiment\n      experiment: {weight: 50, duration: 1m}\n"+defaultGates, nil, 25)
	_, st = runPlan(t, s2, 60, healthy)
	if st.Phase != api.PhaseRunning || st.Weights["canary"] != 50 {
		t.Fatalf("experiment without a difference ended: %+v", st)
	}
	s3 := newSim(t, "      strategy: experiment\n      experiment: {weight: 50, duration: 1m}\n"+defaultGates, nil, 26)
	_, st = runPlan(t, s3, 60, map[string]float64{"stable": 0.01, "canary": 0.03})
	if st.Phase != api.PhaseRolledBack {
		t.Fatalf("experiment with a worse canary: %+v", st)
	}
}

// A pause racing a step: the step made from the state read before the
// pause is refused, and the pause stands; the ramp stays while paused.
func TestStepRacingAPauseIsRefused(t *testing.T) {
	s := newSim(t, "", nil, 27)
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	e, _ := s.ctrl.Effective().Endpoint("chat")
	stale, _ := s.mgr.load("chat")
	if _, err := s.mgr.Pause("chat", "person"); err != nil {
		t.Fatal(err)
	}
	loaded := stale.RolloutStatus
	if _, err := s.mgr.enterStep(e, stale, &loaded, 2, "rollout_step", ""); err == nil || !strings.Contains(err.Error(), "moved on") {
		t.Fatalf("a step from the state before the pause: %v, want refused", err)
	}
	if st := s.status(); st.Phase != api.PhasePaused || st.Step != 1 {
		t.Fatalf("after the refused step: %+v", st)
	}
	if e, _ := s.ctrl.Effective().Endpoint("chat"); e.Ramp == nil || e.Ramp.Canary != "canary" {
		t.Fatalf("pausing dropped the ramp: %+v", e.Ramp)
	}
}

// A rollback posts the webhook's event.
func TestRollbackPostsTheWebhook(t *testing.T) {
	got := make(chan Event, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook body: %v (content type %q)", err, r.Header.Get("Content-Type"))
		}
		got <- ev
	}))
	defer srv.Close()
	s := newSim(t, "      webhook: "+srv.URL+"\n"+defaultGates, nil, 28)
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	if phase, _, _ := s.run(50, 2000, map[string]float64{"stable": 0.01, "canary": 0.3}); phase != api.PhaseRolledBack {
		t.Fatalf("phase %s", phase)
	}
	select {
	case ev := <-got:
		if ev.Phase != api.PhaseRolledBack || ev.Endpoint != "chat" || ev.Weights["stable"] != 90 || !strings.Contains(ev.Reason, "error_ratio") {
			t.Errorf("webhook event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Error("no webhook call within 5s of the rollback")
	}
}

// fakePrometheus stands in for a Prometheus server's /api/v1/query: it
// answers the value set by the test (as Prometheus' JSON), or the series
// count, so the gate's parsing and verdicts are checked without a server.
func fakePrometheus(t *testing.T, value *string, series *int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" || r.URL.Query().Get("query") != "sum(rate(gpu_oom_total[1m]))" {
			http.Error(w, "unexpected query "+r.URL.String(), http.StatusBadRequest)
			return
		}
		res := make([]string, *series)
		for i := range res {
			res[i] = `{"metric":{},"value":[1764417600,"` + *value + `"]}`
		}
		_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(res, ",") + `]}}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPromQLGate(t *testing.T) {
	value, series := "0", 1
	srv := fakePrometheus(t, &value, &series)
	plan := "      prometheus: " + srv.URL + "\n      gates:\n        - {metric: promql, query: 'sum(rate(gpu_oom_total[1m]))', max: 0.5}\n"
	s := newSim(t, plan, nil, 30)
	seen, st := runPlan(t, s, 100, healthy)
	if st.Phase != api.PhasePromoted {
		t.Fatalf("promql at 0 (max 0.5): %s after weights %v", st.Phase, seen)
	}
	// Two series: a gate error that holds the step.
	series = 2
	s = newSim(t, plan, nil, 31)
	_, st = runPlan(t, s, 30, healthy)
	if st.Phase != api.PhaseRunning || st.Step != 1 || !strings.Contains(st.Gates[1].Detail, "returned 2 series") {
		t.Fatalf("promql with two series: %+v", st)
	}
	// Above max: rolled back.
	value, series = "3", 1
	s = newSim(t, plan, nil, 32)
	_, st = runPlan(t, s, 30, healthy)
	if st.Phase != api.PhaseRolledBack || !strings.Contains(st.Reason, "promql") {
		t.Fatalf("promql at 3 (max 0.5): %+v", st)
	}
}
