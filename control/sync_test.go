package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// faultStore is a real store with faults switched on by the test: down
// (every call fails, as a store that cannot be reached does), a Save whose
// answer is lost after it stored the state, and a hook run before the
// next Save (another replica saving in between). It counts whole reads
// (Load) and Save answers.
type faultStore struct {
	Persister
	mu         sync.Mutex
	down       bool
	loseAnswer bool   // the next Save stores, then fails
	beforeSave func() // run (once) before the next Save
	loads      int
	answers    []error
}

var errDown = errors.New("store unreachable")

func (s *faultStore) set(f func(s *faultStore)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *faultStore) isDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

func (s *faultStore) Load(ctx context.Context) (*live.State, error) {
	s.mu.Lock()
	s.loads++
	s.mu.Unlock()
	if s.isDown() {
		return nil, errDown
	}
	return s.Persister.Load(ctx)
}

func (s *faultStore) Revision(ctx context.Context) (int64, bool, error) {
	if s.isDown() {
		return 0, false, errDown
	}
	return s.Persister.Revision(ctx)
}

func (s *faultStore) Save(ctx context.Context, st *live.State, prev int64) error {
	s.mu.Lock()
	hook, lose, down := s.beforeSave, s.loseAnswer, s.down
	s.beforeSave, s.loseAnswer = nil, false
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	var err error
	switch {
	case down:
		err = errDown
	default:
		err = s.Persister.Save(ctx, st, prev)
		if err == nil && lose {
			err = errors.New("connection reset before the answer")
		}
	}
	s.mu.Lock()
	s.answers = append(s.answers, err)
	s.mu.Unlock()
	return err
}

func (s *faultStore) counts() (loads int, answers []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads, append([]error(nil), s.answers...)
}

// syncController is a Controller over controlConfig and p with its own
// metrics and a log observer; applied counts the configs it served.
func syncController(t *testing.T, p Persister) (*Controller, *metrics.Metrics, *observer.ObservedLogs, *int) {
	t.Helper()
	cfg, err := config.Parse("control.yaml", []byte(controlConfig))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	m := metrics.New()
	applied := new(int)
	var mu sync.Mutex
	c := New(context.Background(), Options{Logger: zap.New(core), Metrics: m, Persister: p, Apply: func(*config.Config) error {
		mu.Lock()
		*applied++
		mu.Unlock()
		return nil
	}})
	if _, err := c.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return c, m, logs, applied
}

func storedRevision(t *testing.T, p Persister) int64 {
	t.Helper()
	st, err := p.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st == nil {
		return 0
	}
	return st.Revision
}

func revisionGauges(m *metrics.Metrics) (memory, store float64) {
	return testutil.ToFloat64(m.ControlStateRevision.WithLabelValues("memory")), testutil.ToFloat64(m.ControlStateRevision.WithLabelValues("store"))
}

// TestSyncSavesLostStateOnce: a sync with nothing changed saves nothing
// and counts no loss; a sync after the store lost the state saves it again
// at once, counts the loss once and is ready at once.
func TestSyncSavesLostStateOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	p := &faultStore{Persister: FilePersister{Path: file}}
	c, m, _, _ := syncController(t, p)
	ctx := context.Background()
	if _, err := c.SetWeights("face", map[string]int{"stable": 50, "canary": 50}, Requester{}); err != nil {
		t.Fatal(err)
	}
	c.sync(ctx)
	if _, answers := p.counts(); len(answers) != 1 {
		t.Errorf("a sync with nothing changed saved: %d saves in all, want the change's 1", len(answers))
	}
	if n := testutil.ToFloat64(m.ControlStateLost); n != 0 {
		t.Errorf("control_state_lost_total = %v with nothing lost", n)
	}

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	c.sync(ctx)
	if rev := storedRevision(t, p); rev != 1 {
		t.Errorf("after the sync that found the state lost: stored revision %d, want 1 (saved again)", rev)
	}
	if err := c.Check(); err != nil {
		t.Errorf("not ready right after the state was saved again: %v", err)
	}
	if ok := testutil.ToFloat64(m.ControlStateOK); ok != 1 {
		t.Errorf("control_state_ok = %v right after the state was saved again", ok)
	}
	if mem, store := revisionGauges(m); mem != 1 || store != 1 {
		t.Errorf("revision gauges memory %v, store %v; want 1 and 1", mem, store)
	}
	c.sync(ctx)
	if n := testutil.ToFloat64(m.ControlStateLost); n != 1 {
		t.Errorf("control_state_lost_total = %v after one loss and two syncs, want 1", n)
	}
	if _, answers := p.counts(); len(answers) != 2 {
		t.Errorf("%d saves in all, want 2 (the change, the save after the loss)", len(answers))
	}
}

// TestSyncReportsAResaveThatConflicts: while this replica saves its lost
// state again, another replica saves first: the conflict shows in
// readiness, and the next sync serves the other replica's state.
func TestSyncReportsAResaveThatConflicts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	p := &faultStore{Persister: FilePersister{Path: file}}
	a, _, _, _ := syncController(t, p)
	b, _, _, _ := syncController(t, FilePersister{Path: file})
	ctx := context.Background()
	if _, err := a.SetWeights("face", map[string]int{"stable": 50, "canary": 50}, Requester{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	p.set(func(s *faultStore) {
		s.beforeSave = func() {
			if _, err := b.SetWeights("face", map[string]int{"stable": 20, "canary": 80}, Requester{}); err != nil {
				t.Errorf("b's change: %v", err)
			}
		}
	})
	a.sync(ctx)
	if _, answers := p.counts(); len(answers) != 2 || !errors.Is(answers[1], ErrConflict) {
		t.Fatalf("a's saves answered %v, want the change's then a conflict", answers)
	}
	if err := a.Check(); err == nil {
		t.Error("ready while the state in force here lost the race to the store")
	}
	a.sync(ctx)
	if err := a.Check(); err != nil {
		t.Errorf("not ready after adopting the stored state: %v", err)
	}
	if got := weightsOf(t, a.Effective()); got["canary"] != 80 {
		t.Errorf("a serves %v, want b's 20/80 (saved first, it wins)", got)
	}
}

// TestSaveWhoseAnswerWasLost: a save that stored the state but whose
// answer was lost leaves the change unconfirmed (not persisted, not
// ready); the next sync finds the same state stored and confirms it,
// without serving it again or logging that another replica won.
func TestSaveWhoseAnswerWasLost(t *testing.T) {
	p := &faultStore{Persister: FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}}
	c, _, logs, applied := syncController(t, p)
	p.set(func(s *faultStore) { s.loseAnswer = true })
	res, err := c.SetWeights("face", map[string]int{"stable": 50, "canary": 50}, Requester{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Persisted || res.Warning == "" {
		t.Errorf("a save without an answer: persisted %v, warning %q; want not persisted, with a warning", res.Persisted, res.Warning)
	}
	if err := c.Check(); err == nil {
		t.Error("ready while the save is unconfirmed")
	}
	if rev := storedRevision(t, p); rev != 1 {
		t.Fatalf("stored revision %d, want 1 (the save did store)", rev)
	}
	served := *applied
	c.sync(context.Background())
	if err := c.Check(); err != nil {
		t.Errorf("not ready after the sync found our state stored: %v", err)
	}
	if *applied != served {
		t.Errorf("the sync served the config again (%d times) though the stored state is ours", *applied-served)
	}
	if n := logs.FilterMessageSnippet("theirs wins").Len(); n != 0 {
		t.Errorf("logged that another replica won (%d times) though the stored state is ours", n)
	}
	if got := weightsOf(t, c.Effective()); got["canary"] != 50 {
		t.Errorf("serves %v, want the change's 50/50", got)
	}
}

// TestUnsavedChangeSavedWhenTheStoreIsBack: a change made while the store
// is down stays in force; once the store is back, the next change builds
// on it without reading the stored state whole, and a sync saves an
// unsaved one; neither counts as a loss.
func TestUnsavedChangeSavedWhenTheStoreIsBack(t *testing.T) {
	p := &faultStore{Persister: FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}}
	c, m, _, _ := syncController(t, p)
	ctx := context.Background()
	set := func(stable int) (persisted bool) {
		t.Helper()
		res, err := c.SetWeights("face", map[string]int{"stable": stable, "canary": 100 - stable}, Requester{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Persisted
	}
	if !set(50) {
		t.Fatal("first change not persisted")
	}
	p.set(func(s *faultStore) { s.down = true })
	if set(40) {
		t.Fatal("a change with the store down persisted")
	}
	p.set(func(s *faultStore) { s.down = false })
	loads, _ := p.counts()
	if !set(30) {
		t.Error("the change after the store came back was not persisted")
	}
	if l, _ := p.counts(); l != loads {
		t.Errorf("the change read the stored state whole %d times; its revision (older than ours) was enough", l-loads)
	}
	if rev := storedRevision(t, p); rev != 3 {
		t.Errorf("stored revision %d, want 3", rev)
	}

	p.set(func(s *faultStore) { s.down = true })
	set(20)
	p.set(func(s *faultStore) { s.down = false })
	c.sync(ctx)
	if rev := storedRevision(t, p); rev != 4 {
		t.Errorf("after a sync with the store back: stored revision %d, want 4 (the unsaved change)", rev)
	}
	if err := c.Check(); err != nil {
		t.Errorf("not ready after the unsaved change was saved: %v", err)
	}
	if n := testutil.ToFloat64(m.ControlStateLost); n != 0 {
		t.Errorf("control_state_lost_total = %v; an unsaved change is not a lost state", n)
	}
}

// TestReadinessAfterReadFailures: a store that cannot be read makes the
// replica not ready until a sync reads it again; a stored state that
// cannot be decoded leaves the stored revision unknown (-1).
func TestReadinessAfterReadFailures(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	p := &faultStore{Persister: FilePersister{Path: file}}
	c, m, _, _ := syncController(t, p)
	ctx := context.Background()
	if _, err := c.SetWeights("face", map[string]int{"stable": 50, "canary": 50}, Requester{}); err != nil {
		t.Fatal(err)
	}
	p.set(func(s *faultStore) { s.down = true })
	c.sync(ctx)
	if err := c.Check(); err == nil {
		t.Error("ready with the store unreadable")
	}
	if _, store := revisionGauges(m); store != -1 {
		t.Errorf("control_state_revision{store} = %v with the store unreadable, want -1", store)
	}
	p.set(func(s *faultStore) { s.down = false })
	c.sync(ctx)
	if err := c.Check(); err != nil {
		t.Errorf("not ready with the store readable again (same revision): %v", err)
	}
	if ok := testutil.ToFloat64(m.ControlStateOK); ok != 1 {
		t.Errorf("control_state_ok = %v with the store readable again", ok)
	}

	// A newer revision whose state cannot be decoded.
	if err := os.WriteFile(file, []byte(`{"revision": 5, "endpoints": 7}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c.sync(ctx)
	if _, store := revisionGauges(m); store != -1 {
		t.Errorf("control_state_revision{store} = %v with the stored state unreadable, want -1", store)
	}
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "(revision 1 here, -1 stored)") {
		t.Errorf("readiness with the stored state unreadable: %v, want revision 1 here, -1 stored", err)
	}
	if got := weightsOf(t, c.Effective()); got["canary"] != 50 {
		t.Errorf("serves %v, want ours (50/50) kept", got)
	}
}

// TestUnsavedStateLosesToTheStored: a change this replica could not save
// (store down) loses to the change another replica saved meanwhile at the
// same revision, at the next sync and at the next change alike; the next
// change is made on top of theirs.
func TestUnsavedStateLosesToTheStored(t *testing.T) {
	for _, next := range []string{"sync", "change"} {
		t.Run(next, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "state.json")
			p := &faultStore{Persister: FilePersister{Path: file}}
			a, _, logs, _ := syncController(t, p)
			b, _, _, _ := syncController(t, FilePersister{Path: file})
			p.set(func(s *faultStore) { s.down = true })
			if res, err := a.SetWeights("face", map[string]int{"stable": 20, "canary": 80}, Requester{}); err != nil || res.Persisted {
				t.Fatalf("a's change with the store down: %v, persisted %v", err, res.Persisted)
			}
			if res, err := b.SetShadowPaused("face", "mirror", true, Requester{}); err != nil || !res.Persisted {
				t.Fatalf("b's change: %v, persisted %v", err, res.Persisted)
			}
			p.set(func(s *faultStore) { s.down = false })
			switch next {
			case "sync":
				a.sync(context.Background())
				if got := weightsOf(t, a.Effective()); got["canary"] != 10 {
					t.Errorf("a serves %v, want the file's 90/10 again (b's state has no weight override)", got)
				}
			case "change":
				if res, err := a.SetShadowPaused("face", "parked", false, Requester{}); err != nil || !res.Persisted {
					t.Fatalf("a's next change: %v, persisted %v", err, res.Persisted)
				}
			}
			if p := pausedOf(t, a.Effective()); !p["mirror"] {
				t.Errorf("a serves mirror unpaused: b's change was not adopted")
			}
			if n := logs.FilterMessageSnippet("theirs wins").Len(); n != 1 {
				t.Errorf("logged 'theirs wins' %d times, want once", n)
			}
			if err := a.Check(); err != nil {
				t.Errorf("a not ready: %v", err)
			}
			st, err := FilePersister{Path: file}.Load(context.Background())
			if err != nil || st == nil {
				t.Fatalf("stored: %v %v", st, err)
			}
			if es := st.Endpoints["face"]; es == nil || es.Shadows["mirror"].Paused != true {
				t.Errorf("the stored state lost b's pause of mirror: %+v", es)
			}
		})
	}
}

// TestChangeStartsFromTheNewestStoredState: a change reads the stored
// revision first (on Redis, within half a second) and adopts another
// replica's newer state before it is made, so its save does not conflict.
// A round trip to Redis slower than that, on a loaded machine, leaves the
// refresh out and the save conflicts and is redone: so the test asks that
// not every one of five rounds conflicted (without the refresh, all do).
func TestChangeStartsFromTheNewestStoredState(t *testing.T) {
	srv := testredis.Start(t)
	rp := RedisPersister{Client: newRedisClient(t, srv), Key: "newest:control"}
	p := &faultStore{Persister: rp}
	a, _, _, _ := syncController(t, p)
	b, _, _, _ := syncController(t, rp)
	const rounds = 5
	clean := 0
	for i := 1; i <= rounds; i++ {
		stable := 10 * i
		if _, err := b.SetWeights("face", map[string]int{"stable": stable, "canary": 100 - stable}, Requester{}); err != nil {
			t.Fatal(err)
		}
		loads0, answers0 := p.counts()
		if res, err := a.SetShadowPaused("face", "mirror", i%2 == 1, Requester{}); err != nil || !res.Persisted {
			t.Fatalf("round %d: a's change: %v, persisted %v", i, err, res.Persisted)
		}
		loads, answers := p.counts()
		if len(answers)-len(answers0) == 1 && answers[len(answers)-1] == nil {
			clean++
			if loads-loads0 != 1 {
				t.Errorf("round %d: a read the stored state whole %d times, want once (to adopt b's)", i, loads-loads0)
			}
		}
		if got := weightsOf(t, a.Effective()); got["stable"] != stable {
			t.Errorf("round %d: a serves %v, want b's stable=%d kept", i, got, stable)
		}
	}
	t.Logf("%d of %d changes saved at the first try", clean, rounds)
	if clean == 0 {
		t.Errorf("all %d changes conflicted on their first save: none adopted b's newer state first", rounds)
	}
}

// TestChangeAfterTheStoreLostTheState: a change on a replica in step with
// the store reads only the revision and counts no loss; a change after the
// store lost the state counts the loss and saves the state again.
func TestChangeAfterTheStoreLostTheState(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	p := &faultStore{Persister: FilePersister{Path: file}}
	c, m, _, _ := syncController(t, p)
	set := func(stable int) {
		t.Helper()
		res, err := c.SetWeights("face", map[string]int{"stable": stable, "canary": 100 - stable}, Requester{})
		if err != nil || !res.Persisted {
			t.Fatalf("set stable=%d: %v, persisted %v %s", stable, err, res.Persisted, res.Warning)
		}
	}
	set(50)
	loads, _ := p.counts()
	set(40)
	if l, _ := p.counts(); l != loads {
		t.Errorf("a change in step with the store read it whole %d times", l-loads)
	}
	if n := testutil.ToFloat64(m.ControlStateLost); n != 0 {
		t.Errorf("control_state_lost_total = %v with nothing lost", n)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	set(30)
	if n := testutil.ToFloat64(m.ControlStateLost); n != 1 {
		t.Errorf("control_state_lost_total = %v after the store lost the state, want 1", n)
	}
	if rev := storedRevision(t, p); rev != 3 {
		t.Errorf("stored revision %d after the change that followed the loss, want 3", rev)
	}
}
