package cohort_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// Once every write kept while Redis was down has been written back, the
// store says so at debug level.
func TestReplayLoggedAtDebugOnceDone(t *testing.T) {
	r := testredis.Start(t)
	r.Kill()
	core, logs := observer.New(zap.DebugLevel)
	store, err := cohort.NewRedisStore(config.Store{Redis: r.URL(), KeyPrefix: "t:", Timeout: config.Duration(time.Second)}, zap.New(core), metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	store.PutIfAbsent(cohort.Assignment{Key: "t:a:kept", Variant: "v0", TTL: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.Restart()
	waitHealthy(t, store)
	for {
		for _, e := range logs.All() {
			if e.Level == zap.DebugLevel && strings.Contains(e.Message, "replayed assignments") {
				if k := redisKeys(t, r); k != 1 {
					t.Errorf("replay logged with %d keys written, want the 1 kept", k)
				}
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("no debug log of the replay within 10s; %d keys written", redisKeys(t, r))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
