package persist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/modelsplit/modelsplit/control/live"
)

// Persister stores a live.State.
type Persister interface {
	// Load returns the stored state, or nil when nothing is stored.
	// Content that is not a modelsplit state is an ErrNotState.
	Load(ctx context.Context) (*live.State, error)
	// Revision returns the stored state's revision without reading the
	// whole state (0, false when nothing is stored), so replicas can poll
	// it cheaply and read the state only when it changed.
	Revision(ctx context.Context) (rev int64, exists bool, err error)
	// Save stores st unless the stored revision differs from prev
	// (ErrConflict): another replica changed it first. Nothing stored
	// counts as revision 0.
	Save(ctx context.Context, st *live.State, prev int64) error
	// String names the store in logs and errors.
	String() string
}

// ErrConflict means another replica saved a newer state first.
var ErrConflict = errors.New("live state changed concurrently (another replica saved first)")

// ErrNotState means the store holds something that is not a modelsplit
// live state, which is never overwritten.
var ErrNotState = errors.New("not a modelsplit live state")

// revisionRE reads the revision from the start of a stored state: it is
// the first field live.State.Encode writes.
var revisionRE = regexp.MustCompile(`^\s*\{\s*"revision"\s*:\s*(-?[0-9]{1,18})\s*[,}]`)

// headSize is how much of a stored state Revision reads.
const headSize = 64

func peekRevision(head []byte) (int64, bool) {
	m := revisionRE.FindSubmatch(head)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(m[1]), 10, 64)
	return n, err == nil
}

// decode parses a stored state: a JSON object with a numeric "revision".
// Anything else is ErrNotState. The result is bounded (live.State.Bound).
func decode(where string, b []byte) (*live.State, error) {
	var probe struct {
		Revision *json.Number `json:"revision"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", where, ErrNotState, err)
	}
	if probe.Revision == nil {
		return nil, fmt.Errorf("%s: %w: no \"revision\" field", where, ErrNotState)
	}
	var st live.State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", where, ErrNotState, err)
	}
	st.Bound()
	return &st, nil
}

// CheckStateFile is what serve checks before it uses a state file: the
// file is absent, empty or a modelsplit state, and its directory exists.
// Otherwise the first live change would overwrite someone else's file,
// or every save would fail.
func CheckStateFile(path string) error {
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("%s: its directory: %w", path, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	_, err := FilePersister{Path: path}.Load(context.Background())
	return err
}
