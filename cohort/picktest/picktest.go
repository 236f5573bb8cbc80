// Package picktest computes, for tests, which variant a new user must get:
// the documented rule written out a second time, apart from the engine's
// code, so a test can check every user's variant exactly instead of
// checking shares loosely. The rule (the same Envoy applies on its
// fail-open route): h = xxHash64(salt + key), seed 0; weights scaled to
// 10,000 (floor, then the leftover units to the largest remainders,
// earlier variant first on ties; a positive weight keeps at least one
// unit, taken from the largest); the variant whose cumulative interval
// holds h % 10,000.
package picktest

import (
	"sort"

	"github.com/cespare/xxhash/v2"
)

const scale = 10_000

// Variant returns the name of the variant picked for key among names with
// weights (same order as the config).
func Variant(salt, key string, names []string, weights []int) string {
	units := scaled(weights)
	sel := xxhash.Sum64String(salt+key) % scale
	var end uint64
	for i, u := range units {
		end += uint64(u)
		if sel < end {
			return names[i]
		}
	}
	return names[len(names)-1]
}

func scaled(weights []int) []int {
	total := 0
	for _, w := range weights {
		if w > 0 {
			total += w
		}
	}
	units := make([]int, len(weights))
	if total == 0 {
		return units
	}
	type rem struct{ i, r int }
	var rems []rem
	left := scale
	for i, w := range weights {
		if w <= 0 {
			continue
		}
		units[i] = w * scale / total
		left -= units[i]
		rems = append(rems, rem{i, w * scale % total})
	}
	sort.SliceStable(rems, func(a, b int) bool { return rems[a].r > rems[b].r })
	for k := 0; k < left; k++ {
		units[rems[k].i]++
	}
	for i, w := range weights {
		if w > 0 && units[i] == 0 {
			big := 0
			for j := range units {
				if units[j] > units[big] {
					big = j
				}
			}
			units[big]--
			units[i] = 1
		}
	}
	return units
}
