package cohort_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// BenchmarkDecideCacheHit: a returning user found in the in-process cache.
func BenchmarkDecideCacheHit(b *testing.B) {
	e := cohort.NewEngine(cohort.NewMemoryStore(0), cohort.Options{Metrics: metrics.New()})
	e.SetConfig(splitConfig(b, "", 90, 10))
	users := make([]headers, 1024)
	for i := range users {
		users[i] = user(fmt.Sprintf("u%d", i))
		e.Decide(context.Background(), "m", users[i])
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := e.Decide(ctx, "m", users[i&1023]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkDecideRedisMiss: a user not in the cache, read from Redis (one
// round trip over loopback to a real redis-server; compare
// BenchmarkRedisGetFloor). "with-redis-list-rule" adds a Redis user-list
// rule whose answer is not cached either; its SISMEMBER travels in the same
// pipelined round trip as the assignment's GET, so the two cases should
// cost about the same. After the loop the cache counters must show that
// every decision missed the cache (a cache hit also reports SourceStore).
func BenchmarkDecideRedisMiss(b *testing.B) {
	r := testredis.Start(b)
	for _, withList := range []bool{false, true} {
		name := "one-round-trip"
		if withList {
			name = "with-redis-list-rule"
		}
		b.Run(name, func(b *testing.B) {
			m := metrics.New()
			store := redisStore(b, r.URL(), m)
			cfg := splitConfig(b, r.URL(), 90, 10)
			if !withList {
				cfg.Endpoints[0].Rules = cfg.Endpoints[0].Rules[:3] // header rules only
			}
			// Every decision misses the cache (one entry per shard).
			e := cohort.NewEngine(store, cohort.Options{Metrics: m, CacheSize: 1, ListCacheTTL: -1})
			e.SetConfig(cfg)
			const n = 4096
			users := make([]headers, n)
			for i := range users {
				users[i] = user(fmt.Sprintf("u%d", i))
				e.Decide(context.Background(), "m", users[i])
			}
			e.Close()
			ctx := context.Background()
			hits0, misses0 := testutil.ToFloat64(m.CacheHits), testutil.ToFloat64(m.CacheMisses)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				d, err := e.Decide(ctx, "m", users[i%n])
				if err != nil || d.Source != cohort.SourceStore {
					b.Fatalf("decision %+v, %v: want one from the store", d, err)
				}
				i++
			}
			hits, misses := testutil.ToFloat64(m.CacheHits)-hits0, testutil.ToFloat64(m.CacheMisses)-misses0
			if misses < 0.99*float64(i) || hits > 0.01*float64(i) {
				b.Fatalf("%d decisions: %.0f cache misses, %.0f hits: this did not measure Redis reads", i, misses, hits)
			}
		})
	}
}

// BenchmarkDecideNewUser: first sight of a user — cache and store miss,
// hash, cache, write-behind (memory store). Cache and store hold 32
// entries (one per shard) for 65,536 cycling users, so every decision is
// a new user.
func BenchmarkDecideNewUser(b *testing.B) {
	e := cohort.NewEngine(cohort.NewMemoryStore(1), cohort.Options{Metrics: metrics.New(), CacheSize: 1})
	e.SetConfig(splitConfig(b, "", 90, 5, 5))
	ctx := context.Background()
	keys := make([]headers, 1<<16)
	for i := range keys {
		keys[i] = user(fmt.Sprintf("new-%d", i))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if d, _ := e.Decide(ctx, "m", keys[i&(1<<16-1)]); d.Source != cohort.SourceHash {
			b.Fatalf("decision by %s, want a new user (hash)", d.Source)
		}
		i++
	}
}

// BenchmarkDecideCacheHitParallel: returning users from every core at
// once (the cache is sharded; the counters are shared).
func BenchmarkDecideCacheHitParallel(b *testing.B) {
	e := cohort.NewEngine(cohort.NewMemoryStore(0), cohort.Options{Metrics: metrics.New()})
	e.SetConfig(splitConfig(b, "", 90, 10))
	users := make([]headers, 1024)
	for i := range users {
		users[i] = user(fmt.Sprintf("u%d", i))
		e.Decide(context.Background(), "m", users[i])
	}
	var worker atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		// Each goroutine starts elsewhere in the user list: walking the
		// same sequence in lockstep would measure contention on one shard
		// that real traffic does not have.
		i := int(worker.Add(1)) * 331
		for pb.Next() {
			if _, err := e.Decide(ctx, "m", users[i&1023]); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}

// BenchmarkRedisGetFloor is the floor under BenchmarkDecideRedisMiss: a
// bare go-redis GET of one stored key on the same kind of server, so the
// difference is what the engine adds to a miss.
func BenchmarkRedisGetFloor(b *testing.B) {
	r := testredis.Start(b)
	c := redisClient(b, r)
	ctx := context.Background()
	if err := c.Set(ctx, "t:a:floor", "v0", 0).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Get(ctx, "t:a:floor").Err(); err != nil {
			b.Fatal(err)
		}
	}
}
