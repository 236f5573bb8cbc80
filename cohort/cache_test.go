package cohort

import "testing"

func TestBoundedMapStaysBounded(t *testing.T) {
	const limit = 3200 // 100 per shard
	m := newBoundedMap[string](limit)
	for i := uint64(0); i < 100_000; i++ {
		m.put(cacheKey{space: 1, user: mix64(i)}, "v")
		if i%997 == 0 {
			m.remove(cacheKey{space: 1, user: mix64(i / 2)})
		}
	}
	if n := m.len(); n > limit || n < limit*9/10 {
		t.Fatalf("holds %d entries after 100,000 puts, limit %d", n, limit)
	}
	// The newest entries are the ones kept.
	for i := uint64(100_000 - 50); i < 100_000; i++ {
		if _, ok := m.get(cacheKey{space: 1, user: mix64(i)}); !ok {
			t.Fatalf("recent entry %d evicted", i)
		}
	}
	// Spaces are separate.
	if _, ok := m.get(cacheKey{space: 2, user: mix64(99_999)}); ok {
		t.Fatal("an entry of space 1 was found in space 2")
	}
	m.update(cacheKey{space: 1, user: mix64(99_999)}, func(old string, found bool) (string, bool) {
		if !found || old != "v" {
			t.Fatalf("update saw %q, %v; want the stored v", old, found)
		}
		return "w", true
	})
	if v, _ := m.get(cacheKey{space: 1, user: mix64(99_999)}); v != "w" {
		t.Fatalf("after update: %q, want w", v)
	}
	m.update(cacheKey{space: 1, user: mix64(99_999)}, func(string, bool) (string, bool) { return "", false })
	if _, ok := m.get(cacheKey{space: 1, user: mix64(99_999)}); ok {
		t.Fatal("update returning keep=false did not remove the entry")
	}
}

// CLOCK keeps entries that are read: returning users survive a flood of
// one-time visitors that a FIFO would have pushed them out with.
func TestBoundedMapKeepsReadEntries(t *testing.T) {
	const limit = 3200 // 100 per shard
	m := newBoundedMap[int](limit)
	hot := make([]cacheKey, 1000) // about a third of the capacity
	for i := range hot {
		hot[i] = cacheKey{space: 1, user: mix64(uint64(i))}
		m.put(hot[i], i)
	}
	for round := 0; round < 50; round++ {
		for _, k := range hot {
			if _, ok := m.get(k); !ok {
				t.Fatalf("round %d: returning entry %v evicted", round, k)
			}
		}
		// A quarter cache of one-time keys per round: a FIFO loses every
		// returning entry within four rounds; CLOCK keeps them as long as
		// they are read within one turn of the hand.
		for i := 0; i < limit/4; i++ {
			m.put(cacheKey{space: 2, user: mix64(uint64(round*limit + i))}, -1)
		}
	}
	if n := m.len(); n > limit {
		t.Fatalf("holds %d entries, limit %d", n, limit)
	}
}
