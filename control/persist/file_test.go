package persist

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
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
