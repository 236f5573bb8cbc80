package control

import (
	"context"
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
	state     *State
	effective *config.Config
	dirty     bool // state changed but not persisted yet
	stateErr  string

	traffic *traffic
}

// New loads persisted state. A store that cannot be read is not fatal:
// the file's config serves, the failure is logged and counted, and the
// state is read again on the next sync.
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
	c := &Controller{opts: opts, log: opts.Logger, state: &State{Endpoints: map[string]*EndpointState{}}}
	c.traffic = newTraffic(opts.Metrics, opts.Now)
	if opts.Persister != nil {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := opts.Persister.Load(lctx)
		cancel()
		switch {
		case err != nil:
			c.stateFailed("load", err)
		case st != nil:
			c.state = st.clone()
			c.stateOK()
			c.log.Info("live state loaded", zap.String("from", opts.Persister.String()),
				zap.Int64("revision", st.Revision), zap.Int("endpoints", len(st.Endpoints)))
		default:
			c.stateOK()
		}
	} else {
		c.stateOK()
	}
	return c
}

func (c *Controller) stateFailed(op string, err error) {
	c.stateErr = fmt.Sprintf("%s %s: %v", op, c.opts.Persister, err)
	c.opts.Metrics.ControlStateOK.Set(0)
	c.log.Error("live state store failed; changes stay in force in memory and are retried", zap.String("op", op), zap.Error(err))
}

func (c *Controller) stateOK() {
	c.stateErr = ""
	c.opts.Metrics.ControlStateOK.Set(1)
}

// SetFileConfig installs a (re)loaded config file and serves the
// effective config. On error nothing changes.
func (c *Controller) SetFileConfig(file *config.Config) (*config.Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state.clone()
	eff, superseded := effective(file, st, c.opts.Now())
	if err := c.opts.Apply(eff); err != nil {
		return nil, err
	}
	c.file, c.effective = file, eff
	if len(superseded) > 0 {
		for _, a := range superseded {
			st.audit(a)
			c.logAudit(a)
		}
		st.Revision++
		c.commitLocked(st)
	} else {
		c.state = st
	}
	c.publishWeights()
	return eff, nil
}

// Effective is the config in force (file plus live state).
func (c *Controller) Effective() *config.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.effective
}

// commitLocked adopts st and persists it; a failed save keeps st in force
// (dirty) and is retried by Run.
func (c *Controller) commitLocked(st *State) (persisted bool, warning string) {
	prev := c.state.Revision
	c.state = st
	if c.opts.Persister == nil {
		return true, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.opts.Persister.Save(ctx, st, prev)
	if err != nil && c.dirty {
		// An earlier change is still unsaved: the stored revision is
		// older than prev, which is ours, so compare with what is there.
		if cur, lerr := c.opts.Persister.Load(ctx); lerr == nil {
			base := int64(0)
			if cur != nil {
				base = cur.Revision
			}
			if base < st.Revision {
				err = c.opts.Persister.Save(ctx, st, base)
			}
		}
	}
	if err != nil {
		c.dirty = true
		c.stateFailed("save", err)
		return false, c.stateErr
	}
	c.dirty = false
	c.stateOK()
	return true, ""
}

// Run keeps live state in sync until ctx ends: it adopts newer state a
// replica stored (Redis) and retries saves that failed.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.traffic.sample()
			if c.opts.Persister != nil {
				c.sync(ctx)
			}
		}
	}
}

// sync reads the stored state once.
func (c *Controller) sync(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	stored, err := c.opts.Persister.Load(lctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if c.stateErr == "" {
			c.stateFailed("load", err)
		}
		return
	}
	storedRev := int64(0)
	if stored != nil {
		storedRev = stored.Revision
	}
	switch {
	case c.dirty && storedRev <= c.state.Revision:
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.opts.Persister.Save(sctx, c.state, storedRev)
		cancel()
		if err == nil {
			c.dirty = false
			c.stateOK()
			c.log.Info("live state saved after a store outage", zap.Int64("revision", c.state.Revision))
		}
	case stored != nil && storedRev > c.state.Revision:
		if c.dirty {
			c.log.Warn("another replica saved live state while ours could not be saved; theirs wins",
				zap.Int64("ours", c.state.Revision), zap.Int64("theirs", storedRev))
		}
		st := stored.clone()
		if c.file == nil {
			c.state = st
			return
		}
		eff, superseded := effective(c.file, st, c.opts.Now())
		if err := c.opts.Apply(eff); err != nil {
			c.log.Error("live state from the store refused; keeping the current config", zap.Error(err))
			return
		}
		for _, a := range superseded {
			st.audit(a)
		}
		c.state, c.effective, c.dirty = st, eff, false
		c.stateOK()
		c.publishWeights()
		c.log.Info("live state adopted from the store", zap.Int64("revision", storedRev))
	case c.stateErr != "" && !c.dirty:
		c.stateOK()
	}
}

// Requester says who asked for a change (for the audit).
type Requester struct {
	Remote    string
	UserAgent string
}

// RequestError is a change refused because of the request (4xx).
type RequestError struct {
	Status int
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

func badRequest(format string, args ...any) error {
	return &RequestError{Status: 400, Msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &RequestError{Status: 404, Msg: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &RequestError{Status: 409, Msg: fmt.Sprintf(format, args...)}
}

// change runs one mutation of the state under the lock: mutate edits a
// copy and returns the audit entry; the result is applied, persisted and
// audited, or nothing happens.
func (c *Controller) change(endpoint string, who Requester, mutate func(st *State, e *config.Endpoint, cur map[string]int) (api.AuditEntry, error)) (api.ChangeResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file == nil {
		return api.ChangeResult{}, errors.New("no config loaded yet")
	}
	e, ok := c.effective.Endpoint(endpoint)
	if !ok {
		return api.ChangeResult{}, notFound("unknown endpoint %q (endpoints: %s)", endpoint, strings.Join(endpointNames(c.effective), ", "))
	}
	cur := fileWeights(e)
	st := c.state.clone()
	entry, err := mutate(st, e, cur)
	if err != nil {
		c.opts.Metrics.ControlChanges.WithLabelValues(entry.Action, "refused").Inc()
		return api.ChangeResult{}, err
	}
	entry.Time, entry.Endpoint, entry.Remote, entry.UserAgent = c.opts.Now().UTC(), endpoint, who.Remote, who.UserAgent
	eff, superseded := effective(c.file, st, entry.Time)
	if err := c.opts.Apply(eff); err != nil {
		c.opts.Metrics.ControlChanges.WithLabelValues(entry.Action, "refused").Inc()
		return api.ChangeResult{}, &RequestError{Status: 422, Msg: "the change was refused by validation: " + err.Error()}
	}
	for _, a := range superseded {
		st.audit(a)
	}
	st.audit(entry)
	st.Revision++
	c.effective = eff
	persisted, warning := c.commitLocked(st)
	c.publishWeights()
	c.opts.Metrics.ControlChanges.WithLabelValues(entry.Action, "ok").Inc()
	c.logAudit(entry)
	ne, _ := eff.Endpoint(endpoint)
	res := api.ChangeResult{Endpoint: endpoint, Weights: fileWeights(ne), Previous: cur, Audit: entry, Persisted: persisted, Warning: warning}
	for _, s := range ne.Shadows {
		if s.Paused {
			res.Paused = append(res.Paused, s.Name)
		}
	}
	return res, nil
}

func (c *Controller) logAudit(a api.AuditEntry) {
	c.log.Info("live change",
		zap.String("action", a.Action), zap.String("endpoint", a.Endpoint), zap.String("shadow", a.Shadow),
		zap.Any("before", a.Before), zap.Any("after", a.After),
		zap.String("remote", a.Remote), zap.String("user_agent", a.UserAgent), zap.String("detail", a.Detail))
}

// setWeights makes weights the override, remembering cur for rollback.
func setWeights(st *State, e *config.Endpoint, cur, weights map[string]int, file map[string]int, now time.Time) {
	es := st.endpoint(e.Name)
	es.History = append(es.History, cur)
	if n := len(es.History) - maxHistory; n > 0 {
		es.History = es.History[n:]
	}
	if maps.Equal(weights, file) {
		es.Weights, es.Base, es.Since = nil, nil, nil // back to the file: no override
		return
	}
	t := now.UTC()
	es.Weights, es.Base, es.Since = maps.Clone(weights), maps.Clone(file), &t
}

// ValidateWeights checks a full weight set for e and names the problem.
func ValidateWeights(e *config.Endpoint, w map[string]int) error {
	if len(w) == 0 {
		return badRequest(`body: "weights" is required, e.g. {"weights": {%s}}`, exampleWeights(e))
	}
	var problems []string
	total := 0
	for name, v := range w {
		if _, ok := e.Variant(name); !ok {
			problems = append(problems, fmt.Sprintf("weights: unknown variant %q (variants: %s)", name, strings.Join(variantNames(e), ", ")))
			continue
		}
		switch {
		case v < 0:
			problems = append(problems, fmt.Sprintf("weights.%s: must not be negative, got %d", name, v))
		case v > config.MaxWeight:
			problems = append(problems, fmt.Sprintf("weights.%s: must be at most %d, got %d", name, config.MaxWeight, v))
		default:
			total += v
		}
	}
	for _, v := range e.Variants {
		if _, ok := w[v.Name]; !ok {
			problems = append(problems, fmt.Sprintf("weights: variant %q is missing: list every variant (%s), 0 drains one", v.Name, strings.Join(variantNames(e), ", ")))
		}
	}
	if len(problems) == 0 && total == 0 {
		problems = append(problems, "weights: sum to zero: at least one variant needs a positive weight")
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return badRequest("%s", strings.Join(problems, "; "))
	}
	return nil
}

func exampleWeights(e *config.Endpoint) string {
	parts := make([]string, 0, len(e.Variants))
	for _, v := range e.Variants {
		parts = append(parts, fmt.Sprintf("%q: %d", v.Name, v.Weight))
	}
	return strings.Join(parts, ", ")
}

func variantNames(e *config.Endpoint) []string {
	out := make([]string, 0, len(e.Variants))
	for _, v := range e.Variants {
		out = append(out, v.Name)
	}
	return out
}

func endpointNames(cfg *config.Config) []string {
	out := make([]string, 0, len(cfg.Endpoints))
	for _, e := range cfg.Endpoints {
		out = append(out, e.Name)
	}
	return out
}

// fileEndpoint is the endpoint as the config file has it.
func (c *Controller) fileEndpoint(name string) *config.Endpoint {
	e, _ := c.file.Endpoint(name)
	return e
}

// SetWeights replaces an endpoint's weights.
func (c *Controller) SetWeights(endpoint string, weights map[string]int, who Requester) (api.ChangeResult, error) {
	return c.change(endpoint, who, func(st *State, e *config.Endpoint, cur map[string]int) (api.AuditEntry, error) {
		a := api.AuditEntry{Action: "set_weights", Before: cur, After: weights}
		if err := ValidateWeights(e, weights); err != nil {
			return a, err
		}
		setWeights(st, e, cur, weights, fileWeights(c.fileEndpoint(endpoint)), c.opts.Now())
		return a, nil
	})
}

// Promote sends all traffic to one variant (blue-green switch): it gets
// the endpoint's whole current weight, the others 0, so users stored on
// other variants move too; rollback brings them back.
func (c *Controller) Promote(endpoint, variant string, who Requester) (api.ChangeResult, error) {
	return c.change(endpoint, who, func(st *State, e *config.Endpoint, cur map[string]int) (api.AuditEntry, error) {
		a := api.AuditEntry{Action: "promote", Before: cur, Detail: "promoted " + variant}
		if variant == "" {
			return a, badRequest(`body: "variant" is required, e.g. {"variant": %q}`, e.Variants[len(e.Variants)-1].Name)
		}
		if _, ok := e.Variant(variant); !ok {
			return a, badRequest("variant: unknown variant %q (variants: %s)", variant, strings.Join(variantNames(e), ", "))
		}
		total := 0
		for _, w := range cur {
			total += w
		}
		w := make(map[string]int, len(cur))
		for name := range cur {
			w[name] = 0
		}
		w[variant] = max(total, 1)
		a.After = w
		setWeights(st, e, cur, w, fileWeights(c.fileEndpoint(endpoint)), c.opts.Now())
		return a, nil
	})
}

// Rollback restores the weights in force before the last change.
func (c *Controller) Rollback(endpoint string, who Requester) (api.ChangeResult, error) {
	return c.change(endpoint, who, func(st *State, e *config.Endpoint, cur map[string]int) (api.AuditEntry, error) {
		a := api.AuditEntry{Action: "rollback", Before: cur}
		es := st.endpoint(endpoint)
		if len(es.History) == 0 {
			return a, conflict("nothing to roll back: endpoint %q has no earlier weights since its live state began", endpoint)
		}
		prev := es.History[len(es.History)-1]
		es.History = es.History[:len(es.History)-1]
		if err := ValidateWeights(e, prev); err != nil {
			return a, conflict("the previous weights no longer fit the endpoint's variants: %v", err)
		}
		a.After = prev
		file := fileWeights(c.fileEndpoint(endpoint))
		if maps.Equal(prev, file) {
			es.Weights, es.Base, es.Since = nil, nil, nil
		} else {
			t := c.opts.Now().UTC()
			es.Weights, es.Base, es.Since = maps.Clone(prev), file, &t
		}
		return a, nil
	})
}

// Reset drops an endpoint's live overrides: the file is in force again.
func (c *Controller) Reset(endpoint string, who Requester) (api.ChangeResult, error) {
	return c.change(endpoint, who, func(st *State, e *config.Endpoint, cur map[string]int) (api.AuditEntry, error) {
		file := fileWeights(c.fileEndpoint(endpoint))
		a := api.AuditEntry{Action: "reset", Before: cur, After: file, Detail: "back to the config file"}
		es := st.endpoint(endpoint)
		if es.Weights == nil && len(es.Shadows) == 0 {
			return a, conflict("endpoint %q has no live override: the config file is already in force", endpoint)
		}
		if es.Weights != nil {
			es.History = append(es.History, cur)
		}
		es.Weights, es.Base, es.Since, es.Shadows = nil, nil, nil, nil
		return a, nil
	})
}

// SetShadowPaused pauses or resumes a shadow.
func (c *Controller) SetShadowPaused(endpoint, shadow string, paused bool, who Requester) (api.ChangeResult, error) {
	action := "resume"
	if paused {
		action = "pause"
	}
	return c.change(endpoint, who, func(st *State, e *config.Endpoint, _ map[string]int) (api.AuditEntry, error) {
		a := api.AuditEntry{Action: action, Shadow: shadow}
		i := shadowIndex(e, shadow)
		if i < 0 {
			names := make([]string, 0, len(e.Shadows))
			for _, s := range e.Shadows {
				names = append(names, s.Name)
			}
			return a, notFound("endpoint %q has no shadow %q (shadows: %s)", endpoint, shadow, strings.Join(names, ", "))
		}
		fe := c.fileEndpoint(endpoint)
		base := fe.Shadows[shadowIndex(fe, shadow)].Paused
		es := st.endpoint(endpoint)
		if paused == base {
			delete(es.Shadows, shadow) // same as the file: no override
		} else {
			if es.Shadows == nil {
				es.Shadows = map[string]ShadowState{}
			}
			es.Shadows[shadow] = ShadowState{Paused: paused, Base: base}
		}
		return a, nil
	})
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

// publishWeights exports the weights in force.
func (c *Controller) publishWeights() {
	c.opts.Metrics.ControlWeight.Reset()
	for _, e := range c.effective.Endpoints {
		for _, v := range e.Variants {
			c.opts.Metrics.ControlWeight.WithLabelValues(e.Name, v.Name).Set(float64(v.Weight))
		}
	}
}
