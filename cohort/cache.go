package cohort

import "sync"

// boundedMap is the bounded in-process cache behind assignments and user
// list lookups. It is sharded so concurrent decisions rarely contend, and
// each shard evicts in insertion order (a ring of keys) once full: memory
// stays bounded whatever the number of users, and an evicted entry is
// simply read from the store again.
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
	m     map[cacheKey]V
	ring  []cacheKey
	next  int
	limit int // entries; memory grows with use, up to this
}

func newBoundedMap[V any](size int) *boundedMap[V] {
	per := size / cacheShards
	if per < 1 {
		per = 1
	}
	c := &boundedMap[V]{}
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey]V)
		c.shards[i].limit = per
	}
	return c
}

func (c *boundedMap[V]) shard(k cacheKey) *cacheShard[V] { return &c.shards[k.user%cacheShards] }

func (c *boundedMap[V]) get(k cacheKey) (V, bool) {
	s := c.shard(k)
	s.mu.Lock()
	v, ok := s.m[k]
	s.mu.Unlock()
	return v, ok
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
	old, found := s.m[k]
	v, keep := f(old, found)
	switch {
	case keep:
		s.putLocked(k, v)
	case found:
		delete(s.m, k)
	}
}

func (s *cacheShard[V]) putLocked(k cacheKey, v V) {
	if _, ok := s.m[k]; ok {
		s.m[k] = v
		return
	}
	if len(s.ring) < s.limit {
		s.ring = append(s.ring, k)
	} else {
		delete(s.m, s.ring[s.next])
		s.ring[s.next] = k
		s.next = (s.next + 1) % len(s.ring)
	}
	s.m[k] = v
}

// remove forgets k. Its ring slot stays until overwritten, which only
// makes a later eviction a no-op.
func (c *boundedMap[V]) remove(k cacheKey) {
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

func (c *boundedMap[V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
