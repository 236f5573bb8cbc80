package config

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
