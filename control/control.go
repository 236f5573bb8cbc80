package control

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/control/persist"
	"github.com/modelsplit/modelsplit/metrics"
)

// ShadowReader gives the admin API the compare-mode results
// (*shadow.Manager, through a small adapter in service).
type ShadowReader interface {
	Samples(endpoint, shadow string) ([]api.Sample, bool)
	Stats(endpoint, shadow string) (compared, agreed, errors, dropped uint64, ok bool)
}

// UserCounter counts users per variant (*cohort.Engine).
type UserCounter interface {
	// UsersMany counts the users per variant of each named endpoint, in
	// one store round trip; unknown endpoints are left out.
	UsersMany(ctx context.Context, endpoints []string) (map[string][]int64, error)
}

// Options configures a Controller.
type Options struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// Persister stores live state; nil keeps it in memory only.
	Persister Persister
	// Apply serves a new effective config (control plane, decisions,
	// shadows). An error refuses the change that produced it.
	Apply   func(*config.Config) error
	Users   UserCounter
	Shadows ShadowReader
	// SyncInterval is how often shared state (Redis) is re-read so a
	// change made on another replica applies here; default 1s.
	SyncInterval time.Duration
	Now          func() time.Time
}

// Controller owns the file config, the live state and the effective
// config built from both.
type Controller struct {
	opts Options
	log  *zap.Logger

	mu        sync.Mutex
	file      *config.Config
	state     *live.State
	effective *config.Config
	dirty     bool  // state changed but not persisted yet
	storedRev int64 // revision last seen in the store; -1 unknown
	stateErr  string
	published map[[2]string]int // variant_weight series exported

	traffic *traffic
}

// New loads persisted state. A store that cannot be read is not fatal:
// the file's config serves, the failure is logged and counted, and the
// state is read again on the next sync. (A state file holding something
// else is refused earlier, by the service: see CheckStateFile.)
func New(ctx context.Context, opts Options) *Controller {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Controller{opts: opts, log: opts.Logger, state: live.NewState(), storedRev: -1}
	c.traffic = newTraffic(opts.Metrics.Stats, opts.Now)
	if opts.Persister != nil {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := opts.Persister.Load(lctx)
		cancel()
		switch {
		case err != nil:
			c.stateFailed("load", err)
		case st != nil:
			c.state, c.storedRev = st, st.Revision
			c.stateOK()
			c.log.Info("live state loaded", zap.String("from", opts.Persister.String()),
				zap.Int64("revision", st.Revision), zap.Int("endpoints", len(st.Endpoints)))
		default:
			c.storedRev = 0
			c.stateOK()
		}
	} else {
		c.stateOK()
	}
	c.publishRevisions()
	return c
}

// SetFileConfig installs a (re)loaded config file and serves the
// effective config. On error nothing changes.
func (c *Controller) SetFileConfig(file *config.Config) (*config.Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state.Clone()
	eff, superseded := live.Effective(file, st, c.opts.Now())
	if err := c.opts.Apply(eff); err != nil {
		return nil, err
	}
	c.file, c.effective = file, eff
	if len(superseded) > 0 {
		for _, a := range superseded {
			st.Record(a)
			c.logAudit(a)
		}
		st.Revision = max(c.state.Revision, c.storedRev) + 1
		if _, _, err := c.commitLocked(st); errors.Is(err, persist.ErrConflict) {
			// Another replica saved first (it read the same file, most
			// likely): serve the stored state on top of this file if it
			// is newer; else ours is saved by the next sync.
			c.state, c.dirty = st, true
			c.adoptLocked(context.Background(), true)
		}
	} else {
		c.state = st
	}
	c.publishWeights()
	c.publishRevisions()
	return c.effective, nil
}

// Effective is the config in force (file plus live state).
func (c *Controller) Effective() *config.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.effective
}

// changeAttempts bounds how often a change is redone on top of another
// replica's state that was saved between our read and our save.
const changeAttempts = 5

// change runs one change of the state under the lock: ch edits a copy
// and returns the audit entry; the result is applied, persisted and
// audited, or nothing happens. It starts from the newest stored state
// (a revision read first), so a change made on another replica a moment
// ago is never overwritten; if another replica saves in between
// (persist.ErrConflict), the change is redone on top of that.
func (c *Controller) change(endpoint string, who live.Requester, ch live.Change) (api.ChangeResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file == nil {
		return api.ChangeResult{}, errors.New("no config loaded yet")
	}
	for attempt := 1; ; attempt++ {
		c.refreshLocked()
		e, ok := c.effective.Endpoint(endpoint)
		if !ok {
			return api.ChangeResult{}, live.UnknownEndpoint(c.effective, endpoint)
		}
		fe, _ := c.file.Endpoint(endpoint)
		cur := live.WeightsOf(e)
		st := c.state.Clone()
		entry, err := ch(st, live.Target{Endpoint: e, File: fe, Now: c.opts.Now()})
		if err != nil {
			c.opts.Metrics.ControlChanges.WithLabelValues(entry.Action, "refused").Inc()
			return api.ChangeResult{}, err
		}
		entry.Time, entry.Endpoint, entry.Remote, entry.UserAgent = c.opts.Now().UTC(), endpoint, who.Remote, who.UserAgent
		eff, superseded := live.Effective(c.file, st, entry.Time)
		if err := c.opts.Apply(eff); err != nil {
			c.opts.Metrics.ControlChanges.WithLabelValues(entry.Action, "refused").Inc()
			return api.ChangeResult{}, live.Errorf(live.ErrRejected, "the change was refused by validation: %v", err)
		}
		for _, a := range superseded {
			st.Record(a)
		}
		st.Record(entry)
		entry = st.Audit[len(st.Audit)-1] // as recorded: bounded, maybe merged with the one before
		st.Revision = max(c.state.Revision, c.storedRev) + 1
		persisted, warning, err := c.commitLocked(st)
		if errors.Is(err, persist.ErrConflict) {
			// Another replica saved first: serve what is in force again,
			// adopt the stored state, and redo the change on top of it.
			_ = c.opts.Apply(c.effective)
			c.adoptLocked(context.Background(), true)
			c.publishRevisions()
			if attempt < changeAttempts {
				continue
			}
			c.opts.Metrics.ControlChanges.WithLabelValues(entry.Action, "refused").Inc()
			return api.ChangeResult{}, live.Errorf(live.ErrConflict, "live state kept changing on other replicas (%d attempts); nothing was changed, try again", changeAttempts)
		}
		c.effective = eff
		c.publishWeights()
		c.publishRevisions()
		c.opts.Metrics.ControlChanges.WithLabelValues(entry.Action, "ok").Inc()
		c.logAudit(entry)
		ne, _ := eff.Endpoint(endpoint)
		res := api.ChangeResult{Endpoint: endpoint, Weights: live.WeightsOf(ne), Previous: cur, Audit: entry, Persisted: persisted, Warning: warning}
		for _, s := range ne.Shadows {
			if s.Paused {
				res.Paused = append(res.Paused, s.Name)
			}
		}
		return res, nil
	}
}

func (c *Controller) logAudit(a api.AuditEntry) {
	fields := []zap.Field{zap.String("action", a.Action), zap.String("endpoint", a.Endpoint), zap.String("shadow", a.Shadow),
		zap.Any("before", a.Before), zap.Any("after", a.After),
		zap.String("remote", a.Remote), zap.String("user_agent", a.UserAgent), zap.String("detail", a.Detail)}
	if a.Actor != "" {
		fields = append(fields, zap.String("actor", a.Actor), zap.String("plan", a.Plan), zap.Int("step", a.Step), zap.Int("count", a.Count))
	}
	c.log.Info("live change", fields...)
}

// SetWeights replaces an endpoint's weights.
func (c *Controller) SetWeights(endpoint string, weights map[string]int, who Requester) (api.ChangeResult, error) {
	return c.change(endpoint, who, live.SetWeights(weights))
}

// Promote sends all traffic to one variant (blue-green switch); see
// live.Promote.
func (c *Controller) Promote(endpoint, variant string, who Requester) (api.ChangeResult, error) {
	return c.change(endpoint, who, live.Promote(variant))
}

// Rollback restores the weights in force before the last change.
func (c *Controller) Rollback(endpoint string, who Requester) (api.ChangeResult, error) {
	return c.change(endpoint, who, live.Rollback())
}

// Reset drops an endpoint's live overrides: the file is in force again.
func (c *Controller) Reset(endpoint string, who Requester) (api.ChangeResult, error) {
	return c.change(endpoint, who, live.Reset())
}

// SetShadowPaused pauses or resumes a shadow.
func (c *Controller) SetShadowPaused(endpoint, shadow string, paused bool, who Requester) (api.ChangeResult, error) {
	return c.change(endpoint, who, live.SetShadowPaused(shadow, paused))
}

// Audit returns the newest entries first, at most limit.
func (c *Controller) Audit(limit int) []api.AuditEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.state.Audit)
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]api.AuditEntry, 0, limit)
	for i := n - 1; i >= n-limit; i-- {
		out = append(out, c.state.Audit[i])
	}
	return out
}

// publishWeights exports the weights in force: only the series that
// changed since the last call, so a change costs little with many
// endpoints; series of variants no longer in force are deleted.
func (c *Controller) publishWeights() {
	next := make(map[[2]string]int, len(c.published))
	for _, e := range c.effective.Endpoints {
		for _, v := range e.Variants {
			k := [2]string{e.Name, v.Name}
			next[k] = v.Weight
			if w, ok := c.published[k]; !ok || w != v.Weight {
				c.opts.Metrics.ControlWeight.WithLabelValues(e.Name, v.Name).Set(float64(v.Weight))
			}
		}
	}
	for k := range c.published {
		if _, ok := next[k]; !ok {
			c.opts.Metrics.ControlWeight.DeleteLabelValues(k[0], k[1])
		}
	}
	c.published = next
}
