package persist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/modelsplit/modelsplit/control/live"
)

// FilePersister keeps state in a local JSON file (one replica; several
// controllers of one process may share it, as tests do).
type FilePersister struct{ Path string }

func (f FilePersister) String() string { return "state file " + f.Path }

// fileLocks serialises the compare and the rename of Save per path within
// the process, so two controllers on one file cannot both pass the
// compare. Processes do not share a state file (one replica per file;
// replicas share Redis), so no lock between processes is taken.
var fileLocks sync.Map // cleaned path → *sync.Mutex

func (f FilePersister) lock() func() {
	key := filepath.Clean(f.Path)
	if abs, err := filepath.Abs(key); err == nil {
		key = abs
	}
	m, _ := fileLocks.LoadOrStore(key, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// Load reads the file; a missing or empty file is no state, and one that
// is not a state file is ErrNotState.
func (f FilePersister) Load(context.Context) (*live.State, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	return decode(f.Path, b)
}

// Revision reads the start of the file only.
func (f FilePersister) Revision(ctx context.Context) (int64, bool, error) {
	file, err := os.Open(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	head := make([]byte, headSize)
	n, err := io.ReadFull(file, head)
	file.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return 0, false, err
	}
	if rev, ok := peekRevision(head[:n]); ok {
		return rev, true, nil
	}
	st, err := f.Load(ctx) // not in the usual layout: read it whole
	if err != nil || st == nil {
		return 0, false, err
	}
	return st.Revision, true, nil
}

// Save writes atomically (temp file, fsync, rename), so a crash leaves
// the old or the new state, never half of one, and only while the file's
// revision is still prev (ErrConflict otherwise). It never replaces a
// file that is not a state file (ErrNotState).
func (f FilePersister) Save(ctx context.Context, st *live.State, prev int64) error {
	unlock := f.lock()
	defer unlock()
	rev, _, err := f.Revision(ctx)
	if errors.Is(err, ErrNotState) {
		return fmt.Errorf("refusing to overwrite it: %w", err)
	}
	if err != nil {
		return err
	}
	if rev != prev {
		return ErrConflict
	}
	b, err := st.Encode() // compact JSON: `jq . FILE` shows it indented
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.Path)
	tmp, err := os.CreateTemp(dir, ".modelsplit-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), f.Path)
}
