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
