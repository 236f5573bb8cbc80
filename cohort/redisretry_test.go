package cohort

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// downStore is a Redis store whose server was killed before it started:
// it starts down and stays down (its prober's PINGs are refused).
func downStore(t *testing.T, log *zap.Logger, m *metrics.Metrics) *redisStore {
	t.Helper()
	r := testredis.Start(t)
	r.Kill()
	s, err := NewRedisStore(config.Store{Redis: r.URL(), KeyPrefix: "t:", Timeout: config.Duration(50 * time.Millisecond)}, log, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rs := s.(*redisStore)
	if rs.Healthy() {
		t.Fatal("store up with its server killed")
	}
	return rs
}

// While Redis is down a key's first decision is the one kept for retry
// (later ones for the same key are skipped, not the keys after them), and
// the buffer holds at most retryBufferSize assignments: the next one is
// counted lost (retry_full).
func TestRetryBufferKeepsFirstDecisionAndIsBounded(t *testing.T) {
	m := metrics.New()
	s := downStore(t, nil, m)
	s.keepForRetry([]Assignment{
		{Key: "t:a:k1", Variant: "v0"},
		{Key: "t:a:k1", Variant: "v1"},
		{Key: "t:a:k2", Variant: "v1"},
	})
	if got := s.retry["t:a:k1"].Variant; got != "v0" {
		t.Errorf("kept %q for k1, want v0 (its first decision)", got)
	}
	if got := s.retry["t:a:k2"].Variant; got != "v1" {
		t.Errorf("kept %q for k2, want v1 (a key after a duplicate is kept too)", got)
	}
	fill := make([]Assignment, 0, retryBufferSize)
	for i := len(s.retry); i < retryBufferSize; i++ {
		fill = append(fill, Assignment{Key: fmt.Sprintf("t:a:fill-%d", i), Variant: "v0"})
	}
	s.keepForRetry(fill)
	retryFull := m.StoreWritesLost.WithLabelValues(lostRetryFull)
	if n, lost := s.retryLen(), testutil.ToFloat64(retryFull); n != retryBufferSize || lost != 0 {
		t.Fatalf("after filling: %d kept, %v lost; want %d kept, none lost", n, lost, retryBufferSize)
	}
	s.keepForRetry([]Assignment{{Key: "t:a:one-too-many", Variant: "v0"}, {Key: "t:a:k1", Variant: "v1"}, {Key: "t:a:two-too-many", Variant: "v0"}})
	if n, lost := s.retryLen(), testutil.ToFloat64(retryFull); n != retryBufferSize || lost != 2 {
		t.Errorf("two more past the bound: %d kept, %v lost; want %d kept, 2 lost (a key already kept is no loss)", n, lost, retryBufferSize)
	}
}

// Refused writes are warned about at most once per refusedLogEvery, the
// warning saying how many were refused since the last one.
func TestRefusedWritesWarnedOncePerInterval(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	s := downStore(t, zap.New(core), metrics.New())
	refusedWarnings := func() []int64 {
		var out []int64
		for _, e := range logs.All() {
			if e.Message != "" && e.ContextMap()["refused"] != nil {
				out = append(out, e.ContextMap()["refused"].(int64))
			}
		}
		return out
	}
	oom := errors.New("OOM command not allowed when used memory > 'maxmemory'")
	s.warnRefused(3, oom)
	s.warnRefused(4, oom) // within the interval: counted, not logged
	if got := refusedWarnings(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("warnings after 3 then 4 refused at once: %v, want [3]", got)
	}
	// The interval has passed since the first warning.
	s.refusedLog.Store(time.Now().Add(-refusedLogEvery - time.Second).UnixNano())
	s.warnRefused(5, oom)
	if got := refusedWarnings(); len(got) != 2 || got[1] != 9 {
		t.Fatalf("warnings once the interval passed: %v, want [3 9] (4+5 since the first)", got)
	}
	// Just short of the interval since the last warning: not yet.
	s.refusedLog.Store(time.Now().Add(-refusedLogEvery + 10*time.Second).UnixNano())
	s.warnRefused(1, oom)
	if got := refusedWarnings(); len(got) != 2 {
		t.Fatalf("warned again %v before the interval passed", got[2:])
	}
	s.refusedLog.Store(time.Now().Add(-refusedLogEvery - time.Second).UnixNano())
	s.warnRefused(1, oom)
	if got := refusedWarnings(); len(got) != 3 || got[2] != 2 {
		t.Errorf("warnings: %v, want [3 9 2]: the count restarts after each warning", got)
	}
}

// Writes kept for retry while Redis counts as up (a write-behind batch
// that found Redis down just as the prober brought it back, and was kept
// after the prober's replay) are written by the prober's next round; they
// do not wait for Close.
func TestProberReplaysWritesKeptWhileUp(t *testing.T) {
	r := testredis.Start(t)
	s, err := NewRedisStore(config.Store{Redis: r.URL(), KeyPrefix: "t:", Timeout: config.Duration(time.Second)}, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rs := s.(*redisStore)
	if !rs.Healthy() {
		t.Fatal("store down with redis running")
	}
	rs.keepForRetry([]Assignment{{Key: "t:a:late", Variant: "v1", TTL: time.Hour}})
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := c.Get(context.Background(), "t:a:late").Result()
		if err == nil && v == "v1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kept write not replayed within 10s (%q %v); kept: %d", v, err, rs.retryLen())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := rs.retryLen(); n != 0 {
		t.Errorf("%d writes still kept after the replay", n)
	}
}
