package persist

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

// Revision reads a long state file's revision from its first bytes, and
// an empty or blank file is no state.
func TestFileRevisionOfLongAndBlankFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	long := `{"revision":12,"endpoints":{"chat":{"weights":{"a":1,"b":2}}},"audit":[{"detail":"` + strings.Repeat("x", 500) + `"}]}`
	for _, c := range []struct {
		name, content string
		rev           int64
		exists        bool
	}{
		{"long", long, 12, true},
		{"long, revision last", `{"audit":[{"detail":"` + strings.Repeat("x", 500) + `"}],"revision":13}`, 13, true},
		{"empty", "", 0, false},
		{"blank", "  \n\t \n", 0, false},
	} {
		file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
		if err := os.WriteFile(file, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		rev, exists, err := FilePersister{Path: file}.Revision(ctx)
		if err != nil || exists != c.exists || rev != c.rev {
			t.Errorf("%s: Revision = %d, %v, %v; want %d, %v", c.name, rev, exists, err, c.rev, c.exists)
		}
	}
}

// One file under two spellings (relative and absolute) has one lock, so
// two persisters of it never save at once.
func TestFileLockIsPerFile(t *testing.T) {
	dir := t.TempDir()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(dir, "state.json")
	rel, err := filepath.Rel(wd, abs)
	if err != nil || filepath.IsAbs(rel) {
		t.Skipf("no relative path from %s to %s", wd, abs)
	}
	unlock := FilePersister{Path: rel}.lock()
	m, _ := fileLocks.Load(abs)
	mu, _ := m.(*sync.Mutex)
	if mu == nil || mu.TryLock() {
		t.Fatalf("the lock of %s (taken through %s) is not held under its absolute path", abs, rel)
	}
	unlock()
	if !mu.TryLock() {
		t.Fatal("the lock is still held after unlock")
	}
	mu.Unlock()
}

// Revision reads the first 64 bytes only, as the Redis save script's
// GETRANGE 0 63 does, so both agree on what is stored: a revision
// readable there is answered without reading the rest (even when the
// rest is damaged), one that ends past it means reading the whole.
func TestRevisionReadsTheHeadOnly(t *testing.T) {
	srv := testredis.Start(t)
	rc := redisClient(t, srv)
	ctx := context.Background()
	dir := t.TempDir()
	// The "," after the revision is byte 63 (the 64th) in one, byte 64 in
	// the other.
	inHead := `{"revision":5` + strings.Repeat(" ", 63-len(`{"revision":5`)) + `, damaged`
	pastHead := `{` + strings.Repeat(" ", 64-len(`{"revision":5`)) + `"revision":5, damaged`
	if inHead[63] != ',' || pastHead[64] != ',' {
		t.Fatal("test layout")
	}
	for i, content := range []string{inHead, pastHead} {
		file := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprint("head:", i)
		rc.Set(ctx, key, content, 0)
		for _, p := range []Persister{FilePersister{Path: file}, RedisPersister{Client: rc, Key: key}} {
			rev, exists, err := p.Revision(ctx)
			saveErr := p.Save(ctx, &live.State{Revision: 6}, 5)
			switch {
			case i == 0 && (err != nil || !exists || rev != 5 || saveErr != nil):
				t.Errorf("%s, revision in the head: %d %v %v, save %v; want 5 and saved over", p, rev, exists, err, saveErr)
			case i == 1 && (!errors.Is(err, ErrNotState) || !errors.Is(saveErr, ErrNotState)):
				t.Errorf("%s, revision past the head: %d %v %v, save %v; want ErrNotState from both", p, rev, exists, err, saveErr)
			}
		}
	}
}
