package cohort

import (
	"math/rand/v2"

	"github.com/modelsplit/modelsplit/config"
)

// Shadow sampling. A user-sampled shadow takes a fixed share of users, by
// a salted hash of the user key, so a sampled user's whole session is
// mirrored (and compared) and an unsampled one never is. Per-request
// shadows, and users without a key, are sampled per request at random.

// MaxShadows bounds an endpoint's shadows: a sample is a 64-bit mask.
const MaxShadows = 64

// shadowSpec is a compiled shadow.
type shadowSpec struct {
	name       string
	header     string // config.ShadowHeaderFor(name)
	cluster    string // config.ClusterName(endpoint, name)
	seed       uint64
	threshold  uint64 // sampled when the user's draw < threshold (of 2^32)
	perRequest bool
	compare    bool
	paused     bool
}

// ShadowSet is the set of shadows that sample one request. It shares the
// compiled config's slices, so building one allocates nothing.
type ShadowSet struct {
	mask  uint64
	specs []shadowSpec
}

// Empty reports whether no shadow samples the request.
func (s ShadowSet) Empty() bool { return s.mask == 0 }

// Each calls fn for every sampled shadow, in config order, with the
// shadow's name, its marking header and its cluster.
func (s ShadowSet) Each(fn func(name, header, cluster string)) {
	for m := s.mask; m != 0; m &= m - 1 {
		i := trailingZeros(m)
		sp := &s.specs[i]
		fn(sp.name, sp.header, sp.cluster)
	}
}

// Has reports whether the named shadow samples the request.
func (s ShadowSet) Has(name string) bool {
	for m := s.mask; m != 0; m &= m - 1 {
		if s.specs[trailingZeros(m)].name == name {
			return true
		}
	}
	return false
}

func trailingZeros(m uint64) int {
	n := 0
	for m&1 == 0 {
		m >>= 1
		n++
	}
	return n
}

func compileShadows(ce *config.Endpoint) []shadowSpec {
	n := min(len(ce.Shadows), MaxShadows)
	out := make([]shadowSpec, 0, n)
	for _, s := range ce.Shadows[:n] {
		out = append(out, shadowSpec{
			name: s.Name, header: config.ShadowHeaderFor(s.Name), cluster: config.ClusterName(ce.Name, s.Name),
			seed:       variantSeed(ce.Name, ce.Sticky.Salt, "shadow\x00"+s.Name),
			threshold:  uint64(s.Percent / 100 * (1 << 32)),
			perRequest: s.PerRequest, compare: s.Compare != nil, paused: s.Paused,
		})
	}
	return out
}

// sample draws the shadows of one kind (compare or mirror) for a request.
// kh is the salted user-key hash; hasKey false samples at random. Envoy
// samples per-request mirrors itself (runtime fraction), so those are
// never in a mirror set.
func (ep *endpoint) sample(kh uint64, hasKey, compare bool) ShadowSet {
	var mask uint64
	for i := range ep.shadows {
		sp := &ep.shadows[i]
		if sp.paused || sp.compare != compare || (sp.perRequest && !compare) {
			continue
		}
		var draw uint64
		if hasKey && !sp.perRequest {
			draw = mix64(kh^sp.seed) >> 32
		} else {
			draw = rand.Uint64() >> 32
		}
		if draw < sp.threshold {
			mask |= 1 << i
		}
	}
	return ShadowSet{mask: mask, specs: ep.shadows}
}

// CompareShadows returns the compare-mode shadows that sample this
// request, for the observe filter: the same users on every replica and
// every request of their session.
func (e *Engine) CompareShadows(endpointName string, h Headers) ShadowSet {
	c := e.cfg.Load()
	if c == nil {
		return ShadowSet{}
	}
	ep, ok := c.endpoints[endpointName]
	if !ok || !ep.hasCompare {
		return ShadowSet{}
	}
	key, hasKey := ep.userKey(h)
	var kh uint64
	if hasKey {
		kh = keyHash(ep.saltHash, key)
	}
	return ep.sample(kh, hasKey, true)
}
