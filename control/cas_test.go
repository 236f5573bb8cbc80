package control_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

// raceStore is a store whose first Save lets another replica's change
// land first (as if it saved between our read and our save), and which
// records what each Save answered.
type raceStore struct {
	control.Persister
	first   func()
	once    sync.Once
	answers []error
}

func (s *raceStore) Save(ctx context.Context, st *control.State, prev int64) error {
	s.once.Do(s.first)
	err := s.Persister.Save(ctx, st, prev)
	s.answers = append(s.answers, err)
	return err
}

// Two controllers on one store: a change saved on a stale revision gets
// ErrConflict from the store and is redone on top of the other's change,
// so neither is lost; on the state file and on Redis.
func TestStaleSaveIsRedoneOnTop(t *testing.T) {
	srv := testredis.Start(t)
	for _, store := range []string{"file", "redis"} {
		t.Run(store, func(t *testing.T) {
			var p control.Persister = control.FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}
			if store == "redis" {
				p = control.RedisPersister{Client: redisClient(t, srv), Key: "cas:control"}
			}
			b := newReplica(t, 3, p, 0)
			racy := &raceStore{Persister: p, first: func() {
				if _, err := b.ctl.SetWeights("ep2", map[string]int{"a": 20, "b": 80}, control.Requester{}); err != nil {
					t.Errorf("b's change: %v", err)
				}
			}}
			a := newReplica(t, 3, racy, 0) // starting saves nothing: the first Save is a's change's
			res, err := a.ctl.SetWeights("ep1", map[string]int{"a": 10, "b": 90}, control.Requester{})
			if err != nil || !res.Persisted {
				t.Fatalf("a's change: %v persisted=%v %s", err, res.Persisted, res.Warning)
			}
			if len(racy.answers) != 2 || !errors.Is(racy.answers[0], control.ErrConflict) || racy.answers[1] != nil {
				t.Fatalf("a's saves answered %v, want ErrConflict then success", racy.answers)
			}
			stored, err := p.Load(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for ep, want := range map[string]int{"ep1": 10, "ep2": 20} {
				if es := stored.Endpoints[ep]; es == nil || es.Weights["a"] != want {
					t.Errorf("stored state lost %s a=%d: %+v", ep, want, es)
				}
			}
			if got := a.weights(t, "ep2"); got != "a=20 b=80" {
				t.Errorf("a serves ep2 %s, want b's change adopted", got)
			}
			if n := len(stored.Audit); n != 2 {
				t.Errorf("stored audit has %d entries, want both changes", n)
			}
		})
	}
}

// everRacedStore lets another replica's change land before each of its
// Saves: a change that can never win is refused after changeAttempts (5)
// tries, not redone for ever.
type everRacedStore struct {
	control.Persister
	before  func()
	answers []error
}

func (s *everRacedStore) Save(ctx context.Context, st *control.State, prev int64) error {
	s.before()
	err := s.Persister.Save(ctx, st, prev)
	s.answers = append(s.answers, err)
	return err
}

func TestChangeThatNeverWinsIsRefusedAfterFiveAttempts(t *testing.T) {
	p := control.FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}
	b := newReplica(t, 3, p, 0)
	w := 0
	racy := &everRacedStore{Persister: p, before: func() {
		w++
		if _, err := b.ctl.SetWeights("ep2", map[string]int{"a": w, "b": 100 - w}, control.Requester{}); err != nil {
			t.Errorf("b's change %d: %v", w, err)
		}
	}}
	a := newReplica(t, 3, racy, 0)
	_, err := a.ctl.SetWeights("ep1", map[string]int{"a": 10, "b": 90}, control.Requester{})
	if !errors.Is(err, live.ErrConflict) || !strings.Contains(err.Error(), "(5 attempts)") {
		t.Fatalf("a's change: %v, want a conflict after 5 attempts", err)
	}
	if len(racy.answers) != 5 {
		t.Fatalf("a saved %d times (%v), want 5", len(racy.answers), racy.answers)
	}
	for i, e := range racy.answers {
		if !errors.Is(e, control.ErrConflict) {
			t.Errorf("save %d answered %v, want ErrConflict", i+1, e)
		}
	}
}

// Revisions count the stored states from 1: a fresh store's first change
// is revision 1, the next 2.
func TestRevisionsCountFromOne(t *testing.T) {
	p := control.FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}
	a := newReplica(t, 3, p, 0)
	for want := int64(1); want <= 2; want++ {
		if _, err := a.ctl.SetWeights("ep1", map[string]int{"a": int(10 * want), "b": 100 - int(10*want)}, control.Requester{}); err != nil {
			t.Fatal(err)
		}
		st, err := p.Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Revision != want {
			t.Errorf("after change %d the stored revision is %d", want, st.Revision)
		}
	}
}
