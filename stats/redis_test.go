package stats_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/stats"
)

// TestMergedWindowsSumReplicas: two replicas (recorders on one clock)
// see parts of an endpoint's traffic and publish to one real Redis; the
// merged windows are their sums, slot by slot and weights by weights, a
// weight change splitting a slot at different instants on each.
func TestMergedWindowsSumReplicas(t *testing.T) {
	srv := testredis.Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opt)
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	c := newClock(at(0))
	r1 := newRecorder(c, stats.Options{})
	r2 := newRecorder(c, stats.Options{})
	for _, r := range []*stats.Recorder{r1, r2} {
		r.Publish(ctx, client, "t:")
		r.SetWeights("ep", map[string]int{"a": 90, "b": 10})
	}
	a1, b1, a2 := r1.Variant("ep", "a"), r1.Variant("ep", "b"), r2.Variant("ep", "a")
	s2 := r2.Shadow("ep", "s")

	// Slot [0, 10): 90/10 throughout.
	c.Set(at(1))
	for range 3 {
		a1.Request(stats.Class2xx, 10*time.Millisecond)
		a1.Assigned()
	}
	b1.Request(stats.Class5xx, time.Second)
	a2.Request(stats.Class2xx, 10*time.Millisecond)
	a2.Reward(0.5)
	s2.Compared(true)
	s2.Compared(false)
	// Slot [10, 20): weights change at 13 s on replica 1, 14 s on 2.
	c.Set(at(11))
	r1.Rotate()
	r2.Rotate()
	a1.Assigned()
	a2.Assigned()
	c.Set(at(13))
	r1.SetWeights("ep", map[string]int{"a": 50, "b": 50})
	a1.Assigned()
	c.Set(at(14))
	r2.SetWeights("ep", map[string]int{"a": 50, "b": 50})
	a2.Assigned()
	a2.Assigned()
	// Close and publish everything (a window is published a window
	// length after it closed).
	c.Set(at(40))
	r1.Rotate()
	r2.Rotate()

	var ws []stats.Window
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, err = r1.MergedWindows(ctx, client, "t:", "ep", at(0))
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) == 3 && ws[2].Variants["a"].Assigned == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(ws) != 3 {
		t.Fatalf("%d merged windows, want 3: %+v", len(ws), ws)
	}
	w := ws[0]
	a, b := w.Variants["a"], w.Variants["b"]
	if a.Requests != 4 || a.Assigned != 3 || a.Responses[stats.Class2xx] != 4 || a.Latency.Count() != 4 || a.Rewards != 1 || a.RewardSum != 0.5 {
		t.Errorf("slot 0 a = %+v", a)
	}
	if b.Requests != 1 || b.Responses[stats.Class5xx] != 1 || b.Latency.Counts[9] != 1 /* le=1 */ || b.Latency.Sum != 1 {
		t.Errorf("slot 0 b = %+v", b)
	}
	if s := w.Shadows["s"]; s.Compared != 2 || s.Agreed != 1 {
		t.Errorf("slot 0 shadow = %+v", s)
	}
	if w.Weights["a"] != 90 || !w.Start.Equal(at(0)) || !w.End.Equal(at(10)) {
		t.Errorf("slot 0: weights %v [%v, %v)", w.Weights, w.Start, w.End)
	}
	before, after := ws[1], ws[2]
	if before.Weights["a"] != 90 || before.Variants["a"].Assigned != 2 {
		t.Errorf("slot 10 before the change: weights %v assigned %d, want 90/10 and 2", before.Weights, before.Variants["a"].Assigned)
	}
	if after.Weights["a"] != 50 || after.Variants["a"].Assigned != 3 {
		t.Errorf("slot 10 after the change: weights %v assigned %d, want 50/50 and 3", after.Weights, after.Variants["a"].Assigned)
	}
	// Bounds come from the local record (replica 1's split at 13 s).
	if !before.Start.Equal(at(10)) || !before.End.Equal(at(13)) || !after.Start.Equal(at(13)) || !after.End.Equal(at(20)) {
		t.Errorf("slot 10 bounds [%v, %v) [%v, %v)", before.Start, before.End, after.Start, after.End)
	}
	if ttl := client.TTL(ctx, "t:stats:ep:"+strconv.FormatInt(at(0).Unix(), 10)).Val(); ttl <= 0 || ttl > 16*time.Minute {
		t.Errorf("TTL %v, want the retention", ttl)
	}
	if d, f := r1.PublishFailures(); d+f != 0 {
		t.Errorf("publish failures: %d dropped, %d failed", d, f)
	}
}
