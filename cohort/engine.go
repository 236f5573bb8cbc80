package cohort

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
)

// DefaultListCacheTTL is how long a Redis user-list answer is reused: a
// user added to (or removed from) a list is seen within this time, and a
// returning user's request costs no Redis round trip per list rule.
const DefaultListCacheTTL = 5 * time.Second

// Options configures an Engine.
type Options struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// CacheSize bounds the in-process assignment cache (entries); default
	// config.DefaultCacheSize. The user-list cache has the same bound.
	CacheSize int
	// ListCacheTTL overrides DefaultListCacheTTL; negative disables the
	// user-list cache (every list rule asks Redis).
	ListCacheTTL time.Duration
}

// Engine decides variants. It is safe for concurrent use; SetConfig swaps
// the compiled config atomically while decisions run.
type Engine struct {
	store   Store
	log     *zap.Logger
	metrics *metrics.Metrics
	cfg     atomic.Pointer[compiled]

	cache   *boundedMap[cached]     // (endpoint space, user) → stored variant
	lists   *boundedMap[listAnswer] // (list space, user) → Redis list membership
	listTTL time.Duration
	// inProcess is true for the memory store: no I/O, so no deadline.
	inProcess bool

	compileMu sync.Mutex        // serialises SetConfig
	spaces    map[string]uint32 // see space
}

// cached is a stored assignment held in process. With a sticky TTL it
// lives half the TTL: a user active on this replica is then read (and the
// stored expiry renewed) before the store forgets them, and a user the
// store forgot is not kept alive here alone.
type cached struct {
	variant string
	expires int64 // unix nanoseconds; 0: never
}

func cacheExpiry(now time.Time, ttl time.Duration) int64 {
	return expiry(now.UnixNano(), ttl/2)
}

type listAnswer struct {
	in      bool
	expires int64 // unix nanoseconds
}

// NewEngine returns an engine using store. Call SetConfig before Decide;
// until then every endpoint is unknown.
func NewEngine(store Store, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = config.DefaultCacheSize
	}
	if opts.ListCacheTTL == 0 {
		opts.ListCacheTTL = DefaultListCacheTTL
	}
	e := &Engine{store: store, log: opts.Logger, metrics: opts.Metrics,
		cache: newBoundedMap[cached](opts.CacheSize), lists: newBoundedMap[listAnswer](opts.CacheSize),
		listTTL: opts.ListCacheTTL, spaces: map[string]uint32{}}
	_, e.inProcess = store.(*memoryStore)
	return e
}

// Decide returns the variant for one request to endpoint. The only error
// is ErrUnknownEndpoint: store trouble degrades to the hash (SourceFallback).
func (e *Engine) Decide(ctx context.Context, endpointName string, h Headers) (Decision, error) {
	start := time.Now()
	c := e.cfg.Load()
	if c == nil {
		return Decision{}, ErrUnknownEndpoint
	}
	ep, ok := c.endpoints[endpointName]
	if !ok {
		return Decision{}, ErrUnknownEndpoint
	}
	idx, src, cookie := e.decide(ctx, c, ep, h, start)
	ep.counters[idx][src].Inc()
	ep.results[idx].Decided()
	d := Decision{Endpoint: ep.name, Variant: ep.variants[idx], Cluster: ep.clusters[idx], Source: src, SetCookie: cookie,
		Unsampled: ep.bandit && (src == SourceTarget || src == SourceRule)}
	if ep.hasMirror {
		key, hasKey := ep.userKey(h)
		var kh uint64
		if hasKey {
			kh = keyHash(ep.saltHash, key)
		}
		d.Mirror = ep.sample(kh, hasKey, false)
	}
	e.metrics.DecisionDuration.Observe(time.Since(start).Seconds())
	return d, nil
}

func (e *Engine) decide(ctx context.Context, c *compiled, ep *endpoint, h Headers, now time.Time) (int, Source, string) {
	// 1. Explicit target, only where allowed and only for a known variant.
	if ep.allowTarget {
		if t, ok := h.Get(config.TargetHeader); ok {
			if i, ok := ep.index[t]; ok {
				return i, SourceTarget, ""
			}
		}
	}
	key, hasKey := ep.userKey(h)
	// 2. Targeting rules, first match. A list that could not be read counts
	// as "not a member", and the decision is marked as a fallback.
	degraded := false
	var pf prefetched // Redis list answers and the assignment, read together
	for i := range ep.rules {
		match, ok := e.ruleMatches(ctx, c, ep, i, h, key, hasKey, now, &pf)
		degraded = degraded || !ok
		if match {
			return ep.rules[i].variant, SourceRule, ""
		}
	}
	// Anonymous: mint an id, or split requests at random by weight.
	cookie := ""
	if !hasKey {
		if !ep.mint {
			return ep.random(), SourceRandom, ""
		}
		key = mintID()
		cookie = ep.cookieFor(key)
	}
	kh := ep.userHash(key, now)
	// 3. Stored assignment: cache, then store.
	ck := cacheKey{space: ep.space, user: kh}
	if v, ok := e.cachedAssignment(ck, now); ok {
		e.metrics.CacheHits.Inc()
		i, src := ep.honour(v, key)
		return i, src, cookie
	}
	e.metrics.CacheMisses.Inc()
	hashed, stored := ep.assign(key)
	storeKey := ep.storeKey(kh)
	if cookie == "" { // a freshly minted id cannot have an assignment yet
		var (
			v     string
			found bool
			err   error
		)
		if pf.l != nil && pf.l.Key != "" { // read along with the user lists
			v, found, err = pf.l.Variant, pf.l.Found, pf.l.Err
		} else {
			v, found, err = e.storeGet(ctx, c, storeKey, ep.ttl)
		}
		if err != nil {
			// The hash decides. Remember it here (the bounded cache), so
			// the user keeps it while the store is slow or down whatever
			// the weights do, and write it back if nothing is stored (SET
			// NX, kept until the store answers). Should the store hold an
			// assignment we could not read, the conflict drops our copy
			// and the stored one wins from the next request on.
			if ce := e.log.Check(zap.DebugLevel, "assignment store unavailable; the hash decided"); ce != nil {
				ce.Write(zap.String("endpoint", ep.name), zap.Error(err))
			}
			e.cache.put(ck, cached{variant: ep.variants[stored], expires: cacheExpiry(now, ep.ttl)})
			e.store.PutIfAbsent(Assignment{Key: storeKey, Variant: ep.variants[stored], TTL: ep.ttl, Users: ep.userKeys[stored],
				WriteBack: true, OnConflict: func() { e.cache.remove(ck) }})
			return hashed, SourceFallback, cookie
		}
		if found {
			e.cache.put(ck, cached{variant: v, expires: cacheExpiry(now, ep.ttl)})
			i, src := ep.honour(v, key)
			return i, src, cookie
		}
	}
	// A freshly minted id is neither cached nor stored: most cookie-less
	// clients (bots, health checkers) never send it back, and each would
	// otherwise leave a key in Redis for the whole TTL. The pick is a hash
	// of the id, so the browser that returns with it gets the same variant
	// (unless the weights changed meanwhile) and is stored then.
	if cookie != "" {
		if degraded {
			return hashed, SourceFallback, cookie
		}
		return hashed, SourceHash, cookie
	}
	// 4. New user: the weighted hash, stored write-behind. Should another
	// replica have stored a different variant first, the store drops our
	// cached copy and the next request reads theirs.
	e.cache.put(ck, cached{variant: ep.variants[stored], expires: cacheExpiry(now, ep.ttl)})
	e.store.PutIfAbsent(Assignment{Key: storeKey, Variant: ep.variants[stored], TTL: ep.ttl, Users: ep.userKeys[stored],
		OnConflict: func() { e.cache.remove(ck) }})
	if degraded {
		return hashed, SourceFallback, cookie
	}
	// Only here is a user with a key placed by the hash alone: what a
	// sample-ratio test compares with the weights (stats.VariantCounts.Assigned).
	ep.results[hashed].Assigned()
	return hashed, SourceHash, cookie
}

// cachedAssignment is the in-process copy of a stored assignment, unless
// it has outlived its time (see cached).
func (e *Engine) cachedAssignment(ck cacheKey, now time.Time) (string, bool) {
	v, ok := e.cache.get(ck)
	if !ok || (v.expires != 0 && now.UnixNano() >= v.expires) {
		return "", false
	}
	return v.variant, true
}

// storeGet reads within the store budget. The in-memory store answers at
// once, so it skips the deadline (and its three allocations).
func (e *Engine) storeGet(ctx context.Context, c *compiled, key string, ttl time.Duration) (string, bool, error) {
	if e.inProcess {
		return e.store.Get(ctx, key, ttl)
	}
	sctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return e.store.Get(sctx, key, ttl)
}

// storeKey is <prefix>a:<endpoint>:<salt hash>:<user hash>, hex. The user
// key itself never reaches the store.
func (ep *endpoint) storeKey(kh uint64) string {
	var buf [128]byte
	b := append(buf[:0], ep.storePrefix...)
	b = strconv.AppendUint(b, kh, 16)
	return string(b)
}

// honour returns the stored variant while it still takes traffic (weight
// > 0); otherwise the hash picks among serving variants (SourceHash). The
// stored value is kept, so restoring the weight (a rollback) brings the
// user back.
//
// During a rollout's ramp a user the weights in force would hash onto the
// canary is served by it whatever is stored: raising the canary thus
// moves returning users onto it (never off it: its intervals only grow),
// and the stored value, left as it was, brings them back on a rollback.
func (ep *endpoint) honour(stored, key string) (int, Source) {
	if i, ok := ep.index[stored]; ok && ep.weights[i] > 0 {
		if ep.canary >= 0 && i != ep.canary && ep.pick(key) == ep.canary {
			return ep.canary, SourceRamp
		}
		return i, SourceStore
	}
	return ep.pick(key), SourceHash
}

// pick is the new-user choice, the same as Envoy's fail-open route's for
// this key (see hash.go).
func (ep *endpoint) pick(key string) int {
	return pickInterval(pickHash(ep.salt, key), ep.pickCum)
}

// assign is a new user's variant (decided) and the one to store. They
// differ only during a rollout's ramp: the user is stored where the
// weights before the rollout put them, so a rollback restores exactly the
// earlier groups, and served by the canary when the weights in force
// hash them onto it.
func (ep *endpoint) assign(key string) (decided, stored int) {
	h := pickHash(ep.salt, key)
	decided = pickInterval(h, ep.pickCum)
	if ep.canary < 0 {
		return decided, decided
	}
	stored = pickInterval(h, ep.baseCum)
	if decided != ep.canary {
		decided = stored
	}
	return decided, stored
}

func (ep *endpoint) random() int {
	total := ep.cum[len(ep.cum)-1]
	r := rand.Float64() * total
	for i, c := range ep.cum {
		if r < c && ep.weights[i] > 0 {
			return i
		}
	}
	return len(ep.cum) - 1
}

// Users returns how many users each variant of endpoint has been assigned
// (in config order), when the store can count them: exact for the memory
// store, a HyperLogLog estimate (about 1% error) for Redis. Assignments that
// expire are not subtracted.
func (e *Engine) Users(ctx context.Context, endpointName string) ([]int64, error) {
	c := e.cfg.Load()
	if c == nil {
		return nil, ErrUnknownEndpoint
	}
	ep, ok := c.endpoints[endpointName]
	if !ok {
		return nil, ErrUnknownEndpoint
	}
	uc, ok := e.store.(UserCounter)
	if !ok {
		return nil, errors.New("the store cannot count users")
	}
	return uc.CountUsers(ctx, ep.userKeys)
}

// UsersMany counts the users assigned to each variant of every named
// endpoint in one store call (one Redis round trip), so a status of n
// endpoints does not wait for n round trips. Unknown endpoints are left
// out of the answer.
func (e *Engine) UsersMany(ctx context.Context, endpointNames []string) (map[string][]int64, error) {
	c := e.cfg.Load()
	if c == nil {
		return nil, ErrUnknownEndpoint
	}
	uc, ok := e.store.(UserCounter)
	if !ok {
		return nil, errors.New("the store cannot count users")
	}
	var keys []string
	var eps []*endpoint
	for _, name := range endpointNames {
		if ep, ok := c.endpoints[name]; ok {
			eps = append(eps, ep)
			keys = append(keys, ep.userKeys...)
		}
	}
	counts, err := uc.CountUsers(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]int64, len(eps))
	for _, ep := range eps {
		n := len(ep.userKeys)
		out[ep.name], counts = counts[:n:n], counts[n:]
	}
	return out, nil
}

// Close flushes queued store writes (the store itself belongs to the
// caller, who closes it after the engine). The engine stays usable.
func (e *Engine) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.store.Flush(ctx)
}

// userHash is the user's key in the cache and the store. With a bandit's
// re-assignment period the period's number is mixed in, so every user
// starts afresh each period (assigned by the weights then in force).
func (ep *endpoint) userHash(key string, now time.Time) uint64 {
	kh := keyHash(ep.saltHash, key)
	if ep.reassign > 0 {
		kh = mix64(kh ^ uint64(now.UnixNano()/int64(ep.reassign))*0x9e3779b97f4a7c15)
	}
	return kh
}

// Lookup returns the variant stored for userKey on endpoint (cache, then
// store), without deciding anything: what a reward posted for that user
// joins to.
func (e *Engine) Lookup(ctx context.Context, endpointName, userKey string) (string, bool, error) {
	c := e.cfg.Load()
	if c == nil {
		return "", false, ErrUnknownEndpoint
	}
	ep, ok := c.endpoints[endpointName]
	if !ok {
		return "", false, ErrUnknownEndpoint
	}
	now := time.Now()
	kh := ep.userHash(userKey, now)
	if v, ok := e.cachedAssignment(cacheKey{space: ep.space, user: kh}, now); ok {
		return v, true, nil
	}
	return e.storeGet(ctx, c, ep.storeKey(kh), 0)
}
