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

type trafficPoint struct {
	at        time.Time
	requests  map[[2]string]uint64 // (endpoint, variant) → total
	decisions map[[2]string]uint64
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

// read collects the current totals.
func (t *traffic) read() trafficPoint {
	p := trafficPoint{at: t.now(), requests: totals(t.m.VariantRequests), decisions: totals(t.m.Decisions)}
	return p
}

// totals sums a vector by its endpoint and variant labels.
func totals(c prometheus.Collector) map[[2]string]uint64 {
	out := map[[2]string]uint64{}
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || d.Counter == nil {
			continue
		}
		var k [2]string
		for _, l := range d.Label {
			switch l.GetName() {
			case "endpoint":
				k[0] = l.GetValue()
			case "variant":
				k[1] = l.GetValue()
			}
		}
		out[k] += uint64(d.Counter.GetValue())
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

// window returns per-variant deltas since the oldest kept point, and the
// window's length. Requests are used when any were observed in the
// window, decisions otherwise.
type windowCounts struct {
	source             string
	seconds            float64
	live               map[[2]string]uint64 // delta in the window
	requests, decision map[[2]string]uint64 // totals now
}

func (t *traffic) window(endpoint string) windowCounts {
	now := t.read()
	t.mu.Lock()
	old := t.points[0]
	t.mu.Unlock()
	w := windowCounts{seconds: now.at.Sub(old.at).Seconds(), requests: now.requests, decision: now.decisions}
	delta := func(cur, prev map[[2]string]uint64) (map[[2]string]uint64, uint64) {
		d := map[[2]string]uint64{}
		var sum uint64
		for k, v := range cur {
			if k[0] != endpoint {
				continue
			}
			d[k] = v - min(prev[k], v)
			sum += d[k]
		}
		return d, sum
	}
	if d, sum := delta(now.requests, old.requests); sum > 0 {
		w.source, w.live = "requests", d
		return w
	}
	w.live, _ = delta(now.decisions, old.decisions)
	w.source = "decisions"
	return w
}
