package cohort

import (
	"github.com/cespare/xxhash/v2"
)

// A new user's variant is picked exactly as Envoy's fail-open route picks
// it: Envoy hashes the sticky header (or cookie) with xxHash64, seed 0
// (hash_policy, with the salt prepended by a regex rewrite), and
// weighted_clusters with use_hash_policy takes hash % total over the
// cumulative weight intervals in variant order. The weights are scaled to
// config.WeightScale on both sides, so a request that fails open lands
// where the decision would have put a hash-assigned user.
//
// Consequences, for ramps: with two variants, raising the second only
// moves users onto it (its interval grows at the first's expense). With
// three or more, a weight change shifts the boundaries of the others too,
// so some users not yet stored pick another variant than before. Stored
// users never move while their variant keeps a weight above 0.
//
// keyHash (salted, mixed) is a different hash: it names a user in the
// cache and in the store (<prefix>a:<endpoint>:<salt hash>:<key hash>) and
// seeds shadow sampling. It is unchanged so stored assignments stay valid.

// keyHash hashes a user key under an endpoint's salt.
func keyHash(salt uint64, key string) uint64 {
	return mix64(xxhash.Sum64String(key) ^ salt)
}

// variantSeed is fixed per (endpoint, salt, variant) at config compile time.
func variantSeed(endpoint, salt, variant string) uint64 {
	d := xxhash.New()
	_, _ = d.WriteString(endpoint)
	_, _ = d.WriteString("\x00")
	_, _ = d.WriteString(salt)
	_, _ = d.WriteString("\x00")
	_, _ = d.WriteString(variant)
	return d.Sum64()
}

// mix64 is the splitmix64 finalizer: it spreads every input bit over the
// whole output so seeds and keys combine without correlation.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// pickHash is Envoy's hash of the sticky value: xxHash64 (seed 0) of salt
// + key, the string Envoy's hash policy sees after its rewrite.
func pickHash(salt, key string) uint64 {
	if salt == "" {
		return xxhash.Sum64String(key)
	}
	var buf [256]byte
	b := append(append(buf[:0], salt...), key...)
	return xxhash.Sum64(b)
}

// pickInterval returns the variant whose interval of cum (cumulative
// scaled weights, cum[len-1] == config.WeightScale) holds h % total: what
// Envoy's weighted_clusters does with a hash. Zero-weight variants have
// empty intervals and are never picked.
func pickInterval(h uint64, cum []uint64) int {
	sel := h % cum[len(cum)-1]
	for i, c := range cum {
		if sel < c {
			return i
		}
	}
	return len(cum) - 1
}
