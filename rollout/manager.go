package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/metrics"
)

// Actor is the audit actor of every rollout change.
const Actor = "rollout"

// Controller is the live-control side a rollout acts through: its
// changes are audited, persisted (Redis or the state file) and shared
// with the other replicas like a person's.
type Controller interface {
	Effective() *config.Config
	ApplyAutomated(endpoint string, ch control.AutoChange) (api.ChangeResult, error)
	ActorState(endpoint string) (json.RawMessage, bool)
}

// Lease decides which replica drives the rollouts: exactly one at a time.
type Lease interface {
	// Hold keeps or takes the lease; true while this replica drives.
	Hold(ctx context.Context) (bool, error)
	// Release gives the lease up (shutdown), so another replica takes
	// over at once instead of after the lease period.
	Release(ctx context.Context)
	// ID names this replica in the status.
	ID() string
}

// Options configures a Manager.
type Options struct {
	Controller Controller
	Results    Results
	// Lease is nil for a single replica: it always drives.
	Lease   Lease
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time
	// Tick is how often the manager looks at its rollouts (default 1s,
	// and at most a quarter of the shortest gate interval).
	Tick time.Duration
	// Prometheus answers PromQL gates; nil uses HTTP to the plan's
	// prometheus URL.
	Prometheus PromQL
	// Webhook posts events; nil uses HTTP to the plan's webhook URL.
	Webhook func(ctx context.Context, url string, ev Event) error
}

// Error codes of refused actions.
var (
	ErrNoPlan     = errors.New("no rollout plan")
	ErrNotRunning = errors.New("no rollout running")
	ErrRunning    = errors.New("a rollout is already running")
	ErrUnknown    = errors.New("unknown endpoint")
)

// Manager runs the rollouts of every endpoint that has a plan.
type Manager struct {
	opts Options
	log  *zap.Logger
	m    *metrics.Metrics

	mu      sync.Mutex
	runs    map[string]*run // endpoint → evidence of its current plan run (driver only)
	driving bool
}

// record is a rollout's persisted state: what the status shows, plus the
// plan version it runs.
type record struct {
	api.RolloutStatus
	Fingerprint string `json:"fingerprint"`
	// Kind is "rollout": live control keeps one actor state per
	// endpoint, and another actor's (a bandit's) is not ours.
	Kind string `json:"kind"`
}

// kind marks a rollout's record among actor states.
const kind = "rollout"

// New returns a Manager; Run drives it.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Tick <= 0 {
		opts.Tick = time.Second
	}
	if opts.Webhook == nil {
		opts.Webhook = postWebhook
	}
	if opts.Prometheus == nil {
		opts.Prometheus = httpPromQL{}
	}
	return &Manager{opts: opts, log: opts.Logger, m: opts.Metrics, runs: map[string]*run{}}
}

// Run drives rollouts until ctx ends, while this replica holds the lease.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.opts.Tick)
	defer t.Stop()
	defer func() {
		if m.opts.Lease != nil {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			m.opts.Lease.Release(rctx)
			cancel()
		}
	}()
	for {
		m.Tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick does one round: take or keep the lease, then advance, check or
// roll back every running rollout that is due. Tests call it directly.
func (m *Manager) Tick(ctx context.Context) {
	leader := true
	if m.opts.Lease != nil {
		var err error
		leader, err = m.opts.Lease.Hold(ctx)
		if err != nil {
			if ce := m.log.Check(zap.DebugLevel, "rollout lease unavailable; not driving"); ce != nil {
				ce.Write(zap.Error(err))
			}
			leader = false
		}
	}
	m.mu.Lock()
	if leader != m.driving {
		m.driving = leader
		if leader {
			m.log.Info("driving rollouts (lease taken)", zap.String("replica", m.replica()))
			m.m.RolloutDriving.Set(1)
		} else {
			m.log.Info("following rollouts (lease held elsewhere)", zap.String("replica", m.replica()))
			m.m.RolloutDriving.Set(0)
			m.runs = map[string]*run{}
		}
	}
	m.mu.Unlock()
	cfg := m.opts.Controller.Effective()
	if cfg == nil {
		return
	}
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		rec, ok := m.load(e.Name)
		switch {
		case ok && rec.Phase == api.PhaseRunning:
			m.mu.Lock()
			step := rec.Step
			m.mu.Unlock()
			m.m.RolloutStep.WithLabelValues(e.Name).Set(float64(step))
			if leader {
				m.drive(ctx, e, rec)
			}
		case leader && e.Rollout != nil && e.Rollout.AutoStart && (!ok || rec.Fingerprint != planFingerprint(e.Rollout)):
			if _, err := m.start(e, "auto_start in the config"); err != nil {
				m.log.Warn("rollout auto_start refused", zap.String("endpoint", e.Name), zap.Error(err))
			}
		default:
			m.m.RolloutStep.WithLabelValues(e.Name).Set(0)
		}
	}
}

func (m *Manager) replica() string {
	if m.opts.Lease == nil {
		return "local"
	}
	return m.opts.Lease.ID()
}

// load reads an endpoint's rollout record from live state.
func (m *Manager) load(endpoint string) (*record, bool) {
	raw, ok := m.opts.Controller.ActorState(endpoint)
	if !ok || len(raw) == 0 {
		return nil, false
	}
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		m.log.Warn("rollout state unreadable; ignored", zap.String("endpoint", endpoint), zap.Error(err))
		return nil, false
	}
	if rec.Kind != kind {
		return nil, false // another actor's state
	}
	return &rec, true
}

func (m *Manager) endpoint(name string) (*config.Endpoint, error) {
	cfg := m.opts.Controller.Effective()
	if cfg == nil {
		return nil, fmt.Errorf("%w %q: no config loaded", ErrUnknown, name)
	}
	e, ok := cfg.Endpoint(name)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknown, name)
	}
	return e, nil
}

// Status is an endpoint's rollout, as persisted plus this replica's
// latest gate verdicts when it drives.
func (m *Manager) Status(endpoint string) (api.RolloutStatus, error) {
	e, err := m.endpoint(endpoint)
	if err != nil {
		return api.RolloutStatus{}, err
	}
	rec, ok := m.load(endpoint)
	if !ok {
		if e.Rollout == nil {
			return api.RolloutStatus{}, fmt.Errorf("%w for endpoint %q: add rollout: to it in the config", ErrNoPlan, endpoint)
		}
		st := api.RolloutStatus{Endpoint: endpoint, Strategy: strategyOf(e.Rollout), Canary: e.Rollout.Canary,
			Steps: len(schedule(e.Rollout)), Weights: currentWeights(e)}
		st.Phase = "not_started"
		return st, nil
	}
	st := rec.RolloutStatus
	m.mu.Lock()
	if r := m.runs[endpoint]; r != nil && r.plan == st.Plan && m.driving {
		st.Gates = append([]api.GateVerdict(nil), r.verdicts...)
		if !r.lastCheck.IsZero() {
			t := r.lastCheck
			st.LastCheck = &t
		}
		st.Driver = m.replica()
	}
	m.mu.Unlock()
	return st, nil
}

// List is every endpoint's rollout that has a plan or a record.
func (m *Manager) List() []api.RolloutStatus {
	cfg := m.opts.Controller.Effective()
	var out []api.RolloutStatus
	if cfg == nil {
		return out
	}
	for i := range cfg.Endpoints {
		if st, err := m.Status(cfg.Endpoints[i].Name); err == nil {
			out = append(out, st)
		}
	}
	return out
}

func strategyOf(p *config.Rollout) string {
	if p.Strategy == "" {
		return "canary"
	}
	return p.Strategy
}

func currentWeights(e *config.Endpoint) map[string]int {
	w := make(map[string]int, len(e.Variants))
	for _, v := range e.Variants {
		w[v.Name] = v.Weight
	}
	return w
}

// Start begins the endpoint's configured plan at its first step.
func (m *Manager) Start(endpoint, who string) (api.RolloutStatus, error) {
	e, err := m.endpoint(endpoint)
	if err != nil {
		return api.RolloutStatus{}, err
	}
	return m.start(e, who)
}

func (m *Manager) start(e *config.Endpoint, who string) (api.RolloutStatus, error) {
	p := e.Rollout
	if p == nil {
		return api.RolloutStatus{}, fmt.Errorf("%w for endpoint %q: add rollout: to it in the config", ErrNoPlan, e.Name)
	}
	if rec, ok := m.load(e.Name); ok && (rec.Phase == api.PhaseRunning || rec.Phase == api.PhasePaused) {
		return api.RolloutStatus{}, fmt.Errorf("%w on endpoint %q (plan %s, step %d of %d, %s): abort it first", ErrRunning, e.Name, rec.Plan, rec.Step, rec.Steps, rec.Phase)
	}
	before := currentWeights(e)
	steps := schedule(p)
	now := m.opts.Now().UTC()
	rec := record{Kind: kind, Fingerprint: planFingerprint(p), RolloutStatus: api.RolloutStatus{
		Endpoint: e.Name, Plan: e.Name + "@" + now.Format("20060102T150405.000Z"), Strategy: strategyOf(p),
		Phase: api.PhaseRunning, Canary: p.Canary, Baseline: baselineOf(p, e, before),
		Steps: len(steps), Before: before, Started: now,
	}}
	return m.enterStep(e, &rec, nil, 1, "rollout_start", fmt.Sprintf("started (%s)", who))
}

// enterStep puts step n (from 1) in force; loaded is the stored record
// it follows (nil for the start).
func (m *Manager) enterStep(e *config.Endpoint, rec *record, loaded *api.RolloutStatus, n int, action, detail string) (api.RolloutStatus, error) {
	steps := schedule(e.Rollout)
	st := steps[n-1]
	w, err := stepWeights(e, rec.Canary, st.Weight, rec.Before)
	if err != nil {
		return api.RolloutStatus{}, err
	}
	now := m.opts.Now().UTC()
	rec.Step, rec.Weights, rec.StepStarted, rec.Phase = n, w, now, api.PhaseRunning
	rec.BakeRemaining = 0
	due := now.Add(st.Bake)
	rec.NextStepDue = &due
	ramp := rampOf(rec, st.Weight)
	if detail == "" {
		detail = fmt.Sprintf("step %d of %d: %s at %d%% for %s", n, len(steps), rec.Canary, st.Weight, st.Bake)
	}
	if err := m.apply(e.Name, rec, loaded, control.AutoChange{Action: action, Detail: detail, Weights: w, Ramp: ramp,
		Owner: "rollout plan " + rec.Plan}); err != nil {
		return api.RolloutStatus{}, err
	}
	m.mu.Lock()
	m.runs[e.Name] = m.runs[e.Name].next(rec.Plan, n, now)
	m.mu.Unlock()
	return rec.RolloutStatus, nil
}

// apply stores rec with the change, audited as the rollout's. loaded is
// the record the change was made from (nil: none, a start): the change
// is refused if the stored one moved on meanwhile (another replica, a
// person's pause), so nothing is overwritten.
func (m *Manager) apply(endpoint string, rec *record, loaded *api.RolloutStatus, ch control.AutoChange) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ch.Actor, ch.Plan, ch.Step, ch.State = Actor, rec.Plan, rec.Step, raw
	ch.Expect = func(current json.RawMessage) error {
		var cur *record
		if len(current) > 0 {
			cur = &record{}
			if err := json.Unmarshal(current, cur); err != nil {
				cur = nil
			} else if cur.Kind != kind {
				return fmt.Errorf("endpoint %s is driven by another automated actor", endpoint)
			}
		}
		switch {
		case loaded == nil && cur != nil && (cur.Phase == api.PhaseRunning || cur.Phase == api.PhasePaused):
			return fmt.Errorf("%w: plan %s started meanwhile", ErrRunning, cur.Plan)
		case loaded == nil:
			return nil
		case cur == nil:
			return fmt.Errorf("%w: the rollout's state is gone (the config file superseded it)", ErrNotRunning)
		case cur.Plan != loaded.Plan || cur.Step != loaded.Step || cur.Phase != loaded.Phase:
			return fmt.Errorf("the rollout moved on meanwhile (now %s step %d, %s)", cur.Plan, cur.Step, cur.Phase)
		}
		return nil
	}
	if _, err := m.opts.Controller.ApplyAutomated(endpoint, ch); err != nil {
		return fmt.Errorf("%s on %s: %w", ch.Action, endpoint, err)
	}
	m.m.RolloutTransitions.WithLabelValues(endpoint, strings.TrimPrefix(ch.Action, "rollout_")).Inc()
	return nil
}

// Pause holds the rollout at its step; the bake time left is kept.
func (m *Manager) Pause(endpoint, who string) (api.RolloutStatus, error) {
	e, rec, err := m.active(endpoint, api.PhaseRunning)
	if err != nil {
		return api.RolloutStatus{}, err
	}
	left := time.Duration(0)
	if rec.NextStepDue != nil {
		left = max(rec.NextStepDue.Sub(m.opts.Now()), 0)
	}
	loaded := rec.RolloutStatus
	rec.Phase, rec.BakeRemaining, rec.NextStepDue = api.PhasePaused, left.Seconds(), nil
	if err := m.apply(e.Name, rec, &loaded, control.AutoChange{Action: "rollout_pause", Detail: "paused (" + who + ")",
		Ramp: rampOf(rec, rec.Weights[rec.Canary]), Owner: "rollout plan " + rec.Plan}); err != nil {
		return api.RolloutStatus{}, err
	}
	return rec.RolloutStatus, nil
}

// Resume continues a paused rollout with the bake time it had left.
func (m *Manager) Resume(endpoint, who string) (api.RolloutStatus, error) {
	e, rec, err := m.active(endpoint, api.PhasePaused)
	if err != nil {
		return api.RolloutStatus{}, err
	}
	due := m.opts.Now().UTC().Add(time.Duration(rec.BakeRemaining * float64(time.Second)))
	loaded := rec.RolloutStatus
	rec.Phase, rec.BakeRemaining, rec.NextStepDue = api.PhaseRunning, 0, &due
	if err := m.apply(e.Name, rec, &loaded, control.AutoChange{Action: "rollout_resume", Detail: "resumed (" + who + ")",
		Ramp: rampOf(rec, rec.Weights[rec.Canary]), Owner: "rollout plan " + rec.Plan}); err != nil {
		return api.RolloutStatus{}, err
	}
	return rec.RolloutStatus, nil
}

// Promote ends the rollout now with the canary at 100%.
func (m *Manager) Promote(endpoint, who string) (api.RolloutStatus, error) {
	e, rec, err := m.active(endpoint, api.PhaseRunning, api.PhasePaused)
	if err != nil {
		return api.RolloutStatus{}, err
	}
	return m.finish(e, rec, api.PhasePromoted, "rollout_promote", "promoted ("+who+")", promotedWeights(e, rec.Canary))
}

// Abort ends the rollout now with the weights it started from.
func (m *Manager) Abort(endpoint, who string) (api.RolloutStatus, error) {
	e, rec, err := m.active(endpoint, api.PhaseRunning, api.PhasePaused)
	if err != nil {
		return api.RolloutStatus{}, err
	}
	return m.finish(e, rec, api.PhaseAborted, "rollout_abort", "aborted ("+who+")", rec.Before)
}

func (m *Manager) active(endpoint string, phases ...string) (*config.Endpoint, *record, error) {
	e, err := m.endpoint(endpoint)
	if err != nil {
		return nil, nil, err
	}
	rec, ok := m.load(endpoint)
	if !ok {
		return nil, nil, fmt.Errorf("%w on endpoint %q", ErrNotRunning, endpoint)
	}
	for _, p := range phases {
		if rec.Phase == p {
			return e, rec, nil
		}
	}
	return nil, nil, fmt.Errorf("%w on endpoint %q: its rollout %s is %s", ErrNotRunning, endpoint, rec.Plan, rec.Phase)
}

// finish ends a rollout with weights, releasing the endpoint to people.
func (m *Manager) finish(e *config.Endpoint, rec *record, phase, action, reason string, weights map[string]int) (api.RolloutStatus, error) {
	now := m.opts.Now().UTC()
	loaded := rec.RolloutStatus
	rec.Phase, rec.Reason, rec.Ended, rec.NextStepDue, rec.Weights = phase, reason, &now, nil, maps.Clone(weights)
	if err := m.apply(e.Name, rec, &loaded, control.AutoChange{Action: action, Detail: reason, Weights: weights, DropOwner: true}); err != nil {
		return api.RolloutStatus{}, err
	}
	m.mu.Lock()
	delete(m.runs, e.Name)
	m.mu.Unlock()
	m.m.RolloutStep.WithLabelValues(e.Name).Set(0)
	level := zap.InfoLevel
	if phase == api.PhaseRolledBack {
		level = zap.WarnLevel
	}
	m.log.Log(level, "rollout ended", zap.String("endpoint", e.Name), zap.String("plan", rec.Plan),
		zap.String("phase", phase), zap.Int("step", rec.Step), zap.String("reason", reason))
	// The plan may be gone (removed from the config while it ran): no
	// webhook then.
	if p := e.Rollout; p != nil && p.Webhook != "" {
		url := p.Webhook
		ev := Event{Endpoint: e.Name, Plan: rec.Plan, Phase: phase, Step: rec.Step, Reason: reason, Weights: weights, Time: now}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m.opts.Webhook(ctx, url, ev); err != nil {
				m.log.Warn("rollout webhook failed", zap.String("endpoint", e.Name), zap.String("url", url), zap.Error(err))
			}
		}()
	}
	return rec.RolloutStatus, nil
}

// drive advances, checks or rolls back one running rollout (driver only).
func (m *Manager) drive(ctx context.Context, e *config.Endpoint, rec *record) {
	if e.Rollout == nil {
		if _, err := m.finish(e, rec, api.PhaseAborted, "rollout_abort", "the plan was removed from the config", rec.Before); err != nil {
			m.log.Warn("rollout abort failed", zap.String("endpoint", e.Name), zap.Error(err))
		}
		return
	}
	steps := schedule(e.Rollout)
	if rec.Step < 1 || rec.Step > len(steps) {
		m.log.Warn("rollout step out of the plan (the plan changed); aborting", zap.String("endpoint", e.Name), zap.Int("step", rec.Step))
		_, _ = m.finish(e, rec, api.PhaseAborted, "rollout_abort", "the plan in the config no longer has this step", rec.Before)
		return
	}
	now := m.opts.Now()
	m.mu.Lock()
	r := m.runs[e.Name]
	if r == nil || r.plan != rec.Plan || r.step != rec.Step {
		// A restart, a takeover or a step made elsewhere: the evidence is
		// rebuilt from the results still held (see Results).
		r = newRun(rec.Plan, rec.Step, rec.StepStarted)
		m.runs[e.Name] = r
	}
	m.mu.Unlock()
	interval := intervalOf(e.Rollout)
	if now.Before(r.nextCheck) {
		return
	}
	r.nextCheck = now.Add(interval)
	r.collect(m.opts.Results, e.Name, rec)
	verdicts := m.check(ctx, e, rec, r)
	m.mu.Lock()
	r.verdicts, r.lastCheck = verdicts, now
	m.mu.Unlock()
	for _, v := range verdicts {
		if v.Verdict == api.VerdictFail {
			reason := fmt.Sprintf("gate %s failed at step %d: canary %.4g (n=%d) vs baseline %.4g (n=%d)",
				v.Gate, rec.Step, v.Canary, v.CanaryN, v.Baseline, v.BaseN)
			if v.PValue != nil {
				reason += fmt.Sprintf(", p=%.3g", *v.PValue)
			}
			reason += "; " + v.Detail
			m.m.RolloutRollbacks.WithLabelValues(e.Name, v.Gate).Inc()
			if _, err := m.finish(e, rec, api.PhaseRolledBack, "auto_rollback", reason, rec.Before); err != nil {
				m.log.Error("automatic rollback failed; retried at the next check", zap.String("endpoint", e.Name), zap.Error(err))
				r.nextCheck = now
			}
			return
		}
	}
	if rec.NextStepDue != nil && now.Before(*rec.NextStepDue) {
		return
	}
	for _, v := range verdicts {
		if v.Verdict != api.VerdictPass {
			return // the step holds until every gate passes
		}
	}
	if e.Rollout.Strategy == "experiment" && !r.experimentDecided(rec) {
		return
	}
	var err error
	if rec.Step == len(steps) {
		reason := fmt.Sprintf("every step passed its gates (%d steps)", len(steps))
		if r.winnerDetail != "" {
			reason = "the experiment found the canary better: " + r.winnerDetail
		}
		_, err = m.finish(e, rec, api.PhasePromoted, "rollout_promote", reason, promotedWeights(e, rec.Canary))
	} else {
		loaded := rec.RolloutStatus
		_, err = m.enterStep(e, rec, &loaded, rec.Step+1, "rollout_step", "")
	}
	if err != nil {
		m.log.Error("rollout transition failed; retried at the next check", zap.String("endpoint", e.Name), zap.Error(err))
		r.nextCheck = now
	}
}

func intervalOf(p *config.Rollout) time.Duration {
	if d := p.Interval.D(); d > 0 {
		return d
	}
	return DefaultInterval
}

func minRequestsOf(p *config.Rollout) uint64 {
	if p.MinRequests > 0 {
		return uint64(p.MinRequests)
	}
	return DefaultMinRequests
}

// Event is a webhook's JSON body.
type Event struct {
	Endpoint string         `json:"endpoint"`
	Plan     string         `json:"plan"`
	Phase    string         `json:"phase"`
	Step     int            `json:"step"`
	Reason   string         `json:"reason"`
	Weights  map[string]int `json:"weights"`
	Time     time.Time      `json:"time"`
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// rampOf is the ramp a step at canary percent keeps in force: returning
// users move onto the canary as it rises. None at 0% (a preview) or 100%
// (everyone is on the canary anyway).
func rampOf(rec *record, percent int) *config.Ramp {
	if percent <= 0 || percent >= 100 {
		return nil
	}
	return &config.Ramp{Canary: rec.Canary, Base: maps.Clone(rec.Before)}
}
