package bandit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/metrics"
)

// Actor is the audit actor of every bandit change.
const Actor = "bandit"

// kind marks a bandit's record among actor states.
const kind = "bandit"

// draws is the Monte Carlo sample behind each update's probabilities:
// their standard error is at most 0.5/sqrt(draws) = 0.35 points.
const draws = 20_000

// Controller is the live-control side the bandit changes weights through
// (audited, persisted, shared with replicas).
type Controller interface {
	Effective() *config.Config
	ApplyAutomated(endpoint string, ch control.AutoChange) (api.ChangeResult, error)
	ActorState(endpoint string) (json.RawMessage, bool)
}

// Lease decides which replica updates the bandits (the rollout lease).
type Lease interface {
	Hold(ctx context.Context) (bool, error)
	ID() string
}

// Results gives each arm's rewards over settled windows: those that end
// after since and no later than until. With replicas they are summed over
// every replica (each adds its windows to Redis), so the driver sees them
// all. through is the end of the last window included (since if none).
type Results interface {
	Rewards(ctx context.Context, endpoint string, since, until time.Time) (arms map[string]Arm, through time.Time, err error)
	// Settle is how long after a window ends its counts are complete.
	Settle() time.Duration
}

// Options configures a Manager.
type Options struct {
	Controller Controller
	Results    Results
	Lease      Lease // nil: this replica always drives
	Logger     *zap.Logger
	Metrics    *metrics.Metrics
	Now        func() time.Time
}

// Manager updates every bandit endpoint's weights on its interval.
type Manager struct {
	opts    Options
	log     *zap.Logger
	mu      sync.Mutex
	driving bool
}

// record is a bandit's persisted state (live control's actor state).
type record struct {
	// Kind is "bandit": live control keeps one actor state per endpoint,
	// and a rollout's is not ours to read or end.
	Kind       string         `json:"kind"`
	Plan       string         `json:"plan"`
	Started    time.Time      `json:"started"`
	Updates    int            `json:"updates"`
	Through    time.Time      `json:"through"` // rewards counted up to here
	Arms       []Arm          `json:"arms"`
	ProbBest   []float64      `json:"prob_best"`
	Weights    map[string]int `json:"weights"`
	Before     map[string]int `json:"before"` // weights when the bandit started
	LastUpdate time.Time      `json:"last_update"`
	NextUpdate time.Time      `json:"next_update"`
	Warmup     bool           `json:"warmup"`
}

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
	return &Manager{opts: opts, log: opts.Logger}
}

// Run updates bandits every second until ctx ends (a bandit's own
// interval decides when it changes).
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		m.Tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick updates the bandits that are due (driver only). Tests call it.
func (m *Manager) Tick(ctx context.Context) {
	if l := m.opts.Lease; l != nil {
		held, err := l.Hold(ctx)
		if err != nil || !held {
			return
		}
	}
	cfg := m.opts.Controller.Effective()
	if cfg == nil {
		return
	}
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		rec, ok := m.load(e.Name)
		switch {
		case e.Bandit != nil && !ok:
			if err := m.start(e); err != nil {
				m.log.Warn("bandit could not start", zap.String("endpoint", e.Name), zap.Error(err))
			}
		case e.Bandit != nil && !m.opts.Now().Before(rec.NextUpdate):
			if err := m.update(ctx, e, rec); err != nil {
				m.log.Warn("bandit update failed; retried at its next interval", zap.String("endpoint", e.Name), zap.Error(err))
			}
		case e.Bandit == nil && ok && rec.Plan != "":
			m.stop(e, rec)
		}
	}
}

func (m *Manager) load(endpoint string) (*record, bool) {
	raw, ok := m.opts.Controller.ActorState(endpoint)
	if !ok || len(raw) == 0 {
		return nil, false
	}
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil || rec.Plan == "" || rec.Kind != kind {
		return nil, false
	}
	return &rec, true
}

func intervalOf(b *config.Bandit) time.Duration {
	if d := b.Interval.D(); d > 0 {
		return d
	}
	return config.DefaultBanditInterval.D()
}

// arms are the endpoint's bandit arms (the control arm aside), in config
// order, with the control's name ("" without one).
func arms(e *config.Endpoint) (names []string, control string) {
	if c := e.Bandit.Control; c != nil {
		control = c.Variant
	}
	for _, v := range e.Variants {
		if v.Name != control {
			names = append(names, v.Name)
		}
	}
	return names, control
}

// weightsFor turns the bandit arms' probabilities into weights (basis
// points, summing to 10,000) with the floor and the control's share.
func weightsFor(e *config.Endpoint, pbest []float64) map[string]int {
	names, control := arms(e)
	share := 100.0
	if control != "" {
		share -= e.Bandit.Control.Weight
	}
	shares := Allocate(pbest, e.Bandit.FloorPercent(), share)
	if control != "" {
		shares = append(shares, e.Bandit.Control.Weight)
		names = append(names, control)
	}
	basis := Basis(shares)
	out := make(map[string]int, len(names))
	for i, n := range names {
		out[n] = basis[i]
	}
	return out
}

func (m *Manager) start(e *config.Endpoint) error {
	now := m.opts.Now().UTC()
	names, _ := arms(e)
	rec := &record{Kind: kind, Plan: e.Name + "@" + now.Format("20060102T150405.000Z"), Started: now, Through: now,
		Before: currentWeights(e), Warmup: true, NextUpdate: now.Add(intervalOf(e.Bandit))}
	for _, n := range names {
		rec.Arms = append(rec.Arms, Arm{Name: n})
	}
	equal := make([]float64, len(names))
	for i := range equal {
		equal[i] = 1 / float64(len(names))
	}
	rec.ProbBest, rec.Weights = equal, weightsFor(e, equal)
	return m.apply(e, rec, "bandit_start", "started: equal weights until the warm-up ends")
}

func currentWeights(e *config.Endpoint) map[string]int {
	w := make(map[string]int, len(e.Variants))
	for _, v := range e.Variants {
		w[v.Name] = v.Weight
	}
	return w
}

// update adds the rewards of the windows settled since the last update
// and, after the warm-up, puts weights proportional to each arm's
// probability of being best in force.
func (m *Manager) update(ctx context.Context, e *config.Endpoint, rec *record) error {
	now := m.opts.Now().UTC()
	b := e.Bandit
	rec.NextUpdate = now.Add(intervalOf(b))
	if m.opts.Results != nil {
		got, through, err := m.opts.Results.Rewards(ctx, e.Name, rec.Through, now.Add(-m.opts.Results.Settle()))
		if err != nil {
			return err
		}
		rec.Through = through
		for i := range rec.Arms {
			a := got[rec.Arms[i].Name]
			rec.Arms[i].N += a.N
			rec.Arms[i].Sum += a.Sum
			rec.Arms[i].SumSq += a.SumSq
		}
	}
	var total float64
	for _, a := range rec.Arms {
		total += a.N
	}
	rec.Updates++
	rec.LastUpdate = now
	rec.Warmup = now.Before(rec.Started.Add(b.Warmup.D())) || total < float64(b.WarmupRewards) || total == 0
	action, detail := "bandit_update", ""
	if !rec.Warmup {
		// Seeded by plan and update: any replica given the same counts
		// computes the same weights.
		h := fnv.New64a()
		_, _ = h.Write([]byte(rec.Plan))
		rec.ProbBest = ProbBest(rec.Arms, b.Numeric, draws, rand.NewPCG(h.Sum64(), uint64(rec.Updates)))
		rec.Weights = weightsFor(e, rec.ProbBest)
	} else {
		action = "bandit_warmup"
	}
	parts := make([]string, len(rec.Arms))
	for i, a := range rec.Arms {
		parts[i] = fmt.Sprintf("%s: %.0f rewards, mean %.4g, P(best) %.3f", a.Name, a.N, a.Mean(), rec.ProbBest[i])
	}
	detail = strings.Join(parts, "; ")
	return m.apply(e, rec, action, detail)
}

// stop releases an endpoint whose bandit left the config: the weights it
// had before the bandit are back.
func (m *Manager) stop(e *config.Endpoint, rec *record) {
	_, err := m.opts.Controller.ApplyAutomated(e.Name, control.AutoChange{Actor: Actor, Plan: rec.Plan, Step: rec.Updates,
		Action: "bandit_stop", Detail: "the bandit was removed from the config", Weights: rec.Before, ClearState: true, DropOwner: true})
	if err != nil {
		m.log.Warn("bandit stop failed", zap.String("endpoint", e.Name), zap.Error(err))
		return
	}
	m.log.Info("bandit stopped", zap.String("endpoint", e.Name), zap.String("plan", rec.Plan))
}

func (m *Manager) apply(e *config.Endpoint, rec *record, action, detail string) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	plan, updates := rec.Plan, rec.Updates
	_, err = m.opts.Controller.ApplyAutomated(e.Name, control.AutoChange{Actor: Actor, Plan: rec.Plan, Step: rec.Updates,
		Action: action, Detail: detail, Weights: maps.Clone(rec.Weights), State: raw, Owner: "bandit " + rec.Plan,
		Expect: func(cur json.RawMessage) error {
			var c record
			if len(cur) == 0 {
				if updates == 0 && action == "bandit_start" {
					return nil
				}
				return errors.New("the bandit's state is gone (the config file superseded it)")
			}
			if err := json.Unmarshal(cur, &c); err != nil {
				return err
			}
			if c.Kind != kind {
				return fmt.Errorf("the endpoint's automated state is not a bandit's")
			}
			if c.Plan != plan || c.Updates != updates-1 && action != "bandit_start" {
				return fmt.Errorf("the bandit moved on meanwhile (plan %s, update %d)", c.Plan, c.Updates)
			}
			return nil
		}})
	if err != nil {
		return err
	}
	m.publish(e, rec)
	return nil
}

// publish sets the per-arm gauges.
func (m *Manager) publish(e *config.Endpoint, rec *record) {
	mt := m.opts.Metrics
	for i, a := range rec.Arms {
		lo, hi := a.Interval(e.Bandit.Numeric)
		mt.BanditPulls.WithLabelValues(e.Name, a.Name).Set(a.N)
		mt.BanditRewardMean.WithLabelValues(e.Name, a.Name, "mean").Set(a.Mean())
		mt.BanditRewardMean.WithLabelValues(e.Name, a.Name, "lower").Set(lo)
		mt.BanditRewardMean.WithLabelValues(e.Name, a.Name, "upper").Set(hi)
		mt.BanditProbBest.WithLabelValues(e.Name, a.Name).Set(rec.ProbBest[i])
	}
	mt.BanditUpdates.WithLabelValues(e.Name).Inc()
}

// Status is the endpoint's bandit as stored.
func (m *Manager) Status(endpoint string) (api.BanditStatus, error) {
	cfg := m.opts.Controller.Effective()
	if cfg == nil {
		return api.BanditStatus{}, fmt.Errorf("%w %q", ErrUnknownEndpoint, endpoint)
	}
	e, ok := cfg.Endpoint(endpoint)
	if !ok {
		return api.BanditStatus{}, fmt.Errorf("%w %q", ErrUnknownEndpoint, endpoint)
	}
	if e.Bandit == nil {
		return api.BanditStatus{}, fmt.Errorf("%w: endpoint %q has no bandit: add bandit: to it in the config", ErrNoBandit, endpoint)
	}
	rec, ok := m.load(endpoint)
	st := api.BanditStatus{Endpoint: endpoint, Reward: e.Bandit.RewardSource(), Floor: e.Bandit.FloorPercent()}
	if !ok {
		st.Phase = "starting"
		return st, nil
	}
	st.Plan, st.Started, st.Updates, st.Warmup = rec.Plan, rec.Started, rec.Updates, rec.Warmup
	st.Phase = "running"
	if rec.Warmup {
		st.Phase = "warmup"
	}
	if !rec.LastUpdate.IsZero() {
		t := rec.LastUpdate
		st.LastUpdate = &t
	}
	t := rec.NextUpdate
	st.NextUpdate = &t
	inForce := currentWeights(e)
	for i, a := range rec.Arms {
		lo, hi := a.Interval(e.Bandit.Numeric)
		st.Arms = append(st.Arms, api.BanditArm{Name: a.Name, Pulls: uint64(a.N), Mean: a.Mean(), Lower: finite(lo), Upper: finite(hi),
			ProbBest: rec.ProbBest[i], Weight: inForce[a.Name]})
	}
	if c := e.Bandit.Control; c != nil {
		st.Arms = append(st.Arms, api.BanditArm{Name: c.Variant, Control: true, Weight: inForce[c.Variant]})
	}
	return st, nil
}

func finite(x float64) float64 {
	if x > 1e300 || x < -1e300 || x != x {
		return 0
	}
	return x
}

// List is every endpoint's bandit.
func (m *Manager) List() []api.BanditStatus {
	var out []api.BanditStatus
	cfg := m.opts.Controller.Effective()
	if cfg == nil {
		return out
	}
	for i := range cfg.Endpoints {
		if cfg.Endpoints[i].Bandit != nil {
			if st, err := m.Status(cfg.Endpoints[i].Name); err == nil {
				out = append(out, st)
			}
		}
	}
	return out
}

// Errors of the bandit API.
var (
	ErrUnknownEndpoint = errors.New("unknown endpoint")
	ErrNoBandit        = errors.New("no bandit")
)
