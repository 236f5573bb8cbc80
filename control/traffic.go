package control

import (
	"time"

	"github.com/modelsplit/modelsplit/stats"
)

// Live traffic shares come from the stats windows: observed requests per
// variant (the observe filter) and decisions per variant (ext_proc and
// RLS), so a status call reports the share over the last minute, not
// since start.

const trafficWindow = time.Minute

type traffic struct {
	st    *stats.Recorder
	now   func() time.Time
	start time.Time // no window reaches before it
}

func newTraffic(st *stats.Recorder, now func() time.Time) *traffic {
	return &traffic{st: st, now: now, start: now()}
}

// trafficSnapshot is the totals since start, read once for a whole
// status answer (every endpoint, or the one asked for).
type trafficSnapshot struct {
	t      *traffic
	now    time.Time
	totals map[string]stats.Totals
}

func (t *traffic) snapshot(only string) trafficSnapshot {
	s := trafficSnapshot{t: t, now: t.now()}
	if only != "" {
		s.totals = map[string]stats.Totals{only: t.st.Totals(only)}
	} else {
		s.totals = t.st.AllTotals()
	}
	return s
}

// windowCounts are one endpoint's per-variant counts over the last
// minute's windows, and its length. Requests are used when any were
// observed in the window, decisions otherwise.
type windowCounts struct {
	source             string
	seconds            float64
	live               map[string]uint64 // variant → count in the window
	requests, decision map[string]uint64 // variant → totals since start
}

func (s trafficSnapshot) window(endpoint string) windowCounts {
	t := s.totals[endpoint]
	w := windowCounts{requests: make(map[string]uint64, len(t.Variants)), decision: make(map[string]uint64, len(t.Variants))}
	for v, c := range t.Variants {
		w.requests[v], w.decision[v] = c.Answered(), c.Decisions
	}
	// Whole windows only: from the first boundary at or after a minute ago.
	length := s.t.st.WindowLength()
	from := s.now.Add(-trafficWindow)
	if b := from.Truncate(length); b.Before(from) {
		from = b.Add(length)
	}
	// Before a minute has passed, the window is what there is (the first
	// window's aligned start can predate the process: nothing was counted
	// before it).
	w.seconds = s.now.Sub(maxTime(from, s.t.start)).Seconds()
	ws := s.t.st.Windows(endpoint, from)
	if cur, ok := s.t.st.Current(endpoint); ok {
		ws = append(ws, cur)
	}
	reqs, decs := map[string]uint64{}, map[string]uint64{}
	var sum uint64
	for _, win := range ws {
		if win.Start.Before(from) {
			continue
		}
		for v, c := range win.Variants {
			reqs[v] += c.Answered()
			decs[v] += c.Decisions
			sum += c.Answered()
		}
	}
	if sum > 0 {
		w.source, w.live = "requests", reqs
		return w
	}
	w.source, w.live = "decisions", decs
	return w
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
