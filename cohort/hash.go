package cohort

import (
	"math"

	"github.com/cespare/xxhash/v2"
)

// Weighted rendezvous hashing (highest random weight). Every variant draws
// an exponential "arrival time" -ln(u)/weight from a hash of (user, variant)
// and the earliest arrival wins, so variant i wins with probability
// w_i / Σw. Changing one weight only changes that variant's draw: raising it
// only pulls users onto it, lowering it only pushes users off it — ramps are
// monotonic for any number of variants, and a user whose variants' weights
// did not change keeps the same answer on every replica.

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

// unit maps a hash to (0, 1), never 0 so the logarithm is finite.
func unit(h uint64) float64 {
	return (float64(h>>11) + 0.5) / (1 << 53)
}

// pickRendezvous returns the index of the winning variant among those with
// weight > 0, or -1 when none has weight.
func pickRendezvous(kh uint64, seeds []uint64, weights []float64) int {
	best, bestScore := -1, math.Inf(1)
	for i, w := range weights {
		if w <= 0 {
			continue
		}
		score := -math.Log(unit(mix64(kh^seeds[i]))) / w
		if score < bestScore {
			best, bestScore = i, score
		}
	}
	return best
}
