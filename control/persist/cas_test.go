package persist

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

// Save is compare-and-set on the revision: a save made on a revision
// that is no longer the stored one is ErrConflict and stores nothing.
func TestSaveOnAStaleRevisionConflicts(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	for _, p := range []Persister{
		FilePersister{Path: filepath.Join(t.TempDir(), "state.json")},
		RedisPersister{Client: redisClient(t, srv), Key: "cas:control"},
	} {
		t.Run(p.String(), func(t *testing.T) {
			save := func(rev, prev int64) error { return p.Save(ctx, &live.State{Revision: rev}, prev) }
			if err := save(1, 0); err != nil {
				t.Fatalf("first save on an empty store: %v", err)
			}
			if err := save(2, 0); !errors.Is(err, ErrConflict) {
				t.Fatalf("save on stale revision 0: %v, want ErrConflict", err)
			}
			if rev, _, _ := p.Revision(ctx); rev != 1 {
				t.Fatalf("stored revision %d after a refused save, want 1", rev)
			}
			if err := save(2, 1); err != nil {
				t.Fatalf("save on the stored revision: %v", err)
			}
			if err := save(3, 1); !errors.Is(err, ErrConflict) {
				t.Fatalf("second save on revision 1: %v, want ErrConflict", err)
			}
			if st, err := p.Load(ctx); err != nil || st.Revision != 2 {
				t.Fatalf("Load = %+v, %v; want revision 2", st, err)
			}
		})
	}
}
