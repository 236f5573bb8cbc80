package cohort_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/cohort/picktest"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// A Redis user list that cannot be read (here: the key holds a string, so
// Redis answers WRONGTYPE) while the assignment read works: the user is not
// counted a member, the hash decides, and the decision is marked a
// fallback, not a plain hash pick.
func TestUnreadableListMarksTheDecisionAFallback(t *testing.T) {
	r := testredis.Start(t)
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Endpoints[0].Rules = onlyRedisListRule(cfg.Endpoints[0].Rules)
	e, _ := newEngine(t, redisStore(t, r.URL(), metrics.New()), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := redisClient(t, r).Set(ctx, "t:list:redis-beta", "not a set", 0).Err(); err != nil {
		t.Fatal(err)
	}
	d := decide(t, e, user("beta-user"))
	if d.Source != cohort.SourceFallback {
		t.Fatalf("list unreadable, store readable: %+v, want the hash marked as a fallback", d)
	}
	if want := variantName(cfg, "m", "beta-user"); d.Variant != want {
		t.Fatalf("variant %s, want the hash's %s", d.Variant, want)
	}
}

// Lists read in one round trip fail together: when one list of the
// pipelined lookup is unreadable, a later list that holds the user does not
// make its rule match either (the lookup says nothing about any list).
func TestUnreadableListFailsTheListsReadWithIt(t *testing.T) {
	r := testredis.Start(t)
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Endpoints[0].Rules = []config.Rule{{UserList: "redis-broken", Variant: "v0"}, {UserList: "redis-beta", Variant: "v1"}}
	e, _ := newEngine(t, redisStore(t, r.URL(), metrics.New()), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := redisClient(t, r).Set(ctx, "t:list:redis-broken", "not a set", 0).Err(); err != nil {
		t.Fatal(err)
	}
	redisAdd(t, r, "t:list:redis-beta", "beta-user")
	d := decide(t, e, user("beta-user"))
	if d.Source != cohort.SourceFallback {
		t.Fatalf("first list unreadable, user in the second: %+v, want the hash marked as a fallback", d)
	}
	if want := variantName(cfg, "m", "beta-user"); d.Variant != want {
		t.Fatalf("variant %s, want the hash's %s", d.Variant, want)
	}
}

// variantName is the documented new-user pick for key on endpoint name.
func variantName(cfg *config.Config, name, key string) string {
	for _, ep := range cfg.Endpoints {
		if ep.Name == name {
			var names []string
			var weights []int
			for _, v := range ep.Variants {
				names, weights = append(names, v.Name), append(weights, v.Weight)
			}
			return picktest.Variant(ep.Sticky.Salt, key, names, weights)
		}
	}
	return ""
}

// When the store cannot be read, the engine says so at debug level (once
// per decision, with the endpoint), so an operator can see why users were
// hashed.
func TestStoreUnavailableIsLoggedAtDebug(t *testing.T) {
	r := testredis.Start(t)
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Endpoints[0].Rules = nil
	core, logs := observer.New(zapcore.DebugLevel)
	s := redisStore(t, r.URL(), metrics.New())
	e := cohort.NewEngine(s, cohort.Options{Logger: zap.New(core), Metrics: metrics.New()})
	e.SetConfig(cfg)
	r.Kill()
	d := decide(t, e, user("someone"))
	if d.Source != cohort.SourceFallback {
		t.Fatalf("redis down: %+v, want a fallback", d)
	}
	entries := logs.FilterMessage("assignment store unavailable; the hash decided").All()
	if len(entries) != 1 || entries[0].Level != zapcore.DebugLevel || entries[0].ContextMap()["endpoint"] != "m" {
		t.Fatalf("debug entries %+v, want one naming endpoint m", entries)
	}
}
