package rollout

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

// The rollout routes answer each action, its refusals by their status.
func TestRolloutRoutes(t *testing.T) {
	s := newSim(t, "", nil, 1)
	h := admin.New(admin.Options{})
	s.mgr.Register(h)
	for _, c := range []struct {
		method, path string
		code         int
		want         string
	}{
		{"GET", "/v1/endpoints/chat/rollout", 200, `"phase": "not_started"`},
		{"POST", "/v1/endpoints/chat/rollout/pause", 409, "no rollout running"},
		{"POST", "/v1/endpoints/chat/rollout/start", 200, `"phase": "running"`},
		{"POST", "/v1/endpoints/chat/rollout/start", 409, "already running"},
		{"POST", "/v1/endpoints/chat/rollout/pause", 200, `"phase": "paused"`},
		{"POST", "/v1/endpoints/chat/rollout/resume", 200, `"phase": "running"`},
		{"POST", "/v1/endpoints/chat/rollout/promote", 200, `"phase": "promoted"`},
		{"POST", "/v1/endpoints/chat/rollout/abort", 409, "no rollout running"},
		{"POST", "/v1/endpoints/chat/rollout/jump", 404, "unknown rollout action jump"},
		{"GET", "/v1/endpoints/nope/rollout", 404, "unknown endpoint"},
		{"GET", "/v1/rollouts", 200, `"endpoint": "chat"`},
	} {
		req := httptest.NewRequest(c.method, "http://127.0.0.1"+c.path, nil)
		if c.method != "GET" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%s %s: %d %.300s, want %d with %q", c.method, c.path, rec.Code, rec.Body.String(), c.code, c.want)
		}
	}
}

// One replica holds the lease at a time; it keeps it by renewing, and
// another takes it once it is released.
func TestRedisLease(t *testing.T) {
	srv := testredis.Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opt)
	defer client.Close()
	ctx := context.Background()
	a, b := NewRedisLease(client, "t:lease", time.Minute), NewRedisLease(client, "t:lease", time.Minute)
	if a.ID() == b.ID() {
		t.Fatalf("two leases share the id %s", a.ID())
	}
	for i, c := range []struct {
		l    *RedisLease
		want bool
	}{{a, true}, {b, false}, {a, true}, {b, false}} {
		if held, err := c.l.Hold(ctx); err != nil || held != c.want {
			t.Fatalf("hold %d: %v %v, want %v", i, held, err, c.want)
		}
	}
	if ttl := client.PTTL(ctx, "t:lease").Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("lease TTL %v, want the period", ttl)
	}
	b.Release(ctx) // not b's: nothing happens
	if held, _ := b.Hold(ctx); held {
		t.Fatal("a release by the other replica freed the lease")
	}
	a.Release(ctx)
	if held, err := b.Hold(ctx); err != nil || !held {
		t.Fatalf("after the holder released: %v %v, want b to take it", held, err)
	}
	srv.Kill()
	if held, err := b.Hold(ctx); err == nil || held {
		t.Fatalf("Redis down: %v %v, want an error", held, err)
	}
}
