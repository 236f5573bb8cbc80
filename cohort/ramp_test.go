package cohort_test

import (
	"fmt"
	"github.com/modelsplit/modelsplit/cohort/picktest"
	"github.com/modelsplit/modelsplit/config"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"testing"

	"github.com/modelsplit/modelsplit/cohort"
)

// A two-variant ramp, without a store (so only the hash speaks): each step
// that raises the canary moves users only onto it, and the share follows.
func TestTwoVariantRampMovesUsersOnlyOntoTheCanary(t *testing.T) {
	const n = 5000
	var before []string
	for _, canary := range []int{1, 10, 25, 50, 90, 100} {
		e, _ := newEngine(t, cohort.NewMemoryStore(0), splitConfig(t, "", 100-canary, canary))
		after := make([]string, n)
		onCanary := 0
		for i := range after {
			after[i] = decide(t, e, user(fmt.Sprintf("r%d", i))).Variant
			if after[i] == "v1" {
				onCanary++
			}
			if before != nil && after[i] != before[i] && after[i] != "v1" {
				t.Fatalf("raising the canary to %d%% moved user %d from %s to %s", canary, i, before[i], after[i])
			}
		}
		if got := float64(onCanary) / n; got < float64(canary)/100-0.025 || got > float64(canary)/100+0.025 {
			t.Errorf("canary at %d%%: %.2f%% of %d users on it", canary, 100*got, n)
		}
		before = after
	}
}

// With a store, any single weight change of four variants moves nobody
// who is stored, except the users of a variant drained to 0 (they go where
// the hash puts them among the serving variants).
func TestWeightChangesMoveNoStoredUser(t *testing.T) {
	base := []int{40, 30, 20, 10}
	const n = 3000
	store := cohort.NewMemoryStore(0)
	assign := func(w []int) []string {
		e, _ := newEngine(t, store, splitConfig(t, "", w...))
		out := make([]string, n)
		for i := range out {
			out[i] = decide(t, e, user(fmt.Sprintf("r%d", i))).Variant
		}
		return out
	}
	before := assign(base)
	for k := range base {
		for _, delta := range []int{+25, -base[k]} { // raise, and drain to 0
			w := append([]int(nil), base...)
			w[k] += delta
			after := assign(w)
			target := fmt.Sprintf("v%d", k)
			for i := range after {
				if after[i] == before[i] {
					continue
				}
				if delta > 0 || before[i] != target {
					t.Fatalf("%v→%v moved stored user %d from %s to %s", base, w, i, before[i], after[i])
				}
			}
		}
	}
}

// rampConfig is splitConfig at weights with a rollout's ramp onto v1
// from base.
func rampConfig(t testing.TB, base []int, weights ...int) *config.Config {
	cfg := splitConfig(t, "", weights...)
	b := map[string]int{}
	for i, w := range base {
		b[fmt.Sprintf("v%d", i)] = w
	}
	cfg.Endpoints[0].Ramp = &config.Ramp{Canary: "v1", Base: b}
	return cfg
}

// A rollout's ramp moves returning users too: 90/10 → 50/50 puts half of
// the returning users on the canary (exactly those the rule puts there),
// moves nobody off it at any step, leaves rule users alone, and taking
// the ramp away restores every user's earlier variant.
func TestRampMovesReturningUsersMonotonically(t *testing.T) {
	const n = 2000
	names := []string{"v0", "v1"}
	store := cohort.NewMemoryStore(0)
	base := []int{90, 10}
	e, _ := newEngine(t, store, splitConfig(t, "", base...))
	first := make([]string, n)
	for i := range first {
		first[i] = decide(t, e, user(fmt.Sprintf("r%d", i))).Variant
	}
	ruleUser := headers{"x-user-id": "r7", "x-region": "eu"}
	prev := first
	for _, canary := range []int{50, 80, 100} {
		// A fresh engine each step: what counts is the store, not the cache.
		e, m := newEngine(t, store, rampConfig(t, base, 100-canary, canary))
		now := make([]string, n)
		on := 0
		for i := range now {
			key := fmt.Sprintf("r%d", i)
			now[i] = decide(t, e, user(key)).Variant
			want := first[i]
			if picktest.Variant("", key, names, []int{100 - canary, canary}) == "v1" {
				want = "v1"
			}
			if now[i] != want {
				t.Fatalf("canary at %d%%: user %s on %s, the rule says %s (was %s before the rollout)", canary, key, now[i], want, first[i])
			}
			if prev[i] == "v1" && now[i] != "v1" {
				t.Fatalf("canary raised to %d%% moved user %s off the canary", canary, key)
			}
			if now[i] == "v1" {
				on++
			}
		}
		share := 100 * float64(on) / n
		t.Logf("canary at %d%%: %.2f%% of %d returning users on it", canary, share, n)
		if share < float64(canary)-2 || share > float64(canary)+2 {
			t.Errorf("canary at %d%%: %.2f%% of returning users on it, want %d ± 2", canary, share, canary)
		}
		if canary < 100 {
			if got := testutil.ToFloat64(m.Decisions.WithLabelValues("m", "v1", "ramp")); got == 0 {
				t.Errorf("no decision counted with source ramp")
			}
		}
		if d := decide(t, e, ruleUser); d.Variant != "v0" || d.Source != cohort.SourceRule {
			t.Fatalf("rule user moved by the ramp: %+v", d)
		}
		prev = now
	}
	// Rollback: the pre-rollout weights, no ramp. Everyone is where they were.
	e, _ = newEngine(t, store, splitConfig(t, "", base...))
	for i := range first {
		if got := decide(t, e, user(fmt.Sprintf("r%d", i))).Variant; got != first[i] {
			t.Fatalf("after the rollback user r%d is on %s, was on %s before the rollout", i, got, first[i])
		}
	}
}

// New users who arrive during a ramp are served as the weights in force
// say, but stored as the weights before the rollout would have placed
// them: a rollback puts them back in the groups the old split makes.
func TestRampStoresNewUsersByBaseWeights(t *testing.T) {
	const n = 2000
	names := []string{"v0", "v1"}
	store := cohort.NewMemoryStore(0)
	e, _ := newEngine(t, store, rampConfig(t, []int{90, 10}, 40, 60))
	on := 0
	for i := range n {
		key := fmt.Sprintf("new%d", i)
		got := decide(t, e, user(key)).Variant
		if want := picktest.Variant("", key, names, []int{40, 60}); got != want {
			t.Fatalf("new user %s on %s during the ramp, the rule says %s", key, got, want)
		}
		if got == "v1" {
			on++
		}
	}
	if share := float64(on) / n; share < 0.6-0.055 || share > 0.6+0.055 { // 5σ at n=2000
		t.Errorf("%.3f of new users on the canary at 60%%", share)
	}
	e, _ = newEngine(t, store, splitConfig(t, "", 90, 10))
	for i := range n {
		key := fmt.Sprintf("new%d", i)
		if got, want := decide(t, e, user(key)).Variant, picktest.Variant("", key, names, []int{90, 10}); got != want {
			t.Fatalf("after the rollback new user %s is on %s, the old split says %s", key, got, want)
		}
	}
}

// A ramp that cannot apply is ignored: its canary takes no traffic
// (weight 0), it names no variant of the endpoint, or every weight is 0
// (not a valid config; the engine then splits equally). New users are
// then placed by the weights in force, not stored by the ramp's base.
func TestRampWithoutTrafficIsIgnored(t *testing.T) {
	const n = 600
	names := []string{"v0", "v1", "v2"}
	for _, c := range []struct {
		name    string
		weights []int
		canary  string
		base    []int
	}{
		{"canary at weight 0", []int{50, 0, 50}, "v1", []int{0, 0, 100}},
		{"canary not a variant", []int{50, 0, 50}, "nope", []int{100, 0, 0}},
		{"every weight 0", []int{0, 0, 0}, "v1", []int{0, 0, 100}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := rampConfig(t, c.base, 50, 10, 40)
			cfg.Endpoints[0].Ramp.Canary = c.canary
			for i, w := range c.weights {
				cfg.Endpoints[0].Variants[i].Weight = w
			}
			e, _ := newEngine(t, cohort.NewMemoryStore(0), cfg)
			on := map[string]int{}
			for i := range n {
				key := fmt.Sprintf("n%d", i)
				got := decide(t, e, user(key)).Variant
				on[got]++
				if c.weights[0] > 0 {
					if want := picktest.Variant("", key, names, c.weights); got != want {
						t.Fatalf("new user %s on %s, the weights in force say %s", key, got, want)
					}
				}
			}
			if c.weights[0] == 0 && (on["v0"] < n/6 || on["v1"] < n/6 || on["v2"] < n/6) {
				t.Errorf("every weight 0: new users split %v, want about a third each", on)
			}
		})
	}
}

// A ramp onto the first variant (index 0) works as onto any other:
// returning users hashed onto it by the weights in force move to it, new
// users on it are stored by the base weights, so a rollback puts them
// where the old split does.
func TestRampOntoTheFirstVariantStoresByBaseWeights(t *testing.T) {
	const n = 1000
	names := []string{"v0", "v1"}
	store := cohort.NewMemoryStore(0)
	e, _ := newEngine(t, store, splitConfig(t, "", 10, 90))
	for i := range n {
		decide(t, e, user(fmt.Sprintf("old%d", i)))
	}
	cfg := rampConfig(t, []int{10, 90}, 60, 40)
	cfg.Endpoints[0].Ramp.Canary = "v0"
	e, _ = newEngine(t, store, cfg)
	for i := range n {
		// Returning users the weights in force hash onto the canary move
		// to it; the others stay where they were.
		key := fmt.Sprintf("old%d", i)
		want := picktest.Variant("", key, names, []int{10, 90})
		if picktest.Variant("", key, names, []int{60, 40}) == "v0" {
			want = "v0"
		}
		if got := decide(t, e, user(key)).Variant; got != want {
			t.Fatalf("returning user %s on %s during the ramp, want %s", key, got, want)
		}
	}
	for i := range n {
		key := fmt.Sprintf("new%d", i)
		if got, want := decide(t, e, user(key)).Variant, picktest.Variant("", key, names, []int{60, 40}); got != want {
			t.Fatalf("new user %s on %s during the ramp, the rule says %s", key, got, want)
		}
	}
	e, _ = newEngine(t, store, splitConfig(t, "", 10, 90))
	for i := range n {
		key := fmt.Sprintf("new%d", i)
		if got, want := decide(t, e, user(key)).Variant, picktest.Variant("", key, names, []int{10, 90}); got != want {
			t.Fatalf("after the rollback new user %s is on %s, the old split says %s", key, got, want)
		}
	}
}
