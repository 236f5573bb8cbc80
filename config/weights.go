package config

// WeightScale is the total every endpoint's weights are scaled to before
// they reach Envoy, grpc-go and the decision engine: shares in basis
// points (0.01%). The engine's new-user pick and Envoy's fail-open route
// (weighted_clusters with use_hash_policy) both take hash % WeightScale
// over the same cumulative intervals, so they agree user by user; and
// because the total never changes, weights 9/1 and 90/10 pick the same
// users, and raising the last variant only ever moves users onto it.
const WeightScale = 10_000

// ScaledWeights returns the variants' weights scaled to sum to exactly
// WeightScale, in variant order (largest remainder rounding). A variant
// with weight <= 0 gets 0; a positive weight never rounds down to 0 (its
// unit comes from the largest share). When no variant has a positive
// weight (not a valid config) every variant gets an equal share, so a
// caller never divides by zero.
func ScaledWeights(vs []Variant) []uint32 {
	out := make([]uint32, len(vs))
	total := 0
	for _, v := range vs {
		total += max(v.Weight, 0)
	}
	ws := make([]int, len(vs))
	for i, v := range vs {
		switch {
		case total == 0:
			ws[i] = 1
		case v.Weight > 0:
			ws[i] = v.Weight
		}
	}
	if total == 0 {
		total = len(vs)
	}
	if total == 0 {
		return out
	}
	rem := make([]int64, len(vs))
	sum := 0
	for i, w := range ws {
		num := int64(w) * WeightScale
		out[i] = uint32(num / int64(total))
		rem[i] = num % int64(total)
		sum += int(out[i])
	}
	// Hand out what rounding left, largest remainder first (ties: the
	// earlier variant), so the result does not depend on map order or luck.
	for sum < WeightScale {
		best := -1
		for i := range ws {
			if ws[i] > 0 && (best < 0 || rem[i] > rem[best]) {
				best = i
			}
		}
		out[best]++
		rem[best] = -1
		sum++
	}
	// A tiny positive weight keeps at least one unit.
	for i := range ws {
		if ws[i] > 0 && out[i] == 0 {
			big := 0
			for j := range out {
				if out[j] > out[big] {
					big = j
				}
			}
			out[big]--
			out[i] = 1
		}
	}
	return out
}
