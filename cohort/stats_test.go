package cohort_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
)

// TestStatsCountNewUsersOnly: every decision counts in the stats windows,
// but only a user with a key whose variant the hash chose and stored
// counts as assigned; targets, rules, anonymous splits and returning
// users do not.
func TestStatsCountNewUsersOnly(t *testing.T) {
	e, m := newEngine(t, cohort.NewMemoryStore(0), splitConfig(t, "", 50, 50))
	ctx := context.Background()
	decide := func(h headers) {
		t.Helper()
		if _, err := e.Decide(ctx, "m", h); err != nil {
			t.Fatal(err)
		}
	}
	const users = 200
	for i := range users {
		decide(user(fmt.Sprint("u", i))) // new: assigned
		decide(user(fmt.Sprint("u", i))) // returning: cache hit
	}
	decide(headers{"x-user-id": "t", config.TargetHeader: "v1"}) // target
	decide(headers{"x-user-id": "r", "x-region": "eu"})          // rule
	decide(user("vip-1"))                                        // rule (list)
	decide(headers{})                                            // anonymous: random
	tot := m.Stats.Totals("m").Variants
	var decisions, assigned uint64
	for _, v := range tot {
		decisions += v.Decisions
		assigned += v.Assigned
	}
	if decisions != 2*users+4 {
		t.Errorf("%d decisions counted, want %d", decisions, 2*users+4)
	}
	if assigned != users {
		t.Errorf("%d users counted as assigned, want %d", assigned, users)
	}
	if tot["v0"].Assigned == 0 || tot["v1"].Assigned == 0 {
		t.Errorf("a 50/50 split assigned %d and %d", tot["v0"].Assigned, tot["v1"].Assigned)
	}
}
