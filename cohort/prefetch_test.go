package cohort

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// listReads records, per read round trip, the sets it asked SISMEMBER about.
type listReads struct {
	mu    sync.Mutex
	trips [][]string
}

func (h *listReads) record(cmds []redis.Cmder) {
	var sets []string
	read := false
	for _, c := range cmds {
		switch c.Name() {
		case "sismember":
			sets = append(sets, fmt.Sprint(c.Args()[1]))
			read = true
		case "get", "getex":
			read = true
		}
	}
	if read {
		h.mu.Lock()
		h.trips = append(h.trips, sets)
		h.mu.Unlock()
	}
}

func (h *listReads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *listReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, c redis.Cmder) error {
		h.record([]redis.Cmder{c})
		return next(ctx, c)
	}
}
func (h *listReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.record(cmds)
		return next(ctx, cmds)
	}
}

// A new user's decision reads, in one round trip, exactly the Redis lists
// of the rules (wherever they stand among header rules) and never a list
// the config itself defines.
func TestPrefetchReadsOnlyRedisLists(t *testing.T) {
	r := testredis.Start(t)
	cfg, err := config.Parse("pf.yaml", []byte(fmt.Sprintf(`
store: {redis: %q, key_prefix: "pf:", timeout: 1s}
user_lists:
  vip: [vip-1]
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {header: x-user-id, ttl: 1h}
    variants:
      - {name: a, weight: 50, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 50, backends: ["10.0.0.2:80"]}
    rules:
      - {user_list: beta, variant: b}
      - {header: x-region, equals: eu, variant: a}
      - {user_list: vip, variant: b}
      - {user_list: gamma, variant: a}
`, r.URL())))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewRedisStore(cfg.Store, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	reads := &listReads{}
	s.(*redisStore).client.AddHook(reads)
	e := NewEngine(s, Options{Metrics: metrics.New()})
	e.SetConfig(cfg)
	t.Cleanup(func() { e.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := e.Decide(ctx, "m", mapHeaders{"x-user-id": "newcomer"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Source != SourceHash {
		t.Fatalf("new user: %+v, want the hash", d)
	}
	reads.mu.Lock()
	defer reads.mu.Unlock()
	want := []string{"pf:list:beta", "pf:list:gamma"}
	if len(reads.trips) != 1 || !slices.Equal(reads.trips[0], want) {
		t.Fatalf("read round trips %q, want one asking about %q", reads.trips, want)
	}
}

// Lists already cached are not read again when the prefetch runs for
// another rule (here: a rule added by a reload), and the uncached lists
// after them still ride the same round trip.
func TestPrefetchSkipsCachedListsOnly(t *testing.T) {
	r := testredis.Start(t)
	config1 := func(lists ...string) *config.Config {
		rules := ""
		for i, l := range lists {
			rules += fmt.Sprintf("      - {user_list: %s, variant: %s}\n", l, []string{"a", "b"}[i%2])
		}
		cfg, err := config.Parse("pf.yaml", []byte(fmt.Sprintf(`
store: {redis: %q, key_prefix: "pf:", timeout: 1s}
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {header: x-user-id, ttl: 1h}
    variants:
      - {name: a, weight: 50, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 50, backends: ["10.0.0.2:80"]}
    rules:
%s`, r.URL(), rules)))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := config1("beta", "gamma")
	s, err := NewRedisStore(cfg.Store, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	reads := &listReads{}
	s.(*redisStore).client.AddHook(reads)
	e := NewEngine(s, Options{Metrics: metrics.New(), ListCacheTTL: time.Hour})
	e.SetConfig(cfg)
	t.Cleanup(func() { e.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	decideTrips := func(step string, want ...[]string) {
		t.Helper()
		reads.mu.Lock()
		reads.trips = nil
		reads.mu.Unlock()
		if _, err := e.Decide(ctx, "m", mapHeaders{"x-user-id": "regular"}); err != nil {
			t.Fatal(err)
		}
		reads.mu.Lock()
		defer reads.mu.Unlock()
		if fmt.Sprint(reads.trips) != fmt.Sprint(want) {
			t.Fatalf("%s: read round trips %q, want %q", step, reads.trips, want)
		}
	}
	decideTrips("first decision", []string{"pf:list:beta", "pf:list:gamma"})
	decideTrips("lists and assignment cached")
	e.SetConfig(config1("delta", "beta", "gamma", "epsilon"))
	decideTrips("two new lists around two cached ones", []string{"pf:list:delta", "pf:list:epsilon"})
}

// A list answer the prefetch skipped as cached, and that the bounded cache
// then evicted before its rule was evaluated, is read again on its own:
// the user is still found in the list.
func TestEvictedListAnswerIsReadAgain(t *testing.T) {
	r := testredis.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rc.SAdd(ctx, "ev:list:beta", "member").Err(); err != nil {
		t.Fatal(err)
	}
	withRules := func(lists ...string) *config.Config {
		rules := ""
		for _, l := range lists {
			rules += fmt.Sprintf("      - {user_list: %s, variant: b}\n", l)
		}
		cfg, err := config.Parse("ev.yaml", []byte(fmt.Sprintf(`
store: {redis: %q, key_prefix: "ev:", timeout: 1s}
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {header: x-user-id, ttl: 1h}
    variants:
      - {name: a, weight: 50, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 50, backends: ["10.0.0.2:80"]}
    rules:
%s`, r.URL(), rules)))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := withRules("beta")
	s, err := NewRedisStore(cfg.Store, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	// One cache entry per shard: a user's list answers all share a shard,
	// so caching one evicts the other.
	e := NewEngine(s, Options{Metrics: metrics.New(), ListCacheTTL: time.Hour, CacheSize: cacheShards})
	e.SetConfig(cfg)
	t.Cleanup(func() { e.Close() })
	if d, err := e.Decide(ctx, "m", mapHeaders{"x-user-id": "member"}); err != nil || d.Source != SourceRule || d.Variant != "b" {
		t.Fatalf("member of beta: %+v %v", d, err)
	}
	// beta's answer is cached; delta's is not, and caching it evicts beta's.
	e.SetConfig(withRules("delta", "beta"))
	if d, err := e.Decide(ctx, "m", mapHeaders{"x-user-id": "member"}); err != nil || d.Source != SourceRule || d.Variant != "b" {
		t.Fatalf("member of beta after a reload put delta first: %+v %v, want rule → b", d, err)
	}
}
