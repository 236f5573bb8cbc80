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
	c := &Controller{opts: opts, log: opts.Logger, state: &State{Endpoints: map[string]*EndpointState{}}, storedRev: -1}
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

func (c *Controller) stateFailed(op string, err error) {
	msg := fmt.Sprintf("%s %s: %v", op, c.opts.Persister, err)
	c.opts.Metrics.ControlStateOK.Set(0)
	if msg == c.stateErr {
		return // logged when it began
	}
	c.stateErr = msg
	c.log.Error("live state store failed; changes stay in force in memory and are retried", zap.String("op", op), zap.Error(err))
}

func (c *Controller) stateOK() {
	c.stateErr = ""
	c.opts.Metrics.ControlStateOK.Set(1)
}

// publishRevisions exports the revision in force and the stored one, so
// a replica that disagrees with the store shows.
func (c *Controller) publishRevisions() {
	stored := c.storedRev
	if c.opts.Persister == nil {
		stored = c.state.Revision
	}
	c.opts.Metrics.ControlStateRevision.WithLabelValues("memory").Set(float64(c.state.Revision))
	c.opts.Metrics.ControlStateRevision.WithLabelValues("store").Set(float64(stored))
}

// Check is the readiness condition for live state: an error while the
// store does not hold the state in force here (a failed save or read, a
// lost state not saved again yet, a stored state that could not be
// applied).
func (c *Controller) Check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stateErr != "" {
		return fmt.Errorf("live state not in sync with the store (revision %d here, %d stored): %s", c.state.Revision, c.storedRev, c.stateErr)
	}
	return nil
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
		st.Revision = max(c.state.Revision, c.storedRev) + 1
		if _, _, err := c.commitLocked(st); errors.Is(err, ErrConflict) {
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

// commitLocked persists st, already applied, and adopts it. A conflict
// (another replica saved first) returns ErrConflict and adopts nothing;
// any other failure keeps st in force (dirty), retried by Run.
func (c *Controller) commitLocked(st *State) (persisted bool, warning string, err error) {
	if c.opts.Persister == nil {
		c.state = st
		return true, "", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	prev := c.storedRev
	if prev < 0 {
		prev = c.state.Revision
	}
	err = c.opts.Persister.Save(ctx, st, prev)
	if errors.Is(err, ErrConflict) {
		return false, "", err
	}
	c.state = st
	if err != nil {
		// Unsaved (the store is down, or an earlier change is unsaved
		// too): in force here, saved by sync when the store allows.
		c.dirty = true
		c.stateFailed("save", err)
		return false, c.stateErr, nil
	}
	c.dirty, c.storedRev = false, st.Revision
	c.stateOK()
	return true, "", nil
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
			if c.opts.Persister != nil {
				c.sync(ctx)
			}
		}
	}
}

// sync compares the stored revision with ours (a read of a few bytes)
// and acts only on a difference: it adopts a newer stored state, saves
// ours when the store lacks it (never saved, or lost: FLUSHALL, an empty
// replacement Redis), and reports a store it cannot read.
func (c *Controller) sync(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	rev, exists, err := c.opts.Persister.Revision(rctx)
	cancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.publishRevisions()
	if err != nil {
		c.storedRev = -1
		if c.stateErr == "" {
			c.stateFailed("load", err)
		}
		return
	}
	c.storedRev = rev
	ours := c.state.Revision
	switch {
	case rev > ours || (c.dirty && rev == ours && exists):
		// Newer elsewhere; or the same revision as our unsaved one, which
		// is ours only if the contents match (adoptLocked checks).
		c.adoptLocked(ctx, false)
	case rev < ours:
		if !c.dirty {
			c.opts.Metrics.ControlStateLost.Inc()
			c.log.Warn("the live-state store lost this replica's state (FLUSHALL, an empty or restored Redis, a replaced file); saving it again",
				zap.String("store", c.opts.Persister.String()), zap.Int64("ours", ours), zap.Int64("stored", rev), zap.Bool("stored_exists", exists))
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.opts.Persister.Save(sctx, c.state, rev)
		cancel()
		if err != nil {
			c.dirty = true
			if c.stateErr == "" || !errors.Is(err, ErrConflict) {
				c.stateFailed("save", err)
			}
			return
		}
		c.dirty, c.storedRev = false, ours
		c.stateOK()
		c.log.Info("live state saved to the store again", zap.Int64("revision", ours))
	case c.stateErr != "" && !c.dirty:
		c.stateOK()
	}
}

// adoptLocked reads the stored state and serves it when it is newer than
// ours (or, with force, whenever it differs). While ours is unsaved,
// theirs wins: it was saved first.
func (c *Controller) adoptLocked(ctx context.Context, force bool) {
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	stored, err := c.opts.Persister.Load(lctx)
	cancel()
	if err != nil {
		c.storedRev = -1
		c.stateFailed("load", err)
		return
	}
	if stored == nil {
		c.storedRev = 0
		return // gone meanwhile: the next sync saves ours
	}
	c.storedRev = stored.Revision
	switch ours := c.state.Revision; {
	case stored.Revision < ours:
		return // older than ours: ours is saved over it (sync, or the change's save)
	case stored.Revision == ours && !force && !c.dirty:
		return
	case stored.Revision == ours && sameState(stored, c.state):
		if c.dirty { // our unsaved change was saved after all (its answer was lost)
			c.dirty = false
			c.stateOK()
		}
		return
	}
	if c.dirty {
		c.log.Warn("another replica saved live state while ours could not be saved; theirs wins",
			zap.Int64("ours", c.state.Revision), zap.Int64("theirs", stored.Revision))
	}
	if c.file == nil {
		c.state, c.dirty = stored, false
		c.stateOK()
		return
	}
	st := stored.clone()
	eff, superseded := effective(c.file, st, c.opts.Now())
	if err := c.opts.Apply(eff); err != nil {
		c.stateFailed("apply", fmt.Errorf("live state revision %d from the store refused; keeping the current config: %w", stored.Revision, err))
		return
	}
	for _, a := range superseded {
		st.audit(a)
	}
	c.state, c.effective, c.dirty = st, eff, false
	c.stateOK()
	c.publishWeights()
	c.log.Info("live state adopted from the store", zap.Int64("revision", stored.Revision))
}

// sameState reports whether two states hold the same content.
func sameState(a, b *State) bool {
	ja, err1 := a.encode()
	jb, err2 := b.encode()
	return err1 == nil && err2 == nil && string(ja) == string(jb)
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

// changeAttempts bounds how often a change is redone on top of another
// replica's state that was saved between our read and our save.
const changeAttempts = 5

// change runs one mutation of the state under the lock: mutate edits a
// copy and returns the audit entry; the result is applied, persisted and
// audited, or nothing happens. It starts from the newest stored state
// (a revision read first), so a change made on another replica a moment
// ago is never overwritten; if another replica saves in between, the
// change is redone on top of that.
func (c *Controller) change(endpoint string, who Requester, mutate func(st *State, e *config.Endpoint, cur map[string]int) (api.AuditEntry, error)) (api.ChangeResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file == nil {
		return api.ChangeResult{}, errors.New("no config loaded yet")
	}
	for attempt := 1; ; attempt++ {
		c.refreshLocked()
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
		entry = boundEntry(entry)
		eff, superseded := effective(c.file, st, entry.Time)
		if err := c.opts.Apply(eff); err != nil {
			c.opts.Metrics.ControlChanges.WithLabelValues(entry.Action, "refused").Inc()
			return api.ChangeResult{}, &RequestError{Status: 422, Msg: "the change was refused by validation: " + err.Error()}
		}
		for _, a := range superseded {
			st.audit(a)
		}
		st.audit(entry)
		st.Revision = max(c.state.Revision, c.storedRev) + 1
		persisted, warning, err := c.commitLocked(st)
		if errors.Is(err, ErrConflict) {
			// Another replica saved first: serve what is in force again,
			// adopt the stored state, and redo the change on top of it.
			_ = c.opts.Apply(c.effective)
			c.adoptLocked(context.Background(), true)
			c.publishRevisions()
			if attempt < changeAttempts {
				continue
			}
			c.opts.Metrics.ControlChanges.WithLabelValues(entry.Action, "refused").Inc()
			return api.ChangeResult{}, conflict("live state kept changing on other replicas (%d attempts); nothing was changed, try again", changeAttempts)
		}
		c.effective = eff
		c.publishWeights()
		c.publishRevisions()
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
}

// refreshLocked reads the stored revision (a few bytes) and adopts a
// newer stored state before a change is made on top of ours. A store
// that cannot be read is left to the save, which reports it.
func (c *Controller) refreshLocked() {
	if c.opts.Persister == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	rev, exists, err := c.opts.Persister.Revision(ctx)
	if err != nil {
		return
	}
	c.storedRev = rev
	switch ours := c.state.Revision; {
	case rev > ours || (c.dirty && rev == ours && exists):
		c.adoptLocked(ctx, false)
	case rev < ours && !c.dirty:
		c.opts.Metrics.ControlStateLost.Inc()
		c.log.Warn("the live-state store lost this replica's state; the change saves it again",
			zap.String("store", c.opts.Persister.String()), zap.Int64("ours", ours), zap.Int64("stored", rev))
	}
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
// the endpoint's whole current weight (at most config.MaxWeight), the
// others 0, so users stored on other variants move too; rollback brings
// them back.
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
		// The whole weight, within what a weight may be: the share is 100%
		// either way, and the result must pass what set-weights checks.
		w[variant] = min(max(total, 1), config.MaxWeight)
		a.After = w
		if err := ValidateWeights(e, w); err != nil {
			return a, err
		}
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
