package cohort

import (
	"context"
	"testing"
	"time"
)

// The memory store's TTL slides: each Get renews it, an expired entry is
// gone, and a new assignment may then take its place without a conflict.
func TestMemoryStoreTTL(t *testing.T) {
	clock := time.Unix(1_000_000, 0)
	s := NewMemoryStore(100).(*memoryStore)
	s.now = func() time.Time { return clock }
	ctx := context.Background()
	s.PutIfAbsent(Assignment{Key: "k", Variant: "a", TTL: time.Hour})
	for _, step := range []time.Duration{30 * time.Minute, 45 * time.Minute, 59 * time.Minute} {
		clock = clock.Add(step)
		if v, ok, _ := s.Get(ctx, "k", time.Hour); !ok || v != "a" {
			t.Fatalf("after %v since the last read: %q %v, want a (renewed on read)", step, v, ok)
		}
	}
	clock = clock.Add(61 * time.Minute)
	if v, ok, _ := s.Get(ctx, "k", time.Hour); ok {
		t.Fatalf("unread for 61m with a 1h TTL: still %q", v)
	}
	conflict := false
	s.PutIfAbsent(Assignment{Key: "k", Variant: "b", TTL: time.Hour, OnConflict: func() { conflict = true }})
	if v, _, _ := s.Get(ctx, "k", time.Hour); v != "b" || conflict {
		t.Fatalf("new assignment after expiry: %q (conflict %v), want b", v, conflict)
	}
	// A live entry is kept, and a different variant is reported as a conflict.
	s.PutIfAbsent(Assignment{Key: "k", Variant: "c", OnConflict: func() { conflict = true }})
	if v, _, _ := s.Get(ctx, "k", 0); v != "b" || !conflict {
		t.Fatalf("put over a live entry: %q (conflict %v), want b kept and a conflict", v, conflict)
	}
	// Without a TTL nothing expires.
	s.PutIfAbsent(Assignment{Key: "forever", Variant: "a"})
	clock = clock.Add(10 * 365 * 24 * time.Hour)
	if _, ok, _ := s.Get(ctx, "forever", 0); !ok {
		t.Fatal("an assignment without TTL expired")
	}
}
