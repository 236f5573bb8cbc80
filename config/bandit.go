package config

import (
	"math"
	"regexp"
	"strings"
	"time"
)

// RewardHeader is the default response header a model server reports a
// reward in (bandit reward: header).
const RewardHeader = "x-modelsplit-reward"

// UnsampledHeader marks, for the observe filter, a request whose variant
// was not the bandit's to choose (a target header or a rule placed it):
// its reward is ignored. Envoy strips client-sent copies.
const UnsampledHeader = "x-modelsplit-unsampled"

// Bandit moves an endpoint's new users to the variant (arm) that performs
// best while it is still being learned: Thompson sampling, weights
// proportional to each arm's posterior probability of being best, above
// a floor. Returning users keep their variant.
type Bandit struct {
	// Reward is where rewards come from: success (default: a 2xx answer
	// within LatencyBudget, from the observe filter), header (the number
	// the model server puts in Header) or api (POST
	// /v1/endpoints/{ep}/rewards, joined to the user's or request's
	// variant).
	Reward string `yaml:"reward"`
	// Numeric rewards (header, api) are any finite number (a Normal
	// posterior); otherwise 0 or 1 (a Beta posterior). success is binary.
	Numeric       bool     `yaml:"numeric"`
	LatencyBudget Duration `yaml:"latency_budget"`
	Header        string   `yaml:"header"`
	// Interval between weight updates (default DefaultBanditInterval).
	Interval Duration `yaml:"interval"`
	// Floor is the smallest share (percent) any arm gets, so none stops
	// being explored (default 1; 0 allowed).
	Floor *float64 `yaml:"floor"`
	// Control is an arm held at a fixed share (percent), outside the
	// bandit: a stable comparison.
	Control *BanditControl `yaml:"control"`
	// Warmup keeps equal weights until both this long has passed since
	// the bandit started and WarmupRewards rewards were counted.
	Warmup        Duration `yaml:"warmup"`
	WarmupRewards int      `yaml:"warmup_rewards"`
	// Reassign, when set, re-assigns every user once per period (new
	// users to the weights then in force); by default a returning user
	// keeps their variant until sticky.ttl forgets them.
	Reassign Duration `yaml:"reassign"`
}

// BanditControl holds one variant at a fixed share.
type BanditControl struct {
	Variant string  `yaml:"variant"`
	Weight  float64 `yaml:"weight"`
}

// Bandit defaults.
const (
	DefaultBanditInterval = Duration(30 * time.Second)
	DefaultBanditFloor    = 1.0
	minBanditInterval     = Duration(time.Second)
)

var banditRewards = []string{"success", "header", "api"}

// RewardSource is b's reward source with the default applied.
func (b *Bandit) RewardSource() string {
	if b.Reward == "" {
		return "success"
	}
	return b.Reward
}

// FloorPercent is b's floor with the default applied.
func (b *Bandit) FloorPercent() float64 {
	if b.Floor == nil {
		return DefaultBanditFloor
	}
	return *b.Floor
}

// HeaderName is the reward header with the default applied.
func (b *Bandit) HeaderName() string {
	if b.Header == "" {
		return RewardHeader
	}
	return strings.ToLower(b.Header)
}

func (v *validator) bandit(f string, e *Endpoint, b *Bandit) {
	if e.Rollout != nil {
		v.add(f, "an endpoint has a rollout or a bandit, not both: both would move its weights")
	}
	if !e.Decided() {
		v.add(f, "needs the decision (decide: true): new users are assigned by the bandit's weights")
	}
	if len(e.Variants) < 2 {
		v.add(f, "a bandit needs at least two variants (arms)")
	}
	src := b.RewardSource()
	found := false
	for _, r := range banditRewards {
		found = found || r == src
	}
	if !found {
		v.add(f+".reward", "unknown reward source %q (one of %s)", b.Reward, strings.Join(banditRewards, ", "))
	}
	if src == "success" && b.Numeric {
		v.add(f+".numeric", "a success reward is 0 or 1; numeric rewards come from a header or the API")
	}
	if b.LatencyBudget < 0 || (b.LatencyBudget != 0 && src != "success") {
		v.add(f+".latency_budget", "a positive duration, for reward: success only")
	}
	if b.Header != "" {
		if src != "header" {
			v.add(f+".header", "only with reward: header")
		} else if !headerNameRE.MatchString(strings.ToLower(b.Header)) || strings.HasPrefix(b.Header, ":") {
			v.add(f+".header", "%q is not a valid HTTP header name", b.Header)
		}
	}
	if b.Interval != 0 && b.Interval < minBanditInterval {
		v.add(f+".interval", "at least %v, got %v", minBanditInterval, b.Interval)
	}
	if b.Warmup < 0 || b.WarmupRewards < 0 || b.Reassign < 0 {
		v.add(f, "warmup, warmup_rewards and reassign must not be negative")
	}
	arms := len(e.Variants)
	fixed := 0.0
	if c := b.Control; c != nil {
		if _, ok := e.Variant(c.Variant); !ok {
			v.add(f+".control.variant", "unknown variant %q (variants: %s)", c.Variant, strings.Join(variantNamesOf(e), ", "))
		} else {
			arms--
		}
		if !(c.Weight > 0 && c.Weight < 100) {
			v.add(f+".control.weight", "a share in percent above 0 and below 100, got %v", c.Weight)
		} else {
			fixed = c.Weight
		}
		if arms < 2 {
			v.add(f+".control", "leaves fewer than two arms for the bandit")
		}
	}
	floor := b.FloorPercent()
	switch {
	case math.IsNaN(floor) || floor < 0:
		v.add(f+".floor", "a share in percent, at least 0, got %v", floor)
	case arms > 0 && floor*float64(arms) > 100-fixed:
		v.add(f+".floor", "%v%% for each of %d arms is more than the %v%% the bandit shares out", floor, arms, 100-fixed)
	}
}

// headerNameRE is an HTTP header name as Envoy accepts it (lower case).
var headerNameRE = regexp.MustCompile(`^[a-z0-9!#$%&'*+.^_|~-]+$`)
