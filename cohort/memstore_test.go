package cohort

import (
	"context"
	"testing"
	"time"
)

// An assignment lives until the instant its TTL runs out, not through it;
// a read without a TTL does not extend it; and only a new assignment counts
// a user.
func TestMemoryStoreExpiryEdges(t *testing.T) {
	t0 := time.Unix(2_000_000, 0)
	clock := t0
	s := NewMemoryStore(100).(*memoryStore)
	s.now = func() time.Time { return clock }
	ctx := context.Background()

	s.PutIfAbsent(Assignment{Key: "edge-1", Variant: "a", TTL: time.Hour})
	s.PutIfAbsent(Assignment{Key: "edge-2", Variant: "a", TTL: time.Hour})
	clock = t0.Add(time.Hour - 1)
	if _, ok, _ := s.Get(ctx, "edge-1", 0); !ok {
		t.Fatal("1 ns before its TTL ran out: gone")
	}
	clock = t0.Add(time.Hour)
	if v, ok, _ := s.Get(ctx, "edge-2", 0); ok {
		t.Fatalf("at the instant its TTL ran out: still %q", v)
	}
	// edge-1 was read without a TTL just before: its expiry did not move.
	if v, ok, _ := s.Get(ctx, "edge-1", 0); ok {
		t.Fatalf("read without a TTL, then reached its expiry: still %q", v)
	}

	s.PutIfAbsent(Assignment{Key: "u", Variant: "a", TTL: time.Hour, Users: "users:m:a"})
	s.PutIfAbsent(Assignment{Key: "u", Variant: "a", TTL: time.Hour, Users: "users:m:a"})
	s.PutIfAbsent(Assignment{Key: "u", Variant: "b", TTL: time.Hour, Users: "users:m:b"})
	got, err := s.CountUsers(ctx, []string{"users:m:a", "users:m:b"})
	if err != nil || got[0] != 1 || got[1] != 0 {
		t.Fatalf("users after one assignment and two puts over it: %v %v, want [1 0]", got, err)
	}
}

// The memory store's Lookup reads the assignment like Get and answers no
// list membership (it holds no lists); without a key it reads nothing.
func TestMemoryStoreLookup(t *testing.T) {
	s := NewMemoryStore(100)
	ctx := context.Background()
	s.PutIfAbsent(Assignment{Key: "k", Variant: "a", TTL: time.Hour})
	l := &Lookup{Key: "k", TTL: time.Hour, Member: "user", Lists: []string{"list:x", "list:y"}}
	s.Lookup(ctx, l)
	if !l.Found || l.Variant != "a" || l.Err != nil || l.ListErr != nil || len(l.In) != 2 || l.In[0] || l.In[1] {
		t.Fatalf("lookup of a stored key: %+v", l)
	}
	none := &Lookup{Member: "user", Lists: []string{"list:x"}}
	s.Lookup(ctx, none)
	if none.Found || none.Variant != "" || len(none.In) != 1 {
		t.Fatalf("lookup without a key: %+v", none)
	}
}

// A cookie whose value is an empty quoted string ("") carries no key: the
// next cookie of that name, if any, does.
func TestCookieValueEmptyQuotes(t *testing.T) {
	for header, want := range map[string]string{
		`uid=""`:            "",
		`uid=""; uid=later`: "later",
		`uid="x"`:           "x",
		`uid="`:             `"`,
	} {
		got, ok := cookieValue(header, "uid")
		if got != want || ok != (want != "") {
			t.Errorf("cookieValue(%q) = %q, %v; want %q, %v", header, got, ok, want, want != "")
		}
	}
}
