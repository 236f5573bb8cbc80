package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/config"
)

// rolloutEndpoint is an endpoint with two variants and a compare shadow;
// the plan's lines start at line 10.
const rolloutEndpoint = `endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 90, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 10, backends: ["10.0.0.2:80"]}
    shadows:
      - {name: s, percent: 10, backends: ["10.0.0.3:80"], compare: {}}
    rollout:
`

func TestRolloutPlanLoads(t *testing.T) {
	c, err := config.Parse("ok.yaml", []byte(rolloutEndpoint+`      canary: b
      steps: [{weight: 10, bake: 1m}, {weight: 50, bake: 5m}, {weight: 100, bake: 5m}]
      interval: 5s
      min_requests: 300
      gates:
        - {metric: error_ratio, max_increase: 0.01, confidence: 0.99}
        - {metric: latency, quantile: 0.99, max_increase: 0.05}
        - {metric: shadow_agreement, shadow: s, min_agreement: 0.95}
        - {metric: srm}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Endpoints[0].Rollout
	if p == nil || p.Canary != "b" || len(p.Steps) != 3 || p.Steps[1].Weight != 50 || p.Steps[1].Bake.D().Minutes() != 5 ||
		len(p.Gates) != 4 || p.Gates[0].Confidence != 0.99 || p.MinRequests != 300 {
		t.Fatalf("plan %+v", p)
	}
}

// Bad plans: every problem at validate time, with its line and field.
func TestInvalidRolloutPlans(t *testing.T) {
	cases := []struct {
		name, plan string
		want       []string // line:field:substring
	}{
		{"no steps", "      canary: b\n", []string{"10:endpoints[0].rollout.steps:at least one step"}},
		{"empty steps", "      canary: b\n      steps: []\n", []string{"12:endpoints[0].rollout.steps:at least one step"}},
		{"weight over 100", "      canary: b\n      steps:\n        - {weight: 150, bake: 1m}\n", []string{"13:endpoints[0].rollout.steps[0].weight:between 0 and 100, got 150"}},
		{"steps going down", "      canary: b\n      steps: [{weight: 50, bake: 1m}, {weight: 20, bake: 1m}]\n", []string{"12:endpoints[0].rollout.steps[1].weight:must raise the canary"}},
		{"bake 0 with gates", "      canary: b\n      steps: [{weight: 50}]\n      gates: [{metric: srm}]\n", []string{"12:endpoints[0].rollout.steps[0].bake:must be positive with gates"}},
		{"unknown gate metric", "      canary: b\n      steps: [{weight: 50, bake: 1m}]\n      gates:\n        - {metric: accuracy}\n", []string{"14:endpoints[0].rollout.gates[0].metric:unknown metric \"accuracy\""}},
		{"gate without metric", "      canary: b\n      steps: [{weight: 50, bake: 1m}]\n      gates:\n        - {max_increase: 0.1}\n", []string{"14:endpoints[0].rollout.gates[0].metric:required"}},
		{"unknown canary", "      canary: c\n      steps: [{weight: 50, bake: 1m}]\n", []string{"11:endpoints[0].rollout.canary:unknown variant \"c\""}},
		{"missing canary", "      steps: [{weight: 50, bake: 1m}]\n", []string{"endpoints[0].rollout.canary:required"}},
		{"baseline is the canary", "      canary: b\n      baseline: b\n      steps: [{weight: 50, bake: 1m}]\n", []string{"12:endpoints[0].rollout.baseline:must differ"}},
		{"unknown strategy", "      canary: b\n      strategy: big_bang\n", []string{"12:endpoints[0].rollout.strategy:unknown strategy"}},
		{"linear without settings", "      canary: b\n      strategy: linear\n", []string{"endpoints[0].rollout.linear:required for strategy linear"}},
		{"linear step 0", "      canary: b\n      strategy: linear\n      linear: {step: 0, interval: 1m}\n", []string{"13:endpoints[0].rollout.linear.step:between 1 and 100"}},
		{"experiment at 100", "      canary: b\n      strategy: experiment\n      experiment: {weight: 100, duration: 1h}\n", []string{"13:endpoints[0].rollout.experiment.weight:traffic on both"}},
		{"promql without server", "      canary: b\n      steps: [{weight: 50, bake: 1m}]\n      gates:\n        - {metric: promql, query: 'up', max: 1}\n", []string{"14:endpoints[0].rollout.gates[0].query:prometheus: URL"}},
		{"bad prometheus url", "      canary: b\n      prometheus: localhost:9090\n      steps: [{weight: 50, bake: 1m}]\n", []string{"12:endpoints[0].rollout.prometheus:not an http(s) URL"}},
		{"agreement gate on a mirror-only shadow name", "      canary: b\n      steps: [{weight: 50, bake: 1m}]\n      gates:\n        - {metric: shadow_agreement, shadow: t, min_agreement: 0.9}\n", []string{"14:endpoints[0].rollout.gates[0].shadow:unknown shadow \"t\""}},
		{"agreement over 1", "      canary: b\n      steps: [{weight: 50, bake: 1m}]\n      gates:\n        - {metric: shadow_agreement, shadow: s, min_agreement: 95}\n", []string{"14:endpoints[0].rollout.gates[0].min_agreement:at most 1"}},
		{"confidence 1", "      canary: b\n      steps: [{weight: 50, bake: 1m}]\n      gates:\n        - {metric: error_ratio, confidence: 1}\n", []string{"14:endpoints[0].rollout.gates[0].confidence:below 1"}},
		{"interval too short", "      canary: b\n      interval: 10ms\n      steps: [{weight: 50, bake: 1m}]\n", []string{"12:endpoints[0].rollout.interval:at most every 1s"}},
		{"unknown field", "      canary: b\n      stepz: []\n", []string{"12:endpoints[0].rollout.stepz:unknown field"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("bad.yaml", []byte(rolloutEndpoint+tc.plan))
			var errs config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("want config.Errors, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(w, ":") || !containsError(errs, w) && !containsAnyLine(errs, w) {
					t.Errorf("want an error matching %q, got:\n%v", w, err)
				}
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Error(), "bad.yaml:") {
					t.Errorf("error without file:line: %q", e.Error())
				}
			}
		})
	}
}

// containsAnyLine matches "field:substring" (no line) against errs.
func containsAnyLine(errs config.Errors, want string) bool {
	parts := strings.SplitN(want, ":", 2)
	if len(parts) != 2 {
		return false
	}
	for _, e := range errs {
		if e.Field == parts[0] && strings.Contains(e.Msg, parts[1]) {
			return true
		}
	}
	return false
}

// A paused compare shadow needs no bodies: proxyless clients stream
// messages to the observe filter only while one is active.
func TestComparingIgnoresPausedShadows(t *testing.T) {
	c, err := config.Parse("c.yaml", []byte(rolloutEndpoint[:strings.Index(rolloutEndpoint, "    rollout:")]))
	if err != nil {
		t.Fatal(err)
	}
	e := &c.Endpoints[0]
	if !e.Comparing() {
		t.Fatal("an active compare shadow: Comparing false")
	}
	e.Shadows[0].Paused = true
	if e.Comparing() {
		t.Fatal("a paused compare shadow: Comparing true")
	}
}
