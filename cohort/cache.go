package cohort

import "sync"

// cache is the bounded in-process assignment cache. It is sharded so
// concurrent decisions rarely contend, and each shard evicts in insertion
// order (a ring of keys) once full: memory stays bounded whatever the
// number of users, and an evicted user is simply read from the store again.
type cache struct {
	shards [cacheShards]cacheShard
}

const cacheShards = 32

type cacheKey struct {
	endpoint uint32 // index of the endpoint's salt generation, see compiled
	user     uint64 // keyHash
}

type cacheShard struct {
	mu   sync.Mutex
	m    map[cacheKey]string
	ring []cacheKey
	next int
}

func newCache(size int) *cache {
	per := size / cacheShards
	if per < 1 {
		per = 1
	}
	c := &cache{}
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey]string, per)
		c.shards[i].ring = make([]cacheKey, 0, per)
	}
	return c
}

func (c *cache) shard(k cacheKey) *cacheShard { return &c.shards[k.user%cacheShards] }

func (c *cache) get(k cacheKey) (string, bool) {
	s := c.shard(k)
	s.mu.Lock()
	v, ok := s.m[k]
	s.mu.Unlock()
	return v, ok
}

func (c *cache) put(k cacheKey, v string) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[k]; ok {
		s.m[k] = v
		return
	}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, k)
	} else {
		delete(s.m, s.ring[s.next])
		s.ring[s.next] = k
		s.next = (s.next + 1) % len(s.ring)
	}
	s.m[k] = v
}

func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
