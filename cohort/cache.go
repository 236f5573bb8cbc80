package cohort

import "sync"

// boundedMap is the bounded in-process cache behind assignments and user
// list lookups. It is sharded so concurrent decisions rarely contend, and
// each shard evicts by CLOCK (second chance) once full: an entry read since
// the hand last passed survives one more round, so returning users stay
// cached while a flood of one-time visitors cycles through. Memory stays
// bounded whatever the number of users; an evicted entry is simply read
// from the store again.
type boundedMap[V any] struct {
	shards [cacheShards]cacheShard[V]
}

const cacheShards = 32

type cacheKey struct {
	space uint32 // an endpoint's salt generation, or a user list, see Engine
	user  uint64 // keyHash
}

type cacheShard[V any] struct {
	mu    sync.Mutex
	index map[cacheKey]int32 // key → slot
	slots []clockSlot[V]
	hand  int
	limit int // entries; memory grows with use, up to this
}

type clockSlot[V any] struct {
	key  cacheKey
	val  V
	used bool // holds a live entry (false after remove)
	ref  bool // read since the hand last passed
}

func newBoundedMap[V any](size int) *boundedMap[V] {
	per := max(size/cacheShards, 1)
	c := &boundedMap[V]{}
	for i := range c.shards {
		c.shards[i].index = make(map[cacheKey]int32)
		c.shards[i].limit = per
	}
	return c
}

func (c *boundedMap[V]) shard(k cacheKey) *cacheShard[V] { return &c.shards[k.user%cacheShards] }

func (c *boundedMap[V]) get(k cacheKey) (V, bool) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[k]
	if !ok {
		var zero V
		return zero, false
	}
	s.slots[i].ref = true
	return s.slots[i].val, true
}

func (c *boundedMap[V]) put(k cacheKey, v V) {
	s := c.shard(k)
	s.mu.Lock()
	s.putLocked(k, v)
	s.mu.Unlock()
}

// update replaces k's entry by what f returns, atomically: f gets the
// current value (found false when absent) and returns the value to keep,
// or keep false to remove k.
func (c *boundedMap[V]) update(k cacheKey, f func(old V, found bool) (v V, keep bool)) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	var old V
	i, found := s.index[k]
	if found {
		old = s.slots[i].val
	}
	v, keep := f(old, found)
	switch {
	case keep:
		s.putLocked(k, v)
	case found:
		s.removeLocked(k)
	}
}

func (s *cacheShard[V]) putLocked(k cacheKey, v V) {
	if i, ok := s.index[k]; ok {
		s.slots[i].val = v
		s.slots[i].ref = true
		return
	}
	if len(s.slots) < s.limit {
		s.index[k] = int32(len(s.slots))
		s.slots = append(s.slots, clockSlot[V]{key: k, val: v, used: true})
		return
	}
	// Advance the hand past recently read entries (clearing their mark);
	// it stops within one turn, at a free slot or an unread entry.
	for s.slots[s.hand].used && s.slots[s.hand].ref {
		s.slots[s.hand].ref = false
		s.hand = (s.hand + 1) % len(s.slots)
	}
	victim := &s.slots[s.hand]
	if victim.used {
		delete(s.index, victim.key)
	}
	*victim = clockSlot[V]{key: k, val: v, used: true}
	s.index[k] = int32(s.hand)
	s.hand = (s.hand + 1) % len(s.slots)
}

func (s *cacheShard[V]) removeLocked(k cacheKey) {
	if i, ok := s.index[k]; ok {
		delete(s.index, k)
		s.slots[i] = clockSlot[V]{} // free: the hand reuses it first
	}
}

// remove forgets k.
func (c *boundedMap[V]) remove(k cacheKey) {
	s := c.shard(k)
	s.mu.Lock()
	s.removeLocked(k)
	s.mu.Unlock()
}

func (c *boundedMap[V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}
