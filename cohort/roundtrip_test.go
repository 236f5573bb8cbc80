package cohort

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// readTrips counts round trips to Redis that carry a read (a command, or
// a pipeline holding at least one), leaving out write-behind batches.
type readTrips struct{ n atomic.Int64 }

func isRead(c redis.Cmder) bool {
	switch c.Name() {
	case "get", "getex", "sismember":
		return true
	}
	return false
}

func (h *readTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *readTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, c redis.Cmder) error {
		if isRead(c) {
			h.n.Add(1)
		}
		return next(ctx, c)
	}
}
func (h *readTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if isRead(c) {
				h.n.Add(1)
				break
			}
		}
		return next(ctx, cmds)
	}
}

type mapHeaders map[string]string

func (h mapHeaders) Get(name string) (string, bool) { v, ok := h[name]; return v, ok }

// With Redis user-list rules, a decision costs at most one round trip: the
// lists and the assignment are read together, and then cached.
func TestRedisListRulesCostOneRoundTrip(t *testing.T) {
	r := testredis.Start(t)
	cfg, err := config.Parse("rt.yaml", []byte(fmt.Sprintf(`
store: {redis: %q, key_prefix: "rt:", timeout: 1s}
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {header: x-user-id, ttl: 1h}
    variants:
      - {name: a, weight: 50, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 50, backends: ["10.0.0.2:80"]}
      - {name: c, weight: 0, backends: ["10.0.0.3:80"]}
    rules:
      - {header: x-region, equals: eu, variant: a}
      - {user_list: beta, variant: b}
      - {user_list: gamma, variant: c}
`, r.URL())))
	if err != nil {
		t.Fatal(err)
	}
	open := func() (*Engine, *readTrips) {
		s, err := NewRedisStore(cfg.Store, nil, metrics.New())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		trips := &readTrips{}
		s.(*redisStore).client.AddHook(trips)
		e := NewEngine(s, Options{Metrics: metrics.New()})
		e.SetConfig(cfg)
		return e, trips
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	if err := c.SAdd(ctx, "rt:list:gamma", "gamma-user").Err(); err != nil {
		t.Fatal(err)
	}

	e, trips := open()
	step := func(name, id string, wantVariant string, wantSource Source, wantTrips int64) {
		t.Helper()
		before := trips.n.Load()
		d, err := e.Decide(ctx, "m", mapHeaders{"x-user-id": id})
		if err != nil {
			t.Fatal(err)
		}
		if got := trips.n.Load() - before; got != wantTrips {
			t.Errorf("%s: %d read round trips, want %d", name, got, wantTrips)
		}
		if d.Source != wantSource || (wantVariant != "" && d.Variant != wantVariant) {
			t.Errorf("%s: %s by %s, want %q by %s", name, d.Variant, d.Source, wantVariant, wantSource)
		}
	}
	step("new user, two list rules", "newbie", "", SourceHash, 1)
	step("same user again", "newbie", "", SourceStore, 0)
	step("user in the second list", "gamma-user", "c", SourceRule, 1)
	step("header rule before the lists", "x", "", SourceHash, 1) // no x-region: lists + assignment
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	// A fresh engine (cold caches) on the same Redis: a stored user is one
	// round trip too, lists and assignment together.
	e, trips = open()
	step("stored user, cold caches", "newbie", "", SourceStore, 1)
	step("stored user, warm caches", "newbie", "", SourceStore, 0)
}
