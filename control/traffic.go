package control

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/modelsplit/modelsplit/metrics"
)

// Live traffic shares come from the process's own counters: observed
// requests per variant (the observe filter) and decisions per variant
// (ext_proc and RLS), sampled every few seconds into a short ring, so a
// status call reports the share over the last minute, not since start.

const (
	trafficEvery  = 5 * time.Second
	trafficWindow = time.Minute
)

// counts holds counter totals by endpoint, then variant.
type counts map[string]map[string]uint64

type trafficPoint struct {
	at        time.Time
	requests  counts
	decisions counts
}

type traffic struct {
	m   *metrics.Metrics
	now func() time.Time

	mu     sync.Mutex
	points []trafficPoint // oldest first, within trafficWindow (plus one)
}

func newTraffic(m *metrics.Metrics, now func() time.Time) *traffic {
	t := &traffic{m: m, now: now}
	t.points = append(t.points, t.read())
	return t
}

// read collects the current totals: one pass over the two counter
// vectors, linear in their series.
func (t *traffic) read() trafficPoint {
	p := trafficPoint{at: t.now(), requests: totals(t.m.VariantRequests), decisions: totals(t.m.Decisions)}
	return p
}

// totals sums a vector by its endpoint and variant labels. It runs over
// every series of the vector, so a status answer calls it once (see
// snapshot), never once per endpoint.
func totals(c prometheus.Collector) counts {
	out := counts{}
	ch := make(chan prometheus.Metric, 1024)
	go func() { c.Collect(ch); close(ch) }()
	var d dto.Metric
	for m := range ch {
		d.Reset()
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		var ep, variant string
		for _, l := range d.Label {
			switch l.GetName() {
			case "endpoint":
				ep = l.GetValue()
			case "variant":
				variant = l.GetValue()
			}
		}
		byVariant := out[ep]
		if byVariant == nil {
			byVariant = make(map[string]uint64, 2)
			out[ep] = byVariant
		}
		byVariant[variant] += uint64(d.Counter.GetValue())
	}
	return out
}

// sample records a point when trafficEvery has passed since the last.
func (t *traffic) sample() {
	now := t.now()
	t.mu.Lock()
	last := t.points[len(t.points)-1].at
	t.mu.Unlock()
	if now.Sub(last) < trafficEvery {
		return
	}
	p := t.read()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.points = append(t.points, p)
	// Keep one point at or before the window's start.
	for len(t.points) > 2 && now.Sub(t.points[1].at) >= trafficWindow {
		t.points = t.points[1:]
	}
}

// trafficSnapshot is the current totals and the window's oldest point,
// read once for a whole status answer (every endpoint), so listing n
// endpoints costs one pass over the counters, not n.
type trafficSnapshot struct {
	now, old trafficPoint
}

func (t *traffic) snapshot() trafficSnapshot {
	now := t.read()
	t.mu.Lock()
	old := t.points[0]
	t.mu.Unlock()
	return trafficSnapshot{now: now, old: old}
}

// windowCounts are one endpoint's per-variant deltas since the oldest
// kept point, and the window's length. Requests are used when any were
// observed in the window, decisions otherwise.
type windowCounts struct {
	source             string
	seconds            float64
	live               map[string]uint64 // variant → delta in the window
	requests, decision map[string]uint64 // variant → totals now
}

func (s trafficSnapshot) window(endpoint string) windowCounts {
	w := windowCounts{seconds: s.now.at.Sub(s.old.at).Seconds(),
		requests: s.now.requests[endpoint], decision: s.now.decisions[endpoint]}
	delta := func(cur, prev map[string]uint64) (map[string]uint64, uint64) {
		d := make(map[string]uint64, len(cur))
		var sum uint64
		for k, v := range cur {
			d[k] = v - min(prev[k], v)
			sum += d[k]
		}
		return d, sum
	}
	if d, sum := delta(w.requests, s.old.requests[endpoint]); sum > 0 {
		w.source, w.live = "requests", d
		return w
	}
	w.live, _ = delta(w.decision, s.old.decisions[endpoint])
	w.source = "decisions"
	return w
}
