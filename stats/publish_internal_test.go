package stats

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/internal/testredis"
)

// A closed window is handed to the publisher only once it has been
// closed for a whole window length (late adds have landed by then), not
// as it closes.
func TestWindowsPublishedAWindowAfterClosing(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 1, 0, time.UTC)
	r := New(Options{Now: func() time.Time { return now }})
	r.Variant("ep", "a").Request(Class2xx, time.Millisecond)
	now = now.Add(9 * time.Second) // 10:00:10, the boundary
	r.Rotate()
	ep := r.lookup("ep")
	if len(ep.closed) != 1 || ep.closed[0].published {
		t.Fatalf("%d closed windows, published %v: want one, not yet published", len(ep.closed), len(ep.closed) == 1 && ep.closed[0].published)
	}
	now = now.Add(DefaultWindow - time.Nanosecond)
	r.Rotate()
	if ep.closed[0].published {
		t.Fatal("published before it had been closed a whole window length")
	}
	now = now.Add(time.Nanosecond)
	r.Rotate()
	if !ep.closed[0].published {
		t.Fatal("not published a window length after closing")
	}
}

// A published slot lives for the retention plus two windows (the slot's
// own and the publishing lag), so MergedWindows still finds every slot
// the local retention keeps; a recorder that does not publish has no
// failures.
func TestPublishedSlotTTL(t *testing.T) {
	srv := testredis.Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opt)
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := New(Options{Window: time.Hour, Retention: 10 * time.Hour})
	if d, f := r.PublishFailures(); d != 0 || f != 0 {
		t.Fatalf("failures %d %d before publishing", d, f)
	}
	r.Publish(ctx, client, "t:")
	p := r.publisher.Load()
	w := Window{Weights: map[string]int{"a": 1}, Variants: map[string]VariantCounts{"a": {Requests: 1}}}
	if err := p.write(ctx, "t:slot", w); err != nil {
		t.Fatal(err)
	}
	// 12 h set; an hour of slack for the time the test takes.
	if ttl := client.TTL(ctx, "t:slot").Val(); ttl <= 11*time.Hour || ttl > 12*time.Hour {
		t.Errorf("TTL %v, want 12h (retention 10h plus two 1h windows)", ttl)
	}
}

// A field of the slot's hash that is not in the layout (another writer's,
// or damaged) is skipped; every other field is still read, whatever order
// HGETALL gives them in.
func TestMergedWindowsSkipStrayFields(t *testing.T) {
	srv := testredis.Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opt)
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := time.Date(2026, 11, 29, 10, 0, 30, 0, time.UTC)
	r := New(Options{Now: func() time.Time { return now }})
	r.Publish(ctx, client, "t:")
	slot := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	key := r.slotKey("t:", "ep", slot)
	w := Window{Weights: map[string]int{"a": 1}, Variants: map[string]VariantCounts{"a": {Requests: 3, Decisions: 2, Assigned: 1}}}
	if err := r.publisher.Load().write(ctx, key, w); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"stray", "x|v|nopipe", "y|s|none"} {
		client.HSet(ctx, key, f, "1")
	}
	for range 20 {
		ws, err := r.MergedWindows(ctx, client, "t:", "ep", slot)
		if err != nil {
			t.Fatal(err)
		}
		var got VariantCounts
		for _, w := range ws {
			if w.Weights["a"] == 1 {
				got = w.Variants["a"]
			}
		}
		if got.Requests != 3 || got.Decisions != 2 || got.Assigned != 1 {
			t.Fatalf("with stray fields: %+v, want 3 requests, 2 decisions, 1 assigned", got)
		}
	}
}

// setCounter reads every bucket and class index in range, from the first
// to the last, and skips one out of range or not a number.
func TestSetCounterIndexes(t *testing.T) {
	var c VariantCounts
	for counter, val := range map[string]string{
		"l0": "1", "l14": "2", "l15": "9", "l-1": "9", "lx": "9",
		"c0": "3", "c5": "4", "c6": "9", "c-1": "9", "cx": "9",
		"req": "5", "dec": "6", "new": "7", "rn": "8", "lsum": "0.5", "rs": "1.5", "rq": "2.5",
	} {
		if err := setCounter(&c, counter, val); err != nil {
			t.Fatalf("%s: %v", counter, err)
		}
	}
	if c.Latency.Counts[0] != 1 || c.Latency.Counts[NumBuckets-1] != 2 || c.Latency.Count() != 3 {
		t.Errorf("latency %v, want 1 in the first bucket, 2 in the last, nothing else", c.Latency.Counts)
	}
	if c.Responses[0] != 3 || c.Responses[NumClasses-1] != 4 || c.Responses[1]+c.Responses[2]+c.Responses[3]+c.Responses[4] != 0 {
		t.Errorf("responses %v, want 3 none and 4 5xx", c.Responses)
	}
	if c.Requests != 5 || c.Decisions != 6 || c.Assigned != 7 || c.Rewards != 8 || c.Latency.Sum != 0.5 || c.RewardSum != 1.5 || c.RewardSumSquares != 2.5 {
		t.Errorf("counts %+v", c)
	}
	if err := setCounter(&c, "req", "x"); err == nil {
		t.Error("a count that is not a number was taken")
	}
	if err := setCounter(&c, "rs", "x"); err == nil {
		t.Error("a sum that is not a number was taken")
	}
}
