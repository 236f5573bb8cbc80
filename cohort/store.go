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
	// An error means the store could not answer within its budget. With
	// ttl > 0 a found assignment's expiry is renewed to ttl from now:
	// sticky.ttl forgets users who have not been seen for that long, never
	// an active user in the middle of an experiment.
	Get(ctx context.Context, key string, ttl time.Duration) (variant string, found bool, err error)
	// PutIfAbsent records an assignment unless one exists, without making
	// the caller wait (write-behind). "If absent" makes replicas and
	// decisions taken while the store was unreadable never overwrite an
	// assignment made elsewhere.
	PutIfAbsent(a Assignment)
	// Lookup answers l in one round trip: the assignment under l.Key (when
	// set) and l.Member's membership of each of l.Lists. Rules on Redis
	// user lists use it, so a new user costs one round trip, not one per
	// list plus one for the assignment.
	Lookup(ctx context.Context, l *Lookup)
	// Healthy is false while the store is considered down.
	Healthy() bool
	// Flush waits until queued writes have been attempted (tests, shutdown).
	Flush(ctx context.Context) error
	Close() error
}

// Assignment is one write-behind record.
type Assignment struct {
	Key     string
	Variant string
	TTL     time.Duration // 0: no expiry
	// Users, when set, is the per-variant user counter the new assignment
	// is added to (see UserCounter).
	Users string
	// WriteBack marks a decision made while the store could not be read
	// (down or over budget): its write is counted in StoreWriteBacks.
	WriteBack bool
	// OnConflict, when set, is called (possibly from another goroutine) if
	// the store already held an assignment under Key: another replica
	// decided first, and the caller's in-process copy must be dropped so
	// the stored one is read and every replica agrees.
	OnConflict func()
}

// UserCounter is implemented by stores that count the users assigned to
// each variant (keys are the engine's <prefix>users:<endpoint>:<variant>).
type UserCounter interface {
	CountUsers(ctx context.Context, keys []string) ([]int64, error)
}

// Lookup is one round trip of reads for a decision, filled in by the store.
type Lookup struct {
	Key    string        // assignment key; "" when the assignment is not needed
	TTL    time.Duration // renews a found assignment, as in Get
	Member string        // the raw user key, for the lists
	Lists  []string      // user-list keys (Redis sets)

	Variant string // the assignment, when Found
	Found   bool
	Err     error  // reading the assignment failed
	In      []bool // In[i]: Member is in Lists[i]; len(Lists) long
	ListErr error  // reading the lists failed; In says nothing
}

// ErrStoreDown is returned by stores while they are marked unreachable.
var ErrStoreDown = errors.New("assignment store unreachable")

// memoryStore is the single-replica store. It is bounded: past maxEntries
// the oldest assignments are forgotten (those users are re-hashed, which
// gives the same answer unless the weights changed since). Expiry follows
// the same sliding TTL as the Redis store.
type memoryStore struct {
	m   *boundedMap[memEntry]
	now func() time.Time // time.Now; tests move it

	usersMu sync.Mutex
	users   map[string]int64 // Assignment.Users → assignments made
}

type memEntry struct {
	variant string
	expires int64 // unix nanoseconds; 0: never
}

func (e memEntry) live(now int64) bool { return e.expires == 0 || now < e.expires }

// expiry is now+ttl in unix nanoseconds, 0 (never) without a ttl.
func expiry(now int64, ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return now + int64(ttl)
}

// NewMemoryStore returns an in-memory store holding at most maxEntries
// assignments (1,000,000 when maxEntries <= 0). It has no user lists:
// lists in the config are checked by the engine itself.
func NewMemoryStore(maxEntries int) Store {
	if maxEntries <= 0 {
		maxEntries = 1_000_000
	}
	return &memoryStore{m: newBoundedMap[memEntry](maxEntries), now: time.Now, users: map[string]int64{}}
}

// memKey compresses the engine's key: it already holds a 64-bit hash of
// the user, so hashing it again costs nothing in uniqueness that matters.
func memKey(key string) cacheKey {
	return cacheKey{user: keyHash(0, key)}
}

func (m *memoryStore) Get(_ context.Context, key string, ttl time.Duration) (string, bool, error) {
	now := m.now().UnixNano()
	var (
		variant string
		found   bool
	)
	m.m.update(memKey(key), func(e memEntry, ok bool) (memEntry, bool) {
		if !ok || !e.live(now) {
			return e, false // an expired entry is dropped
		}
		if ttl > 0 {
			e.expires = expiry(now, ttl)
		}
		variant, found = e.variant, true
		return e, true
	})
	return variant, found, nil
}

func (m *memoryStore) PutIfAbsent(a Assignment) {
	now := m.now().UnixNano()
	conflict, added := false, false
	m.m.update(memKey(a.Key), func(e memEntry, ok bool) (memEntry, bool) {
		if ok && e.live(now) {
			conflict = e.variant != a.Variant
			return e, true
		}
		added = true
		return memEntry{variant: a.Variant, expires: expiry(now, a.TTL)}, true
	})
	if added && a.Users != "" {
		m.usersMu.Lock()
		m.users[a.Users]++
		m.usersMu.Unlock()
	}
	if conflict && a.OnConflict != nil {
		a.OnConflict()
	}
}

// CountUsers returns the assignments made under each counter key.
func (m *memoryStore) CountUsers(_ context.Context, keys []string) ([]int64, error) {
	m.usersMu.Lock()
	defer m.usersMu.Unlock()
	out := make([]int64, len(keys))
	for i, k := range keys {
		out[i] = m.users[k]
	}
	return out, nil
}

// Lookup reads the assignment. The memory store holds no user lists:
// without Redis every list is in the config, and the engine checks those.
func (m *memoryStore) Lookup(ctx context.Context, l *Lookup) {
	if l.Key != "" {
		l.Variant, l.Found, l.Err = m.Get(ctx, l.Key, l.TTL)
	}
	l.In = make([]bool, len(l.Lists))
}

func (m *memoryStore) Healthy() bool               { return true }
func (m *memoryStore) Flush(context.Context) error { return nil }
func (m *memoryStore) Close() error                { return nil }
