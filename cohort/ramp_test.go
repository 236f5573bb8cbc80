package cohort_test

import (
	"fmt"
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
