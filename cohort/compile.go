package cohort

import (
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/stats"
)

// compiled is the config in the form decisions need: lookups by name,
// precomputed seeds, weights and metric counters, so the hot path neither
// allocates nor calls WithLabelValues.
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
	salt        string // prepended to the key before the pick hash, as Envoy's hash policy does
	saltHash    uint64
	space       uint32 // cache space of (endpoint, salt)
	storePrefix string // <prefix>a:<endpoint>:<salt hash>:

	variants []string
	clusters []string
	weights  []float64
	index    map[string]int
	cum      []float64 // cumulative weights for weighted random
	pickCum  []uint64  // cumulative config.ScaledWeights, the new-user pick's intervals
	// A rollout's ramp (config.Ramp): canary is its variant (-1: no
	// ramp), baseCum the pick's intervals under the weights before it.
	canary int
	// bandit: the endpoint has a bandit; reassign its re-assignment period.
	bandit   bool
	reassign time.Duration
	baseCum  []uint64
	rules    []rule
	counters [][numSources]prometheus.Counter // [variant][source]
	results  []*stats.VariantRecorder         // [variant]: windows of decisions and new users
	userKeys []string                         // <prefix>users:<endpoint>:<variant>, per variant

	shadows    []shadowSpec
	hasMirror  bool // a user-sampled mirror shadow: decisions mark sampled users
	hasCompare bool // a compare-mode shadow: the observe filter samples
}

const numSources = int(SourceRamp) + 1

type rule struct {
	header   string
	equals   string
	oneOf    map[string]struct{}
	prefix   string
	list     string              // user list name, or ""
	listKey  string              // <prefix>list:<name>: the Redis set
	listID   uint32              // cache space of the list's lookups
	inConfig map[string]struct{} // members when the list is in the config
	variant  int
}

// space numbers a cache namespace (an endpoint under one key prefix and
// salt, or a user list) so cache keys stay small and a new salt never reads entries made
// under another. Numbers are stable for the Engine's life, so a reload
// that changes nothing keeps the cache warm.
func (e *Engine) space(name string) uint32 {
	if id, ok := e.spaces[name]; ok {
		return id
	}
	id := uint32(len(e.spaces) + 1)
	e.spaces[name] = id
	return id
}

// SetConfig compiles cfg and swaps it in atomically; decisions in flight
// finish with the previous form. cfg is expected to be valid
// (config.Validate); an endpoint without variants is left out (its
// requests get ErrUnknownEndpoint) rather than breaking decisions.
func (e *Engine) SetConfig(cfg *config.Config) {
	if cfg == nil { // no config: every endpoint is unknown
		e.cfg.Store(nil)
		return
	}
	e.compileMu.Lock()
	defer e.compileMu.Unlock()
	c := &compiled{endpoints: make(map[string]*endpoint, len(cfg.Endpoints)),
		keyPrefix: cfg.Store.KeyPrefix, timeout: cfg.Store.Timeout.D()}
	if c.timeout <= 0 {
		c.timeout = config.DefaultStoreTimeout.D()
	}
	for i := range cfg.Endpoints {
		ce := &cfg.Endpoints[i]
		if len(ce.Variants) == 0 {
			e.log.Warn("endpoint has no variants; its requests pass through undecided", zap.String("endpoint", ce.Name))
			continue
		}
		c.endpoints[ce.Name] = e.compileEndpoint(c, cfg, ce)
	}
	e.cfg.Store(c)
}

func (e *Engine) compileEndpoint(c *compiled, cfg *config.Config, ce *config.Endpoint) *endpoint {
	ep := &endpoint{
		name: ce.Name, header: ce.Sticky.Header, cookie: ce.Sticky.Cookie,
		mint: ce.Sticky.MintCookie && ce.Sticky.Cookie != "", // no cookie to carry a minted id: random split
		ttl:  ce.Sticky.TTL.D(), allowTarget: ce.AllowTarget,
		salt:     ce.Sticky.Salt,
		saltHash: xxhash.Sum64String(ce.Name + "\x00" + ce.Sticky.Salt),
		space:    e.space("a\x00" + c.keyPrefix + "\x00" + ce.Name + "\x00" + ce.Sticky.Salt),
		index:    make(map[string]int, len(ce.Variants)),
	}
	// The salt's hash is in the key, so a new salt starts from an empty
	// store, and old assignments come back if the salt is restored.
	ep.storePrefix = c.keyPrefix + "a:" + ce.Name + ":" + strconv.FormatUint(ep.saltHash, 16) + ":"
	total := 0
	for _, v := range ce.Variants {
		total += max(v.Weight, 0)
	}
	cum := 0.0
	var pickCum uint64
	scaled := config.ScaledWeights(ce.Variants)
	for j, v := range ce.Variants {
		w := float64(max(v.Weight, 0))
		if total == 0 {
			w = 1 // all drained (not a valid config): split equally rather than fail
		}
		ep.index[v.Name] = j
		ep.variants = append(ep.variants, v.Name)
		ep.clusters = append(ep.clusters, config.ClusterName(ce.Name, v.Name))
		ep.weights = append(ep.weights, w)
		cum += w
		ep.cum = append(ep.cum, cum)
		pickCum += uint64(scaled[j])
		ep.pickCum = append(ep.pickCum, pickCum)
		var cs [numSources]prometheus.Counter
		for s := range numSources {
			cs[s] = e.metrics.Decisions.WithLabelValues(ce.Name, v.Name, Source(s).String())
		}
		ep.counters = append(ep.counters, cs)
		ep.results = append(ep.results, e.metrics.Stats.Variant(ce.Name, v.Name))
		ep.userKeys = append(ep.userKeys, c.keyPrefix+"users:"+ce.Name+":"+v.Name)
	}
	ep.canary = -1
	if b := ce.Bandit; b != nil {
		ep.bandit, ep.reassign = true, b.Reassign.D()
	}
	if r := ce.Ramp; r != nil {
		if ci, ok := ep.index[r.Canary]; ok && ep.weights[ci] > 0 && total > 0 {
			base := make([]config.Variant, len(ce.Variants))
			for j, v := range ce.Variants {
				base[j] = config.Variant{Name: v.Name, Weight: r.Base[v.Name]}
			}
			ep.canary = ci
			for _, w := range config.ScaledWeights(base) {
				var last uint64
				if n := len(ep.baseCum); n > 0 {
					last = ep.baseCum[n-1]
				}
				ep.baseCum = append(ep.baseCum, last+uint64(w))
			}
		} else {
			e.log.Warn("rollout ramp names a variant without traffic; ignored", zap.String("endpoint", ce.Name), zap.String("canary", r.Canary))
		}
	}
	ep.shadows = compileShadows(ce)
	for _, sp := range ep.shadows {
		ep.hasMirror = ep.hasMirror || (!sp.compare && !sp.perRequest && !sp.paused)
		ep.hasCompare = ep.hasCompare || (sp.compare && !sp.paused)
	}
	for _, r := range ce.Rules {
		vi, ok := ep.index[r.Variant]
		if !ok {
			e.log.Warn("rule names an unknown variant; rule ignored", zap.String("endpoint", ce.Name), zap.String("variant", r.Variant))
			continue
		}
		cr := rule{header: r.Header, equals: r.Equals, prefix: r.Prefix, list: r.UserList, variant: vi}
		if len(r.OneOf) > 0 {
			cr.oneOf = make(map[string]struct{}, len(r.OneOf))
			for _, v := range r.OneOf {
				cr.oneOf[v] = struct{}{}
			}
		}
		if r.UserList != "" {
			cr.listKey = c.keyPrefix + "list:" + r.UserList
			cr.listID = e.space("l\x00" + cr.listKey + "\x00" + ce.Name + "\x00" + ce.Sticky.Salt)
			if members, ok := cfg.UserLists[r.UserList]; ok {
				cr.inConfig = make(map[string]struct{}, len(members))
				for _, m := range members {
					cr.inConfig[m] = struct{}{}
				}
			}
		}
		ep.rules = append(ep.rules, cr)
	}
	return ep
}
