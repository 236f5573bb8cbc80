package cohort_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// sismemberCalls reads how many SISMEMBER commands Redis has served.
func sismemberCalls(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stats, err := c.InfoMap(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var calls int64
	if s, ok := stats["Commandstats"]["cmdstat_sismember"]; ok { // "calls=N,usec=...,..."
		if _, err := fmt.Sscanf(s, "calls=%d,", &calls); err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
	}
	return calls
}

// A Redis list answer is reused for the list cache TTL (no round trip per
// request), and a user added to the list is seen once it expires.
func TestRedisListIsCachedBriefly(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	e := cohort.NewEngine(redisStore(t, r.URL(), m), cohort.Options{Metrics: m, ListCacheTTL: 300 * time.Millisecond})
	// Everyone is on v0 by weight; only the Redis-list rule sends to v1.
	cfg := splitConfig(t, r.URL(), 1, 0)
	cfg.Endpoints[0].Rules = onlyRedisListRule(cfg.Endpoints[0].Rules)
	cfg.Endpoints[0].Rules[0].Variant = "v1"
	e.SetConfig(cfg)
	c := redisClient(t, r)
	before := sismemberCalls(t, c)
	for i := 0; i < 50; i++ {
		if d := decide(t, e, user("late-joiner")); d.Variant != "v0" {
			t.Fatalf("not in the list yet, got %+v", d)
		}
	}
	if n := sismemberCalls(t, c) - before; n != 1 {
		t.Errorf("50 decisions for one user asked Redis %d times, want 1 (cached)", n)
	}
	redisAdd(t, r, "t:list:redis-beta", "late-joiner")
	deadline := time.Now().Add(3 * time.Second)
	for decide(t, e, user("late-joiner")).Source != cohort.SourceRule {
		if time.Now().After(deadline) {
			t.Fatal("a user added to the Redis list was not seen within 3s (TTL 300ms)")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With Redis down, a Redis-list rule cannot be checked: the user gets the
// hash's answer, marked as a fallback, never an error.
func TestRedisListUnreadableFallsBack(t *testing.T) {
	r := testredis.Start(t)
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Endpoints[0].Rules = onlyRedisListRule(cfg.Endpoints[0].Rules)
	store := redisStore(t, r.URL(), metrics.New())
	e, _ := newEngine(t, store, cfg)
	redisAdd(t, r, "t:list:redis-beta", "beta-user")
	r.Kill()
	d, err := e.Decide(context.Background(), "m", user("beta-user"))
	if err != nil || d.Source != cohort.SourceFallback {
		t.Fatalf("list unreadable: %+v %v, want a fallback decision", d, err)
	}
}

func onlyRedisListRule(rules []config.Rule) []config.Rule {
	for _, r := range rules {
		if r.UserList == "redis-beta" {
			return []config.Rule{r}
		}
	}
	panic("splitConfig has no redis-beta rule")
}
