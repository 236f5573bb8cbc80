package service

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/bandit"

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

// banditResults gives bandits every replica's rewards: with Redis the
// windows each replica adds there (settled a window after they close,
// when every replica has added its part), else this replica's own.
type banditResults struct {
	r      *stats.Recorder
	client redis.UniversalClient
	prefix string
}

func (b banditResults) Settle() time.Duration {
	if b.client == nil {
		return 0
	}
	return 2*b.r.WindowLength() + time.Second
}

func (b banditResults) Rewards(ctx context.Context, endpoint string, since, until time.Time) (map[string]bandit.Arm, time.Time, error) {
	var (
		ws  []stats.Window
		err error
	)
	if b.client != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		ws, err = b.r.MergedWindows(ctx, b.client, b.prefix, endpoint, since)
		if err != nil {
			return nil, since, err
		}
	} else {
		ws = b.r.Windows(endpoint, since)
	}
	arms := map[string]bandit.Arm{}
	through := since
	for _, w := range ws {
		if w.Partial || !w.End.After(since) || w.End.After(until) {
			continue
		}
		for name, c := range w.Variants {
			a := arms[name]
			a.Name = name
			a.N += float64(c.Rewards)
			a.Sum += c.RewardSum
			a.SumSq += c.RewardSumSquares
			arms[name] = a
		}
		if w.End.After(through) {
			through = w.End
		}
	}
	return arms, through, nil
}
