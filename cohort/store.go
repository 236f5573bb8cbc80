package cohort

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Store keeps assignments so they survive restarts and are shared by
// replicas. Keys are opaque strings built by the engine (endpoint, salt and
// a hash of the user key — never the raw user id).
type Store interface {
	// Get returns the stored variant. found is false when there is none.
	// An error means the store could not answer within its budget.
	Get(ctx context.Context, key string) (variant string, found bool, err error)
	// PutIfAbsent records an assignment unless one exists, without making
	// the caller wait (write-behind). "If absent" makes replicas and
	// decisions taken while the store was unreadable never overwrite an
	// assignment made elsewhere.
	PutIfAbsent(key, variant string, ttl time.Duration)
	// InList reports whether member is in the named user list.
	InList(ctx context.Context, list, member string) (bool, error)
	// Healthy is false while the store is considered down.
	Healthy() bool
	// Flush waits until queued writes have been attempted (tests, shutdown).
	Flush(ctx context.Context) error
	Close() error
}

// ErrStoreDown is returned by stores while they are marked unreachable.
var ErrStoreDown = errors.New("assignment store unreachable")

// memoryStore is the single-replica store. It is bounded: past maxEntries
// the oldest assignments are forgotten (those users are re-hashed, which
// gives the same answer unless the weights changed since).
type memoryStore struct {
	c  *cache
	mu sync.Mutex // makes PutIfAbsent's check-then-put atomic
}

// NewMemoryStore returns an in-memory store holding at most maxEntries
// assignments.
func NewMemoryStore(maxEntries int) Store {
	if maxEntries <= 0 {
		maxEntries = 1_000_000
	}
	return &memoryStore{c: newCache(maxEntries)}
}

func memKey(key string) cacheKey {
	return cacheKey{user: keyHash(0, key)}
}

func (m *memoryStore) Get(_ context.Context, key string) (string, bool, error) {
	v, ok := m.c.get(memKey(key))
	return v, ok, nil
}

func (m *memoryStore) PutIfAbsent(key, variant string, _ time.Duration) {
	k := memKey(key)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.c.get(k); !ok {
		m.c.put(k, variant)
	}
}

func (m *memoryStore) InList(context.Context, string, string) (bool, error) { return false, nil }
func (m *memoryStore) Healthy() bool                                        { return true }
func (m *memoryStore) Flush(context.Context) error                          { return nil }
func (m *memoryStore) Close() error                                         { return nil }
