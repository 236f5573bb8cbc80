package cohort_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// The headline property: users assigned at 90/10 keep their variant after
// the weights move to 50/50, new users follow 50/50, and all of it
// survives a restart and is shared by replicas.
func TestStickyAcrossWeightChangeRestartAndReplicas(t *testing.T) {
	r := testredis.Start(t)
	const n = 10000
	m1 := metrics.New()
	e1, _ := newEngine(t, redisStore(t, r.URL(), m1), splitConfig(t, r.URL(), 90, 10))
	first := map[string]string{}
	for i := 0; i < n; i++ {
		u := fmt.Sprintf("old-%d", i)
		first[u] = decide(t, e1, user(u)).Variant
	}
	flush(t, e1)

	e1.SetConfig(splitConfig(t, r.URL(), 50, 50))
	moved := 0
	for u, v := range first {
		if decide(t, e1, user(u)).Variant != v {
			moved++
		}
	}
	if moved != 0 {
		t.Errorf("%d of %d existing users changed variant after 90/10 → 50/50", moved, n)
	}
	assertShares(t, shares(t, e1, "new", n), map[string]float64{"v0": 0.5, "v1": 0.5}, 0.01)
	flush(t, e1)

	// A restart (fresh engine, empty cache) and a second replica, both at
	// 50/50, read the same assignments from Redis.
	e2, m2 := newEngine(t, redisStore(t, r.URL(), metrics.New()), splitConfig(t, r.URL(), 50, 50))
	e3, _ := newEngine(t, redisStore(t, r.URL(), metrics.New()), splitConfig(t, r.URL(), 50, 50))
	for u, v := range first {
		d2, d3 := decide(t, e2, user(u)), decide(t, e3, user(u))
		if d2.Variant != v || d3.Variant != v {
			t.Fatalf("user %s: first %s, restarted %s, replica %s", u, v, d2.Variant, d3.Variant)
		}
	}
	if got := testutil.ToFloat64(m2.Decisions.WithLabelValues("m", "v1", "store")) + testutil.ToFloat64(m2.Decisions.WithLabelValues("m", "v0", "store")); got != n {
		t.Errorf("restarted engine: %v decisions from the store, want %d", got, n)
	}
}

// Killing Redis mid-run fails no decision; users whose weights did not
// change get the same answer from the hash; the store recovers by itself,
// the assignments made while it was down are written, and stored
// assignments are read again.
func TestRedisOutage(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	e, _ := newEngine(t, store, splitConfig(t, r.URL(), 50, 50))
	before := map[string]string{}
	for i := 0; i < 1000; i++ {
		u := fmt.Sprintf("pre-%d", i)
		before[u] = decide(t, e, user(u)).Variant
	}
	flush(t, e)

	r.Kill()
	fresh := cohort.NewEngine(store, cohort.Options{Metrics: m}) // empty cache: must go to the store
	fresh.SetConfig(splitConfig(t, r.URL(), 50, 50))
	start := time.Now()
	during := map[string]string{}
	for i := 0; i < 2000; i++ {
		u := fmt.Sprintf("pre-%d", i%1000)
		if i >= 1000 {
			u = fmt.Sprintf("down-%d", i)
		}
		d, err := fresh.Decide(context.Background(), "m", user(u))
		if err != nil || d.Variant == "" {
			t.Fatalf("decision failed while redis was down: %+v %v", d, err)
		}
		if i < 1000 && d.Variant != before[u] {
			t.Fatalf("user %s got %s while redis was down, had %s (weights unchanged)", u, d.Variant, before[u])
		}
		during[u] = d.Variant
	}
	t.Logf("2,000 decisions with redis down took %v", time.Since(start))
	if store.Healthy() {
		t.Error("store still healthy with redis killed")
	}
	if testutil.ToFloat64(m.StoreUp) != 0 || testutil.ToFloat64(m.Decisions.WithLabelValues("m", "v0", "fallback"))+testutil.ToFloat64(m.Decisions.WithLabelValues("m", "v1", "fallback")) == 0 {
		t.Error("outage not visible in metrics (store_up, decisions{source=fallback})")
	}

	r.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for !store.Healthy() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !store.Healthy() {
		t.Fatal("store did not recover within 5s of redis restarting")
	}
	// The assignments made while down were replayed into Redis.
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && redisKeys(t, r) < 2000 {
		time.Sleep(50 * time.Millisecond)
	}
	if k := redisKeys(t, r); k < 2000 {
		t.Errorf("redis holds %d assignment keys after recovery, want ≥ 2000 (1000 before + 1000 made while down)", k)
	}
	// The same store reads again: the engine that decided during the
	// outage (fallbacks were not cached) now gets every user from Redis.
	for u, v := range during {
		if d := decide(t, fresh, user(u)); d.Variant != v || d.Source != cohort.SourceStore {
			t.Fatalf("user %s after recovery, same store: %s by %s, want %s from the store", u, d.Variant, d.Source, v)
		}
	}
	// Stored assignments win again, even after the weights change.
	after, m3 := newEngine(t, redisStore(t, r.URL(), metrics.New()), splitConfig(t, r.URL(), 10, 90))
	for u, v := range during {
		if d := decide(t, after, user(u)); d.Variant != v {
			t.Fatalf("user %s: %s after recovery, %s before", u, d.Variant, v)
		}
	}
	if got := testutil.ToFloat64(m3.Decisions.WithLabelValues("m", "v0", "store")) + testutil.ToFloat64(m3.Decisions.WithLabelValues("m", "v1", "store")); got != float64(len(during)) {
		t.Errorf("%v decisions from the store after recovery, want %d", got, len(during))
	}
}

// A hung Redis (accepts connections, never answers) costs at most the
// budget per read until it is marked down; decisions never hang.
func TestHungRedis(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Store.Timeout = config.Duration(50 * time.Millisecond)
	e, _ := newEngine(t, store, cfg)
	decide(t, e, user("warm"))
	r.Pause()
	defer r.Resume()
	start := time.Now()
	for i := 0; i < 200; i++ {
		if d := decide(t, e, user(fmt.Sprintf("h-%d", i))); d.Source != cohort.SourceFallback {
			t.Fatalf("new user %d against a hung redis decided by %s, want fallback", i, d.Source)
		}
	}
	took := time.Since(start)
	t.Logf("200 decisions against a hung redis took %v; timeouts counted %v", took, testutil.ToFloat64(m.StoreTimeouts))
	// Without the budget each decision would wait out the hung read: 200 x
	// 50ms = 10s at least. 5s leaves a wide margin for a loaded machine.
	if took > 5*time.Second {
		t.Errorf("decisions against a hung redis took %v: the budget is not enforced", took)
	}
	if testutil.ToFloat64(m.StoreTimeouts) == 0 {
		t.Error("no store timeouts counted")
	}
}
