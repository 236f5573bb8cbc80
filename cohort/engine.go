package cohort

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
)

// Options configures an Engine.
type Options struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// CacheSize bounds the in-process assignment cache (entries); default
	// config.DefaultCacheSize.
	CacheSize int
}

// Engine decides variants. It is safe for concurrent use; SetConfig swaps
// the compiled config atomically while decisions run.
type Engine struct {
	store   Store
	log     *zap.Logger
	metrics *metrics.Metrics
	cfg     atomic.Pointer[compiled]
	cache   *cache
	// generations numbers (endpoint, salt) pairs so cache keys stay small
	// and a salt change never reads an old generation's entries.
	genMu       sync.Mutex
	generations map[string]uint32
}

// NewEngine returns an engine using store. Call SetConfig before Decide.
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
	return &Engine{store: store, log: opts.Logger, metrics: opts.Metrics, cache: newCache(opts.CacheSize),
		generations: map[string]uint32{}}
}

// compiled is the config in the form decisions need: lookups by name,
// precomputed seeds, weights and metric counters.
type compiled struct {
	endpoints map[string]*endpoint
	keyPrefix string
	timeout   time.Duration
}

type endpoint struct {
	name        string
	header      string // sticky header, or ""
	cookie      string // sticky cookie, or ""
	mint        bool
	ttl         time.Duration
	allowTarget bool
	saltHash    uint64
	generation  uint32
	storePrefix string // <prefix>a:<endpoint>:<salt hash>:

	variants []string
	clusters []string
	weights  []float64
	seeds    []uint64
	index    map[string]int
	cum      []float64 // cumulative weights for weighted random
	rules    []rule
	counters [][numSources]prometheus.Counter // [variant][source]
}

const numSources = int(SourceFallback) + 1

type rule struct {
	header   string
	equals   string
	oneOf    map[string]struct{}
	prefix   string
	list     string
	inConfig map[string]struct{} // members when the list is in the config
	variant  int
}

// SetConfig compiles cfg and swaps it in.
func (e *Engine) SetConfig(cfg *config.Config) {
	e.genMu.Lock()
	defer e.genMu.Unlock()
	c := &compiled{endpoints: make(map[string]*endpoint, len(cfg.Endpoints)),
		keyPrefix: cfg.Store.KeyPrefix, timeout: cfg.Store.Timeout.D()}
	if c.timeout <= 0 {
		c.timeout = config.DefaultStoreTimeout.D()
	}
	for i := range cfg.Endpoints {
		ce := &cfg.Endpoints[i]
		ep := &endpoint{
			name: ce.Name, header: ce.Sticky.Header, cookie: ce.Sticky.Cookie, mint: ce.Sticky.MintCookie,
			ttl: ce.Sticky.TTL.D(), allowTarget: ce.AllowTarget,
			saltHash: xxhash.Sum64String(ce.Name + "\x00" + ce.Sticky.Salt),
			index:    map[string]int{},
		}
		gen := ce.Name + "\x00" + ce.Sticky.Salt
		if _, ok := e.generations[gen]; !ok {
			e.generations[gen] = uint32(len(e.generations) + 1)
		}
		ep.generation = e.generations[gen]
		ep.storePrefix = c.keyPrefix + "a:" + ce.Name + ":" + strconv.FormatUint(ep.saltHash, 16) + ":"
		total := 0.0
		for j, v := range ce.Variants {
			ep.index[v.Name] = j
			ep.variants = append(ep.variants, v.Name)
			ep.clusters = append(ep.clusters, config.ClusterName(ce.Name, v.Name))
			ep.weights = append(ep.weights, float64(v.Weight))
			ep.seeds = append(ep.seeds, variantSeed(ce.Name, ce.Sticky.Salt, v.Name))
			total += float64(v.Weight)
			ep.cum = append(ep.cum, total)
			var cs [numSources]prometheus.Counter
			for s := 0; s < numSources; s++ {
				cs[s] = e.metrics.Decisions.WithLabelValues(ce.Name, v.Name, Source(s).String())
			}
			ep.counters = append(ep.counters, cs)
		}
		for _, r := range ce.Rules {
			cr := rule{header: r.Header, equals: r.Equals, prefix: r.Prefix, list: r.UserList, variant: ep.index[r.Variant]}
			if len(r.OneOf) > 0 {
				cr.oneOf = make(map[string]struct{}, len(r.OneOf))
				for _, v := range r.OneOf {
					cr.oneOf[v] = struct{}{}
				}
			}
			if members, ok := cfg.UserLists[r.UserList]; ok && r.UserList != "" {
				cr.inConfig = make(map[string]struct{}, len(members))
				for _, m := range members {
					cr.inConfig[m] = struct{}{}
				}
			}
			ep.rules = append(ep.rules, cr)
		}
		c.endpoints[ce.Name] = ep
	}
	e.cfg.Store(c)
}

// Decide returns the variant for one request to endpoint.
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
	idx, src, cookie := e.decide(ctx, c, ep, h)
	ep.counters[idx][src].Inc()
	e.metrics.DecisionDuration.Observe(time.Since(start).Seconds())
	return Decision{Endpoint: ep.name, Variant: ep.variants[idx], Cluster: ep.clusters[idx], Source: src, SetCookie: cookie}, nil
}

func (e *Engine) decide(ctx context.Context, c *compiled, ep *endpoint, h Headers) (int, Source, string) {
	// 1. Explicit target, only where allowed and only for a known variant.
	if ep.allowTarget {
		if t, ok := h.Get(config.TargetHeader); ok {
			if i, ok := ep.index[t]; ok {
				return i, SourceTarget, ""
			}
		}
	}
	key, hasKey := ep.userKey(h)
	// 2. Targeting rules, first match.
	for i := range ep.rules {
		if e.ruleMatches(ctx, c, &ep.rules[i], h, key, hasKey) {
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
	kh := keyHash(ep.saltHash, key)
	// 3. Stored assignment: cache, then store.
	ck := cacheKey{endpoint: ep.generation, user: kh}
	if v, ok := e.cache.get(ck); ok {
		e.metrics.CacheHits.Inc()
		return ep.honour(v, kh), SourceStore, cookie
	}
	hashed := pickRendezvous(kh, ep.seeds, ep.weights)
	e.metrics.CacheMisses.Inc()
	storeKey := ep.storePrefix + strconv.FormatUint(kh, 16)
	if cookie == "" { // a freshly minted id cannot have an assignment yet
		sctx, cancel := context.WithTimeout(ctx, c.timeout)
		v, found, err := e.store.Get(sctx, storeKey)
		cancel()
		if err != nil {
			// The hash decides; record it only if nothing is stored (the
			// store may hold an assignment we could not read), and do not
			// cache it, so the stored one wins once readable again.
			e.store.PutIfAbsent(storeKey, ep.variants[hashed], ep.ttl)
			return hashed, SourceFallback, cookie
		}
		if found {
			e.cache.put(ck, v)
			return ep.honour(v, kh), SourceStore, cookie
		}
	}
	// 4. New user: the weighted hash, stored write-behind.
	e.cache.put(ck, ep.variants[hashed])
	e.store.PutIfAbsent(storeKey, ep.variants[hashed], ep.ttl)
	return hashed, SourceHash, cookie
}

// honour returns the stored variant's index while it still takes traffic
// (weight > 0); otherwise the hash among serving variants. The stored value
// is kept, so restoring the weight (a rollback) brings the user back.
func (ep *endpoint) honour(stored string, kh uint64) int {
	if i, ok := ep.index[stored]; ok && ep.weights[i] > 0 {
		return i
	}
	return pickRendezvous(kh, ep.seeds, ep.weights)
}

func (e *Engine) ruleMatches(ctx context.Context, c *compiled, r *rule, h Headers, key string, hasKey bool) bool {
	if r.list != "" {
		if !hasKey {
			return false
		}
		if r.inConfig != nil {
			_, ok := r.inConfig[key]
			return ok
		}
		sctx, cancel := context.WithTimeout(ctx, c.timeout)
		in, err := e.store.InList(sctx, c.keyPrefix+"list:"+r.list, key)
		cancel()
		return err == nil && in
	}
	v, ok := h.Get(r.header)
	if !ok {
		return false
	}
	switch {
	case r.oneOf != nil:
		_, in := r.oneOf[v]
		return in
	case r.prefix != "":
		return strings.HasPrefix(v, r.prefix)
	default:
		return v == r.equals
	}
}

// userKey extracts the sticky key from the header or the cookie.
func (ep *endpoint) userKey(h Headers) (string, bool) {
	if ep.header != "" {
		v, ok := h.Get(ep.header)
		return v, ok && v != ""
	}
	if ep.cookie != "" {
		if raw, ok := h.Get("cookie"); ok {
			return cookieValue(raw, ep.cookie)
		}
	}
	return "", false
}

// cookieValue finds name=value in a Cookie header without allocating.
func cookieValue(header, name string) (string, bool) {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		part = strings.TrimSpace(part)
		if k, v, ok := strings.Cut(part, "="); ok && k == name && v != "" {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
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

func (ep *endpoint) cookieFor(id string) string {
	var b strings.Builder
	b.WriteString(ep.cookie)
	b.WriteByte('=')
	b.WriteString(id)
	b.WriteString("; Path=/; HttpOnly; SameSite=Lax")
	if ep.ttl > 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(int64(ep.ttl/time.Second), 10))
	}
	return b.String()
}

func mintID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Close flushes queued store writes.
func (e *Engine) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.store.Flush(ctx)
}
