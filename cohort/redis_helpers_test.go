package cohort_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

func redisClient(t testing.TB, r *testredis.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

func redisAdd(t testing.TB, r *testredis.Server, set, member string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := redisClient(t, r).SAdd(ctx, set, member).Err(); err != nil {
		t.Fatal(err)
	}
}

// redisKeys counts stored assignments (keys under the test prefix "t:a:").
func redisKeys(t testing.TB, r *testredis.Server) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := 0
	iter := redisClient(t, r).Scan(ctx, 0, "t:a:*", 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	return n
}

// writesLost is modelsplit_store_writes_lost_total over every reason.
func writesLost(m *metrics.Metrics) float64 {
	n := 0.0
	for _, r := range []string{"queue_full", "retry_full", "refused", "shutdown"} {
		n += testutil.ToFloat64(m.StoreWritesLost.WithLabelValues(r))
	}
	return n
}
