package config

import (
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Rollout is an endpoint's progressive-delivery plan: traffic moves to
// Canary step by step, each step held for its bake time and let through
// only when every gate passes; a failing gate puts the weights back as
// they were before the rollout.
type Rollout struct {
	// Canary is the variant being rolled out. Baseline is the variant it
	// is compared with (default: the other variant with the most weight).
	Canary   string `yaml:"canary"`
	Baseline string `yaml:"baseline"`
	// Strategy is canary (Steps), linear (Linear), blue_green (BlueGreen)
	// or experiment (Experiment). Default canary.
	Strategy   string            `yaml:"strategy"`
	Steps      []RolloutStep     `yaml:"steps"`
	Linear     *LinearRollout    `yaml:"linear"`
	BlueGreen  *BlueGreenRollout `yaml:"blue_green"`
	Experiment *Experiment       `yaml:"experiment"`
	// Interval is how often the gates are checked (default
	// DefaultGateInterval); a failing gate rolls back within one.
	Interval Duration `yaml:"interval"`
	// MinRequests is the smallest number of answered requests each of
	// canary and baseline needs in a step before any verdict (default
	// DefaultMinRequests): a step never advances on missing data.
	MinRequests int           `yaml:"min_requests"`
	Gates       []RolloutGate `yaml:"gates"`
	// AutoStart starts the rollout when the config is loaded; otherwise
	// `modelsplit rollout start` does.
	AutoStart bool `yaml:"auto_start"`
	// Webhook, when set, is POSTed a JSON event on every rollback,
	// promotion and abort.
	Webhook string `yaml:"webhook"`
	// Prometheus is the server PromQL gates query (http://host:9090).
	Prometheus string `yaml:"prometheus"`
}

// RolloutStep is one canary step: Weight percent on the canary for at
// least Bake.
type RolloutStep struct {
	Weight int      `yaml:"weight"`
	Bake   Duration `yaml:"bake"`
}

// LinearRollout adds Step percent to the canary every Interval.
type LinearRollout struct {
	Step     int      `yaml:"step"`
	Interval Duration `yaml:"interval"`
}

// BlueGreenRollout previews the new variant (reachable through the target
// header and the endpoint's shadows, no user traffic) for Preview, then
// switches all traffic to it; for RollbackWindow the old variant's
// clusters stay warm and the gates keep running, so a rollback is instant.
type BlueGreenRollout struct {
	Preview        Duration `yaml:"preview"`
	RollbackWindow Duration `yaml:"rollback_window"`
}

// Experiment holds fixed weights (Weight percent on the canary) for at
// least Duration and until the gates reach a decision, then promotes the
// winner.
type Experiment struct {
	Weight   int      `yaml:"weight"`
	Duration Duration `yaml:"duration"`
}

// RolloutGate is one check made at every interval. Metric is one of
// error_ratio, latency, shadow_agreement, srm or promql.
type RolloutGate struct {
	Metric string `yaml:"metric"`
	// MaxIncrease is the worst the canary may be against the baseline:
	// an absolute error-ratio difference (0.01 = one point) or, for
	// latency, seconds at Quantile.
	MaxIncrease float64 `yaml:"max_increase"`
	// Confidence for the verdict (default 0.95).
	Confidence float64 `yaml:"confidence"`
	// Quantile compared by a latency gate (default 0.5).
	Quantile float64 `yaml:"quantile"`
	// Shadow and MinAgreement: a shadow_agreement gate fails when the
	// named compare shadow agrees with the primary less than MinAgreement.
	Shadow       string  `yaml:"shadow"`
	MinAgreement float64 `yaml:"min_agreement"`
	// PValue is the SRM gate's threshold (default 0.001).
	PValue float64 `yaml:"p_value"`
	// Query (PromQL) must return one value; the gate fails when it is
	// above Max.
	Query string  `yaml:"query"`
	Max   float64 `yaml:"max"`
}

// Rollout defaults applied by validation's checks (the rollout package
// uses the same values).
const (
	DefaultGateInterval = Duration(10 * time.Second)
	DefaultMinRequests  = 200
	minGateInterval     = Duration(time.Second)
)

var rolloutStrategies = []string{"canary", "linear", "blue_green", "experiment"}
var gateMetrics = []string{"error_ratio", "latency", "shadow_agreement", "srm", "promql"}

// rollout checks an endpoint's plan: every problem named with its field.
func (v *validator) rollout(f string, e *Endpoint, p *Rollout) {
	if p.Canary == "" {
		v.add(f+".canary", "required: the variant to roll out (one of %s)", strings.Join(variantNamesOf(e), ", "))
	} else if _, ok := e.Variant(p.Canary); !ok {
		v.add(f+".canary", "unknown variant %q (variants: %s)", p.Canary, strings.Join(variantNamesOf(e), ", "))
	}
	if p.Baseline != "" {
		if _, ok := e.Variant(p.Baseline); !ok {
			v.add(f+".baseline", "unknown variant %q (variants: %s)", p.Baseline, strings.Join(variantNamesOf(e), ", "))
		} else if p.Baseline == p.Canary {
			v.add(f+".baseline", "must differ from the canary %q", p.Canary)
		}
	}
	if len(e.Variants) < 2 {
		v.add(f, "a rollout needs at least two variants (a baseline and a canary)")
	}
	if !e.Decided() {
		v.add(f, "needs the decision (decide: true): a rollout's ramp moves returning users, which Envoy's weights alone cannot do")
	}
	strategy := p.Strategy
	if strategy == "" {
		strategy = "canary"
	}
	if !slices.Contains(rolloutStrategies, strategy) {
		v.add(f+".strategy", "unknown strategy %q (one of %s)", p.Strategy, strings.Join(rolloutStrategies, ", "))
	}
	percent := func(field string, w int) {
		if w < 0 || w > 100 {
			v.add(field, "a percentage of traffic: between 0 and 100, got %d", w)
		}
	}
	gated := len(p.Gates) > 0
	bake := func(field string, d Duration) {
		switch {
		case d < 0:
			v.add(field, "must not be negative, got %v", d)
		case d == 0 && gated:
			v.add(field, "must be positive with gates: a step with no bake time would advance before any gate saw data")
		}
	}
	if strategy != "canary" && len(p.Steps) > 0 {
		v.add(f+".steps", "only for strategy canary (this plan is %s)", strategy)
	}
	switch strategy {
	case "canary":
		if len(p.Steps) == 0 {
			v.add(f+".steps", "a canary plan needs at least one step, e.g. [{weight: 10, bake: 5m}, {weight: 50, bake: 10m}, {weight: 100, bake: 10m}]")
		}
		prev := -1
		for i, s := range p.Steps {
			sf := fmt.Sprintf("%s.steps[%d]", f, i)
			percent(sf+".weight", s.Weight)
			if s.Weight <= prev {
				v.add(sf+".weight", "steps must raise the canary: %d after %d", s.Weight, prev)
			}
			if s.Weight == 0 {
				v.add(sf+".weight", "a canary step needs traffic on the canary (blue_green previews at 0%%)")
			}
			prev = s.Weight
			bake(sf+".bake", s.Bake)
		}
	case "linear":
		if p.Linear == nil {
			v.add(f+".linear", "required for strategy linear, e.g. {step: 10, interval: 5m}")
			break
		}
		if p.Linear.Step < 1 || p.Linear.Step > 100 {
			v.add(f+".linear.step", "percent added each interval: between 1 and 100, got %d", p.Linear.Step)
		}
		if p.Linear.Interval <= 0 {
			v.add(f+".linear.interval", "must be positive, got %v", p.Linear.Interval)
		}
	case "blue_green":
		if p.BlueGreen == nil {
			v.add(f+".blue_green", "required for strategy blue_green, e.g. {preview: 10m, rollback_window: 30m}")
			break
		}
		bake(f+".blue_green.preview", p.BlueGreen.Preview)
		bake(f+".blue_green.rollback_window", p.BlueGreen.RollbackWindow)
		if !e.AllowTarget && len(e.Shadows) == 0 {
			v.add(f+".blue_green", "the preview reaches the new variant only through x-modelsplit-target or a shadow: set allow_target: true or add a shadow")
		}
	case "experiment":
		if p.Experiment == nil {
			v.add(f+".experiment", "required for strategy experiment, e.g. {weight: 50, duration: 1h}")
			break
		}
		percent(f+".experiment.weight", p.Experiment.Weight)
		if p.Experiment.Weight == 0 || p.Experiment.Weight == 100 {
			v.add(f+".experiment.weight", "an experiment needs traffic on both variants, got %d", p.Experiment.Weight)
		}
		bake(f+".experiment.duration", p.Experiment.Duration)
	}
	if p.Interval != 0 && p.Interval < minGateInterval {
		v.add(f+".interval", "gates are checked at most every %v, got %v", minGateInterval, p.Interval)
	}
	if p.MinRequests < 0 {
		v.add(f+".min_requests", "must not be negative, got %d", p.MinRequests)
	}
	if p.Webhook != "" {
		v.url(f+".webhook", p.Webhook)
	}
	if p.Prometheus != "" {
		v.url(f+".prometheus", p.Prometheus)
	}
	for i := range p.Gates {
		v.gate(fmt.Sprintf("%s.gates[%d]", f, i), e, p, &p.Gates[i])
	}
}

func (v *validator) url(field, raw string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(field, "%q is not an http(s) URL", raw)
	}
}

func (v *validator) gate(f string, e *Endpoint, p *Rollout, g *RolloutGate) {
	if g.Confidence != 0 && (g.Confidence < 0.5 || g.Confidence >= 1 || math.IsNaN(g.Confidence)) {
		v.add(f+".confidence", "must be at least 0.5 and below 1, got %v", g.Confidence)
	}
	switch g.Metric {
	case "error_ratio":
		if g.MaxIncrease < 0 || g.MaxIncrease >= 1 || math.IsNaN(g.MaxIncrease) {
			v.add(f+".max_increase", "an error-ratio difference: at least 0 and below 1 (0.01 = one point), got %v", g.MaxIncrease)
		}
	case "latency":
		if g.MaxIncrease < 0 || math.IsNaN(g.MaxIncrease) || math.IsInf(g.MaxIncrease, 0) {
			v.add(f+".max_increase", "seconds the canary may add at the quantile: at least 0, got %v", g.MaxIncrease)
		}
		if g.Quantile != 0 && (g.Quantile <= 0 || g.Quantile >= 1 || math.IsNaN(g.Quantile)) {
			v.add(f+".quantile", "must be above 0 and below 1, got %v", g.Quantile)
		}
	case "shadow_agreement":
		i := -1
		for j := range e.Shadows {
			if e.Shadows[j].Name == g.Shadow {
				i = j
			}
		}
		switch {
		case g.Shadow == "":
			v.add(f+".shadow", "required: the compare shadow whose agreement is checked")
		case i < 0:
			v.add(f+".shadow", "unknown shadow %q", g.Shadow)
		case e.Shadows[i].Compare == nil:
			v.add(f+".shadow", "shadow %q has no compare: section; only compare shadows measure agreement", g.Shadow)
		}
		if g.MinAgreement <= 0 || g.MinAgreement > 1 || math.IsNaN(g.MinAgreement) {
			v.add(f+".min_agreement", "a share above 0 and at most 1, got %v", g.MinAgreement)
		}
	case "srm":
		if g.PValue != 0 && (g.PValue <= 0 || g.PValue >= 0.5 || math.IsNaN(g.PValue)) {
			v.add(f+".p_value", "must be above 0 and below 0.5 (default 0.001), got %v", g.PValue)
		}
	case "promql":
		if strings.TrimSpace(g.Query) == "" {
			v.add(f+".query", "required: a PromQL expression returning one value")
		}
		if p.Prometheus == "" {
			v.add(f+".query", "needs the plan's prometheus: URL to ask")
		}
		if math.IsNaN(g.Max) {
			v.add(f+".max", "must be a number")
		}
	case "":
		v.add(f+".metric", "required (one of %s)", strings.Join(gateMetrics, ", "))
	default:
		v.add(f+".metric", "unknown metric %q (one of %s)", g.Metric, strings.Join(gateMetrics, ", "))
	}
}

func variantNamesOf(e *Endpoint) []string {
	out := make([]string, 0, len(e.Variants))
	for _, vr := range e.Variants {
		out = append(out, vr.Name)
	}
	return out
}
