package cohort_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
)

func banditEngine(t *testing.T, store cohort.Store, weights [2]int, reassign string) *cohort.Engine {
	t.Helper()
	cfg, err := config.Parse("b.yaml", []byte(fmt.Sprintf(`endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {header: x-user-id}
    allow_target: true
    variants:
      - {name: v0, weight: %d, backends: ["10.0.0.1:80"]}
      - {name: v1, weight: %d, backends: ["10.0.0.2:80"]}
    rules:
      - {header: x-region, equals: eu, variant: v0}
    bandit: {reassign: %q}
`, weights[0], weights[1], reassign)))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newEngine(t, store, cfg)
	return e
}

// A bandit's decisions by a target header or a rule are marked unsampled
// (their rewards are not the bandit's); hashed and stored ones are not.
func TestBanditMarksUnsampledDecisions(t *testing.T) {
	e := banditEngine(t, cohort.NewMemoryStore(0), [2]int{1, 1}, "0s")
	for _, tc := range []struct {
		h    headers
		want bool
	}{
		{headers{"x-user-id": "u1"}, false},
		{headers{"x-user-id": "u1"}, false}, // stored now
		{headers{"x-user-id": "u2", "x-region": "eu"}, true},
		{headers{"x-user-id": "u3", "x-modelsplit-target": "v1"}, true},
	} {
		if d := decide(t, e, tc.h); d.Unsampled != tc.want {
			t.Errorf("%v: unsampled %v (source %s), want %v", tc.h, d.Unsampled, d.Source, tc.want)
		}
	}
}

// Without a re-assignment period a returning user keeps their variant
// when the bandit's weights move; with one, users are assigned afresh each
// period, by the weights then in force.
func TestBanditReassignPeriod(t *testing.T) {
	const n = 500
	for _, tc := range []struct {
		reassign string
		wantMove bool
	}{{"0s", false}, {"1ms", true}} {
		store := cohort.NewMemoryStore(0)
		e := banditEngine(t, store, [2]int{90, 10}, tc.reassign)
		first := make([]string, n)
		for i := range n {
			first[i] = decide(t, e, user(fmt.Sprintf("r%d", i))).Variant
		}
		time.Sleep(5 * time.Millisecond) // past a 1ms period
		e = banditEngine(t, store, [2]int{10, 90}, tc.reassign)
		moved := 0
		for i := range n {
			d, err := e.Decide(context.Background(), "m", user(fmt.Sprintf("r%d", i)))
			if err != nil {
				t.Fatal(err)
			}
			if d.Variant != first[i] {
				moved++
			}
		}
		t.Logf("reassign %s: %d of %d returning users changed variant when the weights went 90/10 → 10/90", tc.reassign, moved, n)
		if tc.wantMove && moved < n/2 || !tc.wantMove && moved != 0 {
			t.Errorf("reassign %s: %d of %d users changed variant", tc.reassign, moved, n)
		}
	}
}

// Within one re-assignment period a returning user keeps their variant
// when the weights move, and Lookup (what a posted reward joins to) finds
// it. The period is a day, so the test never straddles two (but for one
// chance in millions).
func TestBanditKeepsUsersWithinAPeriod(t *testing.T) {
	const n = 300
	store := cohort.NewMemoryStore(0)
	e := banditEngine(t, store, [2]int{90, 10}, "24h")
	first := make([]string, n)
	for i := range n {
		first[i] = decide(t, e, user(fmt.Sprintf("r%d", i))).Variant
	}
	e = banditEngine(t, store, [2]int{10, 90}, "24h")
	for i := range n {
		key := fmt.Sprintf("r%d", i)
		if got := decide(t, e, user(key)).Variant; got != first[i] {
			t.Fatalf("user %s moved from %s to %s within one re-assignment period", key, first[i], got)
		}
		v, ok, err := e.Lookup(context.Background(), "m", key)
		if err != nil || !ok || v != first[i] {
			t.Fatalf("Lookup(%s) = %q, %v, %v; want %q", key, v, ok, err, first[i])
		}
	}
}
