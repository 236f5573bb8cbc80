package control_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/modelsplit/modelsplit/control"
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
