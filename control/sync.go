package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/control/persist"
)

// Keeping live state and its store in step: saving a change, adopting a
// newer state another replica saved, saving ours again when the store
// lost it, and reporting (metrics, readiness) while they differ.

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

// commitLocked persists st, already applied, and adopts it. A conflict
// (another replica saved first) returns ErrConflict and adopts nothing;
// any other failure keeps st in force (dirty), retried by Run.
func (c *Controller) commitLocked(st *live.State) (persisted bool, warning string, err error) {
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
	if errors.Is(err, persist.ErrConflict) {
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
			if c.stateErr == "" || !errors.Is(err, persist.ErrConflict) {
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
	case stored.Revision == ours && stored.Equal(c.state):
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
	st := stored.Clone()
	eff, superseded := live.Effective(c.file, st, c.opts.Now())
	if err := c.opts.Apply(eff); err != nil {
		c.stateFailed("apply", fmt.Errorf("live state revision %d from the store refused; keeping the current config: %w", stored.Revision, err))
		return
	}
	for _, a := range superseded {
		st.Record(a)
	}
	c.state, c.effective, c.dirty = st, eff, false
	c.stateOK()
	c.publishWeights()
	c.log.Info("live state adopted from the store", zap.Int64("revision", stored.Revision))
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
