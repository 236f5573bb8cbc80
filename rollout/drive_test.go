package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
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

// remake gives s a new manager on its live control and results, with
// the options set changed.
func (s *sim) remake(set func(*Options)) {
	o := Options{Controller: s.ctrl, Results: s.res, Metrics: s.met, Now: func() time.Time { return s.now }}
	set(&o)
	s.mgr = New(o)
}

// flaky puts a flakyController between s's manager and its live control.
func (s *sim) flaky() *flakyController {
	f := &flakyController{Controller: s.ctrl}
	s.remake(func(o *Options) { o.Controller = f })
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

// expectController captures the compare-and-set check of the last
// automated change and stores nothing.
type expectController struct {
	stateController
	expect func(json.RawMessage) error
}

func (c *expectController) ApplyAutomated(_ string, ch control.AutoChange) (api.ChangeResult, error) {
	c.expect = ch.Expect
	return api.ChangeResult{}, nil
}

// A change is refused when the stored state moved on from the one it was
// made from: a start when another run is running or paused, a step or an
// end when the stored run's plan, step or phase is no longer the one read,
// or when it is gone; another actor's state is never overwritten.
func TestApplyRefusesWhenTheStoredStateMovedOn(t *testing.T) {
	stored := func(plan string, step int, phase string) json.RawMessage {
		b, _ := json.Marshal(record{Kind: kind, RolloutStatus: api.RolloutStatus{Plan: plan, Step: step, Phase: phase}})
		return b
	}
	bandit := json.RawMessage(`{"kind":"bandit","plan":"chat@1","step":2,"phase":"running"}`)
	loaded := &api.RolloutStatus{Plan: "chat@1", Step: 2, Phase: api.PhaseRunning}
	for _, c := range []struct {
		name    string
		loaded  *api.RolloutStatus
		current json.RawMessage
		errHas  string // "" when the change may go ahead
	}{
		{"start, nothing stored", nil, nil, ""},
		{"start, empty state", nil, json.RawMessage{}, ""},
		{"start, unreadable state", nil, json.RawMessage("{"), ""},
		{"start over a running run", nil, stored("chat@0", 1, api.PhaseRunning), "plan chat@0 started meanwhile"},
		{"start over a paused run", nil, stored("chat@0", 1, api.PhasePaused), "plan chat@0 started meanwhile"},
		{"start after a promoted run", nil, stored("chat@0", 3, api.PhasePromoted), ""},
		{"start after a rolled-back run", nil, stored("chat@0", 1, api.PhaseRolledBack), ""},
		{"start over a bandit", nil, bandit, "driven by another automated actor"},
		{"step over a bandit", loaded, bandit, "driven by another automated actor"},
		{"step, state gone", loaded, nil, "state is gone"},
		{"step, state unreadable", loaded, json.RawMessage("{"), "state is gone"},
		{"step, unchanged", loaded, stored("chat@1", 2, api.PhaseRunning), ""},
		{"step, another plan", loaded, stored("chat@2", 2, api.PhaseRunning), "moved on meanwhile (now chat@2 step 2, running)"},
		{"step, another step", loaded, stored("chat@1", 3, api.PhaseRunning), "moved on meanwhile (now chat@1 step 3, running)"},
		{"step, paused meanwhile", loaded, stored("chat@1", 2, api.PhasePaused), "moved on meanwhile (now chat@1 step 2, paused)"},
	} {
		ctrl := &expectController{}
		m := New(Options{Controller: ctrl})
		rec := &record{Kind: kind, RolloutStatus: api.RolloutStatus{Plan: "chat@1", Step: 3, Phase: api.PhaseRunning}}
		if err := m.apply("chat", rec, c.loaded, control.AutoChange{Action: "rollout_step"}); err != nil || ctrl.expect == nil {
			t.Fatalf("%s: apply %v, check set: %v", c.name, err, ctrl.expect != nil)
		}
		err := ctrl.expect(c.current)
		switch {
		case c.errHas == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)):
			t.Errorf("%s: %v, want a refusal with %q", c.name, err, c.errHas)
		}
		if strings.Contains(c.errHas, "started meanwhile") && !errors.Is(err, ErrRunning) {
			t.Errorf("%s: %v is not ErrRunning", c.name, err)
		}
		if strings.Contains(c.errHas, "gone") && !errors.Is(err, ErrNotRunning) {
			t.Errorf("%s: %v is not ErrNotRunning", c.name, err)
		}
	}
}

// fakeLease is a lease whose answer the test sets.
type fakeLease struct {
	mu       sync.Mutex
	held     bool
	err      error
	released int
}

func (l *fakeLease) Hold(context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held, l.err
}

func (l *fakeLease) Release(context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released++
}

func (l *fakeLease) ID() string { return "replica-a" }

func (l *fakeLease) set(held bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held, l.err = held, err
}

// Only the lease holder drives: without the lease (held elsewhere, or
// Redis unreachable, logged at debug level) a replica neither checks nor
// rolls back, and shows no driver; with it, it does. Run gives the lease
// up when it returns.
func TestOnlyTheLeaseHolderDrives(t *testing.T) {
	s := newSim(t, "", nil, 46)
	lease := &fakeLease{}
	core, logs := observer.New(zapcore.DebugLevel)
	s.remake(func(o *Options) { o.Lease, o.Logger = lease, zap.New(core) })
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	bad := map[string]float64{"stable": 0.01, "canary": 0.30}
	for i, c := range []struct {
		held bool
		err  error
	}{{false, nil}, {true, errors.New("redis down")}} {
		lease.set(c.held, c.err)
		for range 5 {
			s.window(2000, bad, 0)
		}
		st := s.status()
		if st.Phase != api.PhaseRunning || st.Driver != "" || st.LastCheck != nil {
			t.Fatalf("case %d: without the lease: %s, driver %q, last check %v; want running, undriven", i, st.Phase, st.Driver, st.LastCheck)
		}
		if got := testutil.ToFloat64(s.met.RolloutDriving); got != 0 {
			t.Errorf("case %d: driving gauge %v without the lease", i, got)
		}
	}
	if n := logs.FilterMessage("rollout lease unavailable; not driving").FilterField(zap.Error(errors.New("redis down"))).Len(); n != 5 {
		t.Errorf("%d debug entries for the unreachable lease, want one per tick (5)", n)
	}
	lease.set(true, nil)
	s.window(2000, bad, 0)
	if st := s.status(); st.Phase != api.PhaseRolledBack {
		t.Fatalf("with the lease: %+v, want rolled back", st)
	}
	if got := testutil.ToFloat64(s.met.RolloutDriving); got != 1 {
		t.Errorf("driving gauge %v with the lease", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.mgr.Run(ctx)
	if lease.released != 1 {
		t.Errorf("Run returned with %d releases of the lease, want 1", lease.released)
	}
}

// auto_start starts a plan at the first tick, once per version of the
// plan: not again after it was aborted, but again when the plan changes,
// and never on a replica without the lease. A plan without auto_start
// waits for a person.
func TestAutoStart(t *testing.T) {
	s := newSim(t, "", nil, 47)
	core, logs := observer.New(zapcore.WarnLevel)
	s.remake(func(o *Options) { o.Logger = zap.New(core) })
	s.tickAfter(time.Second)
	if st := s.status(); st.Phase != "not_started" {
		t.Fatalf("a plan without auto_start: %+v, want not started", st)
	}
	plan := func(minRequests int) {
		yaml := strings.Replace(fmt.Sprintf(planYAML, "      auto_start: true\n"+defaultSteps+defaultGates), "min_requests: 200", fmt.Sprintf("min_requests: %d", minRequests), 1)
		cfg, err := config.Parse("plan.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ctrl.SetFileConfig(cfg); err != nil {
			t.Fatal(err)
		}
	}
	plan(200)
	lease := &fakeLease{}
	s.remake(func(o *Options) { o.Logger, o.Lease = zap.New(core), lease })
	s.tickAfter(time.Second)
	if st := s.status(); st.Phase != "not_started" {
		t.Fatalf("auto_start on a replica without the lease: %+v", st)
	}
	lease.set(true, nil)
	s.tickAfter(time.Second)
	st := s.status()
	if st.Phase != api.PhaseRunning || st.Step != 1 || s.weights()["canary"] != 20 {
		t.Fatalf("auto_start: %+v, want running at step 1", st)
	}
	if _, err := s.mgr.Abort("chat", "test"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s.tickAfter(time.Second)
	}
	if st := s.status(); st.Phase != api.PhaseAborted {
		t.Fatalf("after an abort, the same plan: %+v, want it left aborted", st)
	}
	plan(300)
	s.tickAfter(time.Second)
	if st2 := s.status(); st2.Phase != api.PhaseRunning || st2.Plan == st.Plan {
		t.Fatalf("after the plan changed: %+v, want a new run", st2)
	}
	if n := logs.FilterMessage("rollout auto_start refused").Len(); n != 0 {
		t.Errorf("%d auto_start refusals logged, want none", n)
	}
	// A plan that cannot start (nothing but the canary to keep traffic on)
	// is refused at every tick, with a warning.
	if _, err := s.mgr.Abort("chat", "test"); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("plan.yaml", []byte(strings.Replace(strings.Replace(fmt.Sprintf(planYAML, "      auto_start: true\n"+defaultSteps+defaultGates),
		"weight: 90", "weight: 0", 1), "weight: 10,", "weight: 100,", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	s.tickAfter(time.Second)
	if n := logs.FilterMessage("rollout auto_start refused").Len(); n != 1 {
		t.Errorf("%d auto_start refusals logged for a plan that cannot start, want 1", n)
	}
}

// A plan removed from the config while its rollout runs ends it: aborted
// to the weights from before; an abort that cannot be stored is warned of.
func TestRemovedPlanAbortsTheRollout(t *testing.T) {
	s := newSim(t, "", nil, 48)
	f := s.flaky()
	core, logs := observer.New(zapcore.WarnLevel)
	s.remake(func(o *Options) { o.Controller, o.Logger = f, zap.New(core) })
	if _, err := s.mgr.Start("chat", "test"); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("plan.yaml", []byte(strings.SplitAfter(fmt.Sprintf(planYAML, ""), `backends: ["10.0.0.2:80"]}`)[0]+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := cfg.Endpoint("chat"); e.Rollout != nil {
		t.Fatal("the config still has the plan")
	}
	if _, err := s.ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	f.setFailing(true)
	s.tickAfter(time.Second)
	if n := logs.FilterMessage("rollout abort failed").Len(); n != 1 {
		t.Errorf("%d warnings of the abort that could not be stored, want 1", n)
	}
	f.setFailing(false)
	s.tickAfter(time.Second)
	st := s.status()
	if st.Phase != api.PhaseAborted || st.Reason != "the plan was removed from the config" || s.weights()["canary"] != 10 {
		t.Fatalf("after the plan was removed: %+v, weights %v", st, s.weights())
	}
	if n := logs.FilterMessage("rollout abort failed").Len(); n != 1 {
		t.Errorf("%d warnings of a failed abort after one that was stored, want still 1", n)
	}
}
