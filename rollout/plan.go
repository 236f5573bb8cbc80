package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/modelsplit/modelsplit/config"
)

// Defaults for a plan's unset fields.
const (
	DefaultInterval    = 10 * time.Second
	DefaultMinRequests = 200
	DefaultConfidence  = 0.95
	DefaultSRMPValue   = 0.001
)

// step is one stage of a plan: the canary's percentage, held for bake.
type step struct {
	Weight int
	Bake   time.Duration
}

// schedule turns a plan into its steps. The last step of every strategy
// but blue_green and experiment is followed by the promotion (canary at
// 100%, the others drained).
func schedule(p *config.Rollout) []step {
	switch p.Strategy {
	case "linear":
		var out []step
		for w := p.Linear.Step; w < 100; w += p.Linear.Step {
			out = append(out, step{Weight: w, Bake: p.Linear.Interval.D()})
		}
		return append(out, step{Weight: 100, Bake: p.Linear.Interval.D()})
	case "blue_green":
		return []step{{Weight: 0, Bake: p.BlueGreen.Preview.D()}, {Weight: 100, Bake: p.BlueGreen.RollbackWindow.D()}}
	case "experiment":
		return []step{{Weight: p.Experiment.Weight, Bake: p.Experiment.Duration.D()}}
	default:
		out := make([]step, 0, len(p.Steps))
		for _, s := range p.Steps {
			out = append(out, step{Weight: s.Weight, Bake: s.Bake.D()})
		}
		return out
	}
}

// baselineOf is the plan's baseline: named, or the other variant with the
// most weight in before (ties: config order).
func baselineOf(p *config.Rollout, e *config.Endpoint, before map[string]int) string {
	if p.Baseline != "" {
		return p.Baseline
	}
	best, bw := "", -1
	for _, v := range e.Variants {
		if v.Name != p.Canary && before[v.Name] > bw {
			best, bw = v.Name, before[v.Name]
		}
	}
	return best
}

// stepWeights puts pct percent on the canary and shares the rest among the
// other variants in proportion to their weights before the rollout
// (largest remainder, config order on ties), so a rollout never changes
// the mix among the variants it is not about.
func stepWeights(e *config.Endpoint, canary string, pct int, before map[string]int) (map[string]int, error) {
	out := make(map[string]int, len(e.Variants))
	total := 0
	for _, v := range e.Variants {
		if v.Name != canary {
			total += before[v.Name]
		}
	}
	rest := 100 - pct
	if rest > 0 && total == 0 {
		return nil, fmt.Errorf("no variant other than the canary %q has traffic to keep %d%% on", canary, rest)
	}
	type share struct {
		name string
		rem  int
		idx  int
	}
	var shares []share
	given := 0
	for i, v := range e.Variants {
		if v.Name == canary {
			out[v.Name] = pct
			continue
		}
		if rest == 0 {
			out[v.Name] = 0
			continue
		}
		num := before[v.Name] * rest
		out[v.Name] = num / total
		given += num / total
		if before[v.Name] > 0 {
			shares = append(shares, share{v.Name, num % total, i})
		}
	}
	sort.SliceStable(shares, func(a, b int) bool { return shares[a].rem > shares[b].rem })
	for i := 0; given < rest; i++ {
		out[shares[i%len(shares)].name]++
		given++
	}
	return out, nil
}

// promotedWeights is the canary at 100, every other variant drained.
func promotedWeights(e *config.Endpoint, canary string) map[string]int {
	out := make(map[string]int, len(e.Variants))
	for _, v := range e.Variants {
		out[v.Name] = 0
	}
	out[canary] = 100
	return out
}

// planFingerprint identifies a config plan, so an auto_start plan starts
// once per version of its text rather than again after it finished.
func planFingerprint(p *config.Rollout) string {
	b, err := json.Marshal(p)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
