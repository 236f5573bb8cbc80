package cohort_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// With Redis hung, writes pile up: the queue is bounded, the overflow is
// dropped and counted, and no caller ever waits.
func TestWriteQueueIsBoundedAndNeverBlocks(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	r.Pause()
	defer r.Resume()
	const n = 50_000
	start := time.Now()
	for i := 0; i < n; i++ {
		store.PutIfAbsent(cohort.Assignment{Key: fmt.Sprintf("t:a:q:%d", i), Variant: "v0"})
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("%d writes against a hung redis took %v: PutIfAbsent blocked", n, took)
	}
	if lost := testutil.ToFloat64(m.StoreWritesLost); lost == 0 || lost >= n {
		t.Errorf("writes lost = %v of %d, want some (the queue is bounded) but not all", lost, n)
	}
}

// Closing twice is harmless; writes after Close are dropped, and Flush
// does not wait for them.
func TestRedisStoreCloseIsFinal(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	store.Close()
	store.PutIfAbsent(cohort.Assignment{Key: "t:a:late", Variant: "v0"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := store.Flush(ctx); err != nil {
		t.Errorf("Flush after Close: %v", err)
	}
	if testutil.ToFloat64(m.StoreWritesLost) != 1 {
		t.Error("a write after Close was not counted as lost")
	}
	if _, _, err := store.Get(ctx, "t:a:late"); err == nil {
		t.Error("Get on a closed store succeeded")
	}
}
