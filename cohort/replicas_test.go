package cohort_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// Two replicas briefly run different weights (a weight change reaches them
// at different times) and both see the same new users before either
// write-behind lands. Redis keeps the first write; the replica that lost
// must drop its cached answer, so afterwards both agree for every user,
// and keep agreeing after a further weight change on both.
func TestReplicasAgreeAfterSkewedWeightChange(t *testing.T) {
	r := testredis.Start(t)
	e1, _ := newEngine(t, redisStore(t, r.URL(), metrics.New()), splitConfig(t, r.URL(), 90, 10))
	e2, _ := newEngine(t, redisStore(t, r.URL(), metrics.New()), splitConfig(t, r.URL(), 50, 50))
	const n = 4000
	differed := 0
	for i := 0; i < n; i++ {
		u := user(fmt.Sprintf("skew-%d", i))
		if decide(t, e1, u).Variant != decide(t, e2, u).Variant {
			differed++
		}
	}
	t.Logf("%d of %d users got different first answers from the two replicas", differed, n)
	if differed == 0 {
		t.Fatal("the replicas never disagreed at first: the test does not exercise the conflict")
	}
	flush(t, e1)
	flush(t, e2)
	check := func(stage string) {
		t.Helper()
		for i := 0; i < n; i++ {
			u := user(fmt.Sprintf("skew-%d", i))
			d1, d2 := decide(t, e1, u), decide(t, e2, u)
			if d1.Variant != d2.Variant {
				t.Fatalf("%s: user %d on %s by replica 1 (%s) and %s by replica 2 (%s)", stage, i, d1.Variant, d1.Source, d2.Variant, d2.Source)
			}
		}
	}
	check("after the write-behind settled")
	e1.SetConfig(splitConfig(t, r.URL(), 20, 80))
	e2.SetConfig(splitConfig(t, r.URL(), 20, 80))
	check("after both moved to 20/80")
}

// A client that hangs up (cancelled context) says nothing about Redis: the
// decision falls back, and the store stays up.
func TestCancelledRequestsDoNotMarkRedisDown(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	e, _ := newEngine(t, store, splitConfig(t, r.URL(), 50, 50))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 20; i++ {
		d, err := e.Decide(ctx, "m", user(fmt.Sprintf("gone-%d", i)))
		if err != nil || d.Source != cohort.SourceFallback {
			t.Fatalf("cancelled request: %+v %v, want a fallback decision", d, err)
		}
	}
	if !store.Healthy() {
		t.Error("cancelled requests marked a healthy Redis down")
	}
}

// Assignments are stored under a hash of the user key, with the sticky TTL;
// the raw user id never reaches Redis.
func TestRedisKeysAreHashedWithTTL(t *testing.T) {
	r := testredis.Start(t)
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Endpoints[0].Sticky.TTL = config.Duration(time.Hour)
	e, _ := newEngine(t, redisStore(t, r.URL(), metrics.New()), cfg)
	decide(t, e, user("alice@example.com"))
	flush(t, e)
	c := redisClient(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := c.Keys(ctx, "t:a:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("redis keys = %q, want one assignment", keys)
	}
	// The per-variant user counter holds only hashes too: the member
	// added is the hashed assignment key.
	counters, err := c.Keys(ctx, "t:users:*").Result()
	if err != nil || len(counters) != 1 {
		t.Fatalf("user counters = %q (%v), want one", counters, err)
	}
	if n, err := c.PFCount(ctx, counters[0]).Result(); err != nil || n != 1 {
		t.Errorf("PFCOUNT %s = %d (%v), want 1", counters[0], n, err)
	}
	dump, _ := c.Dump(ctx, counters[0]).Result()
	if strings.Contains(dump, "alice") {
		t.Errorf("raw user id inside the user counter")
	}
	for _, k := range keys {
		if strings.Contains(k, "alice") {
			t.Errorf("raw user id in redis key %q", k)
		}
		ttl, err := c.TTL(ctx, k).Result()
		if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
			t.Errorf("key %q TTL %v (%v), want about 1h", k, ttl, err)
		}
	}
}
