package bandit

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/metrics"
)

// banditWorld is a manager on a real live control, with a clock.
type banditWorld struct {
	now  time.Time
	ctrl *control.Controller
	res  *fakeResults
	mgr  *Manager
}

func newBanditWorld(t *testing.T, bandit string) *banditWorld {
	t.Helper()
	w := &banditWorld{now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC), res: &fakeResults{}}
	m := metrics.New()
	w.ctrl = control.New(context.Background(), control.Options{Metrics: m, Now: func() time.Time { return w.now }, Apply: func(*config.Config) error { return nil }})
	if _, err := w.ctrl.SetFileConfig(banditConfig(t, bandit)); err != nil {
		t.Fatal(err)
	}
	w.mgr = New(Options{Controller: w.ctrl, Results: w.res, Metrics: m, Now: func() time.Time { return w.now }})
	return w
}

// reward adds n rewards of mean p to each arm, counted one second ago.
func (w *banditWorld) reward(n float64, p map[string]float64) {
	add := map[string]Arm{}
	for arm, x := range p {
		add[arm] = Arm{N: n, Sum: n * x, SumSq: n * x}
	}
	w.res.mu.Lock()
	defer w.res.mu.Unlock()
	w.res.adds = append(w.res.adds, struct {
		at   time.Time
		arms map[string]Arm
	}{w.now.Add(-time.Second), add})
}

// The warm-up lasts until both its time and its rewards are reached; an
// update is due exactly one interval after the last; the status shows
// the phase, the arms and the control arm.
func TestBanditWarmupAndStatus(t *testing.T) {
	w := newBanditWorld(t, "{reward: header, interval: 10s, warmup: 20s, warmup_rewards: 300, control: {variant: a, weight: 10}}")
	st, err := w.mgr.Status("rec")
	if err != nil || st.Phase != "starting" || st.Reward != "header" || len(st.Arms) != 0 {
		t.Fatalf("before the first tick: %+v %v", st, err)
	}
	w.mgr.Tick(context.Background())
	st, _ = w.mgr.Status("rec")
	if st.Phase != "warmup" || st.Updates != 0 || st.LastUpdate != nil || st.NextUpdate == nil || !st.NextUpdate.Equal(w.now.Add(10*time.Second)) {
		t.Fatalf("started: %+v", st)
	}
	if len(st.Arms) != 3 || st.Arms[0].Name != "b" || st.Arms[2].Name != "a" || !st.Arms[2].Control || st.Arms[2].Weight != 1000 ||
		st.Arms[0].Weight != 4500 || st.Arms[0].ProbBest != 0.5 {
		t.Fatalf("arms at the start %+v, want b and c at 4500 each (P(best) 0.5) and the control a at 1000", st.Arms)
	}
	updates := func() int { s, _ := w.mgr.Status("rec"); return s.Updates }
	w.now = w.now.Add(10*time.Second - time.Nanosecond)
	w.mgr.Tick(context.Background())
	if n := updates(); n != 0 {
		t.Fatalf("an update a nanosecond before it was due (%d)", n)
	}
	w.now = w.now.Add(time.Nanosecond)
	w.reward(100, map[string]float64{"b": 0.1, "c": 0.9})
	w.mgr.Tick(context.Background())
	if st, _ := w.mgr.Status("rec"); st.Updates != 1 || !st.Warmup || st.LastUpdate == nil || !st.LastUpdate.Equal(w.now) {
		t.Fatalf("first update at 10s, 200 rewards: %+v, want update 1 in the warm-up", st)
	}
	// At 20s the warm-up time is over, but 300 rewards are not reached yet
	// (200 + 98).
	w.now = w.now.Add(10 * time.Second)
	w.reward(49, map[string]float64{"b": 0.1, "c": 0.9})
	w.mgr.Tick(context.Background())
	if st, _ := w.mgr.Status("rec"); st.Updates != 2 || !st.Warmup || st.Phase != "warmup" {
		t.Fatalf("298 rewards of 300: %+v, want still warming up", st)
	}
	w.now = w.now.Add(10 * time.Second)
	w.reward(1, map[string]float64{"b": 0.1, "c": 0.9})
	w.mgr.Tick(context.Background())
	st, _ = w.mgr.Status("rec")
	if st.Updates != 3 || st.Warmup || st.Phase != "running" {
		t.Fatalf("300 rewards after 30s: %+v, want running", st)
	}
	if b, c := st.Arms[0], st.Arms[1]; b.Pulls != 150 || c.Pulls != 150 || c.ProbBest < 0.99 || c.Weight <= b.Weight || c.Lower > c.Mean || c.Upper < c.Mean {
		t.Fatalf("arms %+v", st.Arms)
	}
	if l := w.mgr.List(); len(l) != 1 || l[0].Endpoint != "rec" {
		t.Fatalf("list %+v", l)
	}
}

// The warm-up needs its time as well as its rewards.
func TestBanditWarmupTime(t *testing.T) {
	w := newBanditWorld(t, "{reward: header, interval: 10s, warmup: 20s}")
	w.mgr.Tick(context.Background())
	w.now = w.now.Add(10 * time.Second)
	w.reward(1000, map[string]float64{"a": 0.1, "b": 0.5, "c": 0.9})
	w.mgr.Tick(context.Background())
	if st, _ := w.mgr.Status("rec"); !st.Warmup {
		t.Fatalf("10s into a 20s warm-up with 3,000 rewards: %+v, want warming up", st)
	}
	w.now = w.now.Add(10 * time.Second)
	w.mgr.Tick(context.Background())
	if st, _ := w.mgr.Status("rec"); st.Warmup {
		t.Fatalf("20s into a 20s warm-up: %+v, want running", st)
	}
}

func TestBanditStatusRefusals(t *testing.T) {
	w := newBanditWorld(t, "{reward: header}")
	if _, err := w.mgr.Status("nope"); !errors.Is(err, ErrUnknownEndpoint) {
		t.Errorf("unknown endpoint: %v", err)
	}
	cfg := banditConfig(t, "{reward: header}")
	cfg.Endpoints[0].Bandit = nil
	if _, err := w.ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := w.mgr.Status("rec"); !errors.Is(err, ErrNoBandit) {
		t.Errorf("no bandit: %v", err)
	}
	if l := w.mgr.List(); len(l) != 0 {
		t.Errorf("list without bandits: %+v", l)
	}
}

// recordingResults remembers the window bounds asked for.
type recordingResults struct {
	settle       time.Duration
	since, until []time.Time
}

func (r *recordingResults) Settle() time.Duration { return r.settle }
func (r *recordingResults) Rewards(_ context.Context, _ string, since, until time.Time) (map[string]Arm, time.Time, error) {
	r.since, r.until = append(r.since, since), append(r.until, until)
	return nil, until, nil
}

// Without an interval the default applies; rewards are read up to the
// settle time before now, from where the last read ended.
func TestBanditIntervalAndSettle(t *testing.T) {
	w := newBanditWorld(t, "{reward: header}")
	res := &recordingResults{settle: 5 * time.Second}
	w.mgr.opts.Results = res
	start := w.now
	w.mgr.Tick(context.Background())
	st, _ := w.mgr.Status("rec")
	every := config.DefaultBanditInterval.D()
	if st.NextUpdate == nil || !st.NextUpdate.Equal(start.Add(every)) {
		t.Fatalf("next update %v, want the default interval %v after the start", st.NextUpdate, every)
	}
	w.now = start.Add(every)
	w.mgr.Tick(context.Background())
	w.now = start.Add(2 * every)
	w.mgr.Tick(context.Background())
	if len(res.until) != 2 || !res.until[0].Equal(start.Add(every-5*time.Second)) || !res.since[0].Equal(start) ||
		!res.since[1].Equal(res.until[0]) || !res.until[1].Equal(start.Add(2*every-5*time.Second)) {
		t.Fatalf("read windows since %v until %v, want from the start to 5s before each update", res.since, res.until)
	}
}

// An update is stored only over the state it was computed from: another
// plan's state, or the same plan moved on, refuses it.
func TestBanditUpdateRefusedOverAnotherState(t *testing.T) {
	w := newBanditWorld(t, "{reward: header, interval: 10s}")
	w.mgr.Tick(context.Background())
	e, _ := w.ctrl.Effective().Endpoint("rec")
	rec, ok := w.mgr.load("rec")
	if !ok || rec.Updates != 0 {
		t.Fatalf("no stored bandit after the start: %+v", rec)
	}
	for _, c := range []struct {
		plan    string
		updates int
		ok      bool
	}{
		{"other@1", 1, false}, // another plan, at the next update
		{rec.Plan, 2, false},  // this plan, an update skipped
		{rec.Plan, 1, true},   // this plan, the next update
		{rec.Plan, 1, false},  // the same update again
	} {
		r := *rec
		r.Plan, r.Updates = c.plan, c.updates
		err := w.mgr.apply(e, &r, "bandit_update", "test")
		if (err == nil) != c.ok {
			t.Errorf("plan %s update %d over %s update %d: %v, want accepted: %v", c.plan, c.updates, rec.Plan, rec.Updates, err, c.ok)
		}
		if err == nil {
			rec.Updates = c.updates
		}
	}
}

// When the bandit leaves the config the release is logged as done, not
// as failed.
func TestBanditStopLogged(t *testing.T) {
	w := newBanditWorld(t, "{reward: header, interval: 10s}")
	core, logs := observer.New(zap.InfoLevel)
	w.mgr.log = zap.New(core)
	w.mgr.Tick(context.Background())
	cfg := banditConfig(t, "{reward: header}")
	cfg.Endpoints[0].Bandit = nil
	if _, err := w.ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	w.mgr.Tick(context.Background())
	if logs.FilterMessage("bandit stopped").Len() != 1 || logs.FilterLevelExact(zap.WarnLevel).Len() != 0 {
		t.Fatalf("logs %v, want bandit stopped and no warning", logs.All())
	}
}

type fakeLease struct {
	held bool
	err  error
}

func (l fakeLease) Hold(context.Context) (bool, error) { return l.held, l.err }
func (l fakeLease) ID() string                         { return "test" }

// Only the lease holder updates bandits: not while another replica holds
// it, nor while the lease cannot be read.
func TestBanditDrivesOnlyWithTheLease(t *testing.T) {
	for _, c := range []struct {
		lease  fakeLease
		drives bool
	}{
		{fakeLease{held: true}, true},
		{fakeLease{held: false}, false},
		{fakeLease{held: true, err: errors.New("redis down")}, false},
		{fakeLease{held: false, err: errors.New("redis down")}, false},
	} {
		w := newBanditWorld(t, "{reward: header}")
		w.mgr.opts.Lease = c.lease
		w.mgr.Tick(context.Background())
		st, _ := w.mgr.Status("rec")
		if started := st.Phase != "starting"; started != c.drives {
			t.Errorf("lease %+v: phase %s, want driving: %v", c.lease, st.Phase, c.drives)
		}
	}
}
