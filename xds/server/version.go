package server

import (
	"strconv"
	"sync/atomic"
	"time"
)

// versions hands out snapshot versions "<boot id>-<counter>". The boot id
// is the process start time, so versions never repeat across restarts: a
// client reconnecting with a version it holds from the previous process is
// sent nothing for that version (go-control-plane compares strings), and
// would keep a stale config if the new process reused it
// (docs/envoy-notes.md §3.2).
type versions struct {
	boot string
	n    atomic.Uint64
}

func newVersions(start time.Time) *versions {
	return &versions{boot: strconv.FormatInt(start.UnixNano(), 36)}
}

// next returns a version never returned before by this process or, given
// distinct start times, by any earlier one.
func (v *versions) next() string {
	return v.boot + "-" + strconv.FormatUint(v.n.Add(1), 10)
}
