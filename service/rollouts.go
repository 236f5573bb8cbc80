package service

import (
	"time"

	"github.com/modelsplit/modelsplit/rollout"
	"github.com/modelsplit/modelsplit/stats"
)

// rolloutLeasePeriod bounds how long rollouts go undriven when the
// driving replica dies: another takes the lease within one period.
const rolloutLeasePeriod = 5 * time.Second

// statsResults gives rollouts this replica's windowed results. With
// several replicas behind one Envoy fleet, ext_proc streams are spread
// over them at random, so each replica's share of the traffic is an
// unbiased sample: the driver's gates see the true ratios on fewer
// requests (less power, no bias), and see them at once (the results
// merged in Redis arrive a window or two late).
type statsResults struct{ r *stats.Recorder }

func (s statsResults) LatencyBounds() []float64 { return stats.LatencyBuckets[:] }

func (s statsResults) Windows(endpoint string, since time.Time) []rollout.Window {
	ws := s.r.Windows(endpoint, since)
	if cur, ok := s.r.Current(endpoint); ok {
		ws = append(ws, cur)
	}
	out := make([]rollout.Window, 0, len(ws))
	for _, w := range ws {
		rw := rollout.Window{Start: w.Start, End: w.End, Partial: w.Partial, Weights: w.Weights,
			Variants: make(map[string]rollout.VariantCounts, len(w.Variants)), Shadows: make(map[string]rollout.ShadowCounts, len(w.Shadows))}
		for name, c := range w.Variants {
			rw.Variants[name] = rollout.VariantCounts{
				Assigned:  c.Assigned,
				Responses: c.Requests,
				Errors:    c.Responses[stats.Class5xx] + c.Responses[stats.ClassNone],
				Latency:   append([]uint64(nil), c.Latency.Counts[:]...),
			}
		}
		for name, c := range w.Shadows {
			rw.Shadows[name] = rollout.ShadowCounts{Compared: c.Compared, Agreed: c.Agreed}
		}
		out = append(out, rw)
	}
	return out
}
