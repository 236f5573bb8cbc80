package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
)

// flakyController is live control whose automated changes fail while
// failing is set (a store that is down), recording every attempt.
type flakyController struct {
	*control.Controller
	mu       sync.Mutex
	failing  bool
	attempts []string // the action of every change tried
}

func (f *flakyController) ApplyAutomated(endpoint string, ch control.AutoChange) (api.ChangeResult, error) {
	f.mu.Lock()
	f.attempts = append(f.attempts, ch.Action)
	failing := f.failing
	f.mu.Unlock()
	if failing {
		return api.ChangeResult{}, errors.New("state store down")
	}
	return f.Controller.ApplyAutomated(endpoint, ch)
}

func (f *flakyController) setFailing(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = v
}

func (f *flakyController) tried(action string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.attempts {
		if a == action {
			n++
		}
	}
	return n
}

// flaky puts a flakyController between s's manager and its live control.
func (s *sim) flaky() *flakyController {
	f := &flakyController{Controller: s.ctrl}
	s.mgr = New(Options{Controller: f, Results: s.res, Metrics: s.met, Now: func() time.Time { return s.now }})
	return f
}

// tickAfter moves the clock on by d and makes one round, without a new
// window of traffic.
func (s *sim) tickAfter(d time.Duration) {
	s.now = s.now.Add(d)
	s.mgr.Tick(context.Background())
}

// A step that live control refused to store (the store was down) is
// tried again at the very next tick, not an interval later.
func TestFailedStepIsRetriedAtTheNextTick(t *testing.T) {
	s := newSim(t, "", nil, 40)
	f := s.flaky()
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	f.setFailing(true)
	for i := 0; f.tried("rollout_step") == 0; i++ {
		if i == 100 {
			t.Fatalf("no step tried in 100 windows: %+v", s.status())
		}
		s.window(2000, healthy, 0)
	}
	if st := s.status(); st.Step != 1 || st.Phase != api.PhaseRunning || s.weights()["canary"] != 20 {
		t.Fatalf("a step that could not be stored moved the rollout: %+v, weights %v", st, s.weights())
	}
	f.setFailing(false)
	s.tickAfter(time.Second) // well within the 10s interval
	if st := s.status(); st.Step != 2 || s.weights()["canary"] != 50 {
		t.Fatalf("one second after the failed step, with the store back: step %d, weights %v; want step 2 at 50%%", st.Step, s.weights())
	}
}

// A rollback that live control refused to store is tried again at the
// very next tick, not an interval later.
func TestFailedRollbackIsRetriedAtTheNextTick(t *testing.T) {
	s := newSim(t, "", nil, 41)
	f := s.flaky()
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	f.setFailing(true)
	bad := map[string]float64{"stable": 0.01, "canary": 0.30}
	for i := 0; f.tried("auto_rollback") == 0; i++ {
		if i == 100 {
			t.Fatalf("no rollback tried in 100 windows: %+v", s.status())
		}
		s.window(2000, bad, 0)
	}
	if st := s.status(); st.Phase != api.PhaseRunning || s.weights()["canary"] != 20 {
		t.Fatalf("a rollback that could not be stored ended the rollout: %+v", st)
	}
	f.setFailing(false)
	s.tickAfter(time.Second)
	if st := s.status(); st.Phase != api.PhaseRolledBack || s.weights()["canary"] != 10 {
		t.Fatalf("one second after the failed rollback, with the store back: %s, weights %v; want rolled back to 90/10", st.Phase, s.weights())
	}
	if n := f.tried("auto_rollback"); n != 2 {
		t.Errorf("rollback tried %d times, want 2 (the failed one and the retry)", n)
	}
}

// The gates are checked once per interval however often the manager
// ticks, and the checks of a step are counted across ticks (the latency
// gate spends alpha by that count).
func TestGatesCheckedOncePerInterval(t *testing.T) {
	s := newSim(t, "      gates:\n        - {metric: latency, max_increase: 0.5}\n", nil, 42)
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	s.window(2000, healthy, 0)
	first := s.status()
	if first.LastCheck == nil {
		t.Fatalf("no check after the first window: %+v", first)
	}
	for range 4 {
		s.tickAfter(2 * time.Second) // 8s: still inside the 10s interval
	}
	if st := s.status(); st.LastCheck == nil || !st.LastCheck.Equal(*first.LastCheck) {
		t.Fatalf("checked again within the interval: last check %v, first %v", st.LastCheck, first.LastCheck)
	}
	s.tickAfter(2 * time.Second) // 10s: due
	st := s.status()
	if st.LastCheck == nil || !st.LastCheck.Equal(first.LastCheck.Add(10*time.Second)) {
		t.Fatalf("last check %v, want one interval after %v", st.LastCheck, first.LastCheck)
	}
	// The second check of the step spends alpha·6/(π²·4): 0.05 → 0.0076.
	var lat *api.GateVerdict
	for i := range st.Gates {
		if st.Gates[i].Gate == "latency" {
			lat = &st.Gates[i]
		}
	}
	if lat == nil || !strings.Contains(lat.Detail, "against 0.0076 (alpha spent per check)") {
		t.Fatalf("latency verdict %+v, want the second check's level 0.0076", lat)
	}
}

// A plan can start again once its previous run ended, promoted or
// aborted; only a running or paused one refuses a start.
func TestStartAgainAfterTheRolloutEnded(t *testing.T) {
	s := newSim(t, "", nil, 43)
	for _, end := range []func(string, string) (api.RolloutStatus, error){s.mgr.Abort, s.mgr.Promote} {
		first, err := s.mgr.Start("chat", "test")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.mgr.Pause("chat", "test"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.mgr.Start("chat", "test"); !errors.Is(err, ErrRunning) {
			t.Fatalf("start while paused: %v, want ErrRunning", err)
		}
		ended, err := end("chat", "test")
		if err != nil {
			t.Fatal(err)
		}
		// After a promotion the canary has everything: a person gives the
		// stable its share back before the plan can run again.
		if _, err := s.ctrl.SetWeights("chat", map[string]int{"stable": 90, "canary": 10}, control.Requester{}); err != nil {
			t.Fatal(err)
		}
		s.now = s.now.Add(time.Second) // a new plan id
		st, err := s.mgr.Start("chat", "test")
		if err != nil || st.Phase != api.PhaseRunning || st.Step != 1 || st.Plan == first.Plan {
			t.Fatalf("start after the rollout was %s: %+v %v, want a new run at step 1", ended.Phase, st, err)
		}
		if _, err := s.mgr.Abort("chat", "test"); err != nil {
			t.Fatal(err)
		}
		s.now = s.now.Add(time.Second)
	}
}

// The audit says what each change was: the start by who started it, a
// step by its number, weight and bake time.
func TestAuditDetailOfStartAndSteps(t *testing.T) {
	s := newSim(t, "", nil, 44)
	if _, err := s.mgr.Start("chat", "alice"); err != nil {
		t.Fatal(err)
	}
	for i := 0; s.status().Step < 2; i++ {
		if i == 100 {
			t.Fatalf("no step in 100 windows: %+v", s.status())
		}
		s.window(2000, healthy, 0)
	}
	details := map[string]string{}
	for _, a := range s.ctrl.Audit(50) {
		if a.Actor == Actor {
			details[a.Action] = a.Detail
		}
	}
	if got := details["rollout_start"]; got != "started (alice)" {
		t.Errorf("start's audit detail %q, want %q", got, "started (alice)")
	}
	if got, want := details["rollout_step"], "step 2 of 3: canary at 50% for 1m0s"; got != want {
		t.Errorf("step's audit detail %q, want %q", got, want)
	}
}

// New fills in the tick: a second unless a positive one is given.
func TestNewDefaultsTheTick(t *testing.T) {
	for given, want := range map[time.Duration]time.Duration{0: time.Second, -time.Second: time.Second, 5 * time.Millisecond: 5 * time.Millisecond} {
		if got := New(Options{Tick: given}).opts.Tick; got != want {
			t.Errorf("tick %v: %v, want %v", given, got, want)
		}
	}
	// Run with the default tick (it would panic on a tick of 0).
	s := newSim(t, "", nil, 45)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := New(Options{Controller: s.ctrl, Results: s.res})
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	<-done
}

// stateController is a Controller whose actor state is set by the test.
type stateController struct {
	cfg   *config.Config
	state json.RawMessage
	ok    bool
}

func (c stateController) Effective() *config.Config { return c.cfg }
func (c stateController) ApplyAutomated(string, control.AutoChange) (api.ChangeResult, error) {
	return api.ChangeResult{}, errors.New("read only")
}
func (c stateController) ActorState(string) (json.RawMessage, bool) { return c.state, c.ok }

// An actor state that is absent, or present but empty, is no rollout
// record, and nothing to warn about; one that is not JSON is warned of.
func TestLoadWithoutAState(t *testing.T) {
	rec, _ := json.Marshal(record{Kind: kind, RolloutStatus: api.RolloutStatus{Plan: "chat@1", Phase: api.PhaseRunning}})
	for _, c := range []struct {
		name  string
		state json.RawMessage
		ok    bool
		found bool
		warn  bool
	}{
		{"absent", nil, false, false, false},
		{"absent, with bytes left over", rec, false, false, false},
		{"empty", json.RawMessage{}, true, false, false},
		{"not JSON", json.RawMessage("{"), true, false, true},
		{"a record", rec, true, true, false},
	} {
		core, logs := observer.New(zapcore.WarnLevel)
		m := New(Options{Controller: stateController{state: c.state, ok: c.ok}, Logger: zap.New(core)})
		got, found := m.load("chat")
		if found != c.found || (found && got.Plan != "chat@1") {
			t.Errorf("%s: %+v %v, want found %v", c.name, got, found, c.found)
		}
		if warned := logs.FilterMessage("rollout state unreadable; ignored").Len() > 0; warned != c.warn {
			t.Errorf("%s: warned %v, want %v", c.name, warned, c.warn)
		}
	}
}
