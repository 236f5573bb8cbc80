package persist

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

func redisClient(t testing.TB, r *testredis.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestStoredLayouts: the revision is read from the first bytes in the
// layouts modelsplit writes (compact, and the indented files of earlier
// releases), from the whole value in any other JSON layout, and content
// that is not a state is never overwritten.
func TestStoredLayouts(t *testing.T) {
	srv := testredis.Start(t)
	rc := redisClient(t, srv)
	ctx := context.Background()
	dir := t.TempDir()
	for _, c := range []struct {
		name, content string
		rev           int64
		notState      bool
	}{
		{"compact", `{"revision":42,"endpoints":{}}`, 42, false},
		{"indented (earlier releases)", "{\n  \"revision\": 7,\n  \"audit\": []\n}\n", 7, false},
		{"revision last", `{"audit": [], "revision": 9}`, 9, false},
		{"only a revision", `{"revision":3}`, 3, false},
		{"yaml", "revision: 4\n", 0, true},
		{"other json", `{"weights": {"a": 1}}`, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			if err := os.WriteFile(file, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			key := "layout:" + c.name
			rc.Set(ctx, key, c.content, 0)
			for _, p := range []Persister{FilePersister{Path: file}, RedisPersister{Client: rc, Key: key}} {
				rev, exists, err := p.Revision(ctx)
				switch {
				case c.notState && !errors.Is(err, ErrNotState):
					t.Errorf("%s: Revision = %d, %v, %v; want ErrNotState", p, rev, exists, err)
				case !c.notState && (err != nil || !exists || rev != c.rev):
					t.Errorf("%s: Revision = %d, %v, %v; want %d", p, rev, exists, err, c.rev)
				}
				st := &live.State{Revision: c.rev + 1}
				err = p.Save(ctx, st, c.rev)
				switch {
				case c.notState && !errors.Is(err, ErrNotState):
					t.Errorf("%s: Save over something else: %v, want ErrNotState", p, err)
				case !c.notState && err != nil:
					t.Errorf("%s: Save on revision %d: %v", p, c.rev, err)
				}
			}
			if got, _ := os.ReadFile(file); c.notState && string(got) != c.content {
				t.Errorf("the file was overwritten: %q", got)
			}
			if got := rc.Get(ctx, key).Val(); c.notState && got != c.content {
				t.Errorf("the key was overwritten: %q", got)
			}
		})
	}
	if err := CheckStateFile(filepath.Join(dir, "missing", "state.json")); err == nil {
		t.Error("CheckStateFile accepts a file in a missing directory")
	}
	if err := CheckStateFile(filepath.Join(dir, "new.json")); err != nil {
		t.Errorf("CheckStateFile refuses a file that does not exist yet: %v", err)
	}
	empty := filepath.Join(dir, "empty.json")
	_ = os.WriteFile(empty, nil, 0o600)
	if err := CheckStateFile(empty); err != nil {
		t.Errorf("CheckStateFile refuses an empty file: %v", err)
	}
}
