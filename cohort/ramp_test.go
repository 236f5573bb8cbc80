package cohort_test

import (
	"fmt"
	"testing"

	"github.com/modelsplit/modelsplit/cohort"
)

// The rendezvous property, checked one weight at a time for four
// variants, without a store (so only the hash speaks): raising variant k
// only ever moves users onto k, lowering it only moves users off k, and
// nobody moves between two other variants.
func TestSingleWeightChangesMoveUsersOnlyToOrFromThatVariant(t *testing.T) {
	base := []int{40, 30, 20, 10}
	const n = 5000
	assign := func(w []int) []string {
		e, _ := newEngine(t, cohort.NewMemoryStore(0), splitConfig(t, "", w...))
		out := make([]string, n)
		for i := range out {
			out[i] = decide(t, e, user(fmt.Sprintf("r%d", i))).Variant
		}
		return out
	}
	before := assign(base)
	for k := range base {
		for _, delta := range []int{+25, -base[k]} { // raise, and drain to 0
			w := append([]int(nil), base...)
			w[k] += delta
			after := assign(w)
			moved := 0
			target := fmt.Sprintf("v%d", k)
			for i := range after {
				if after[i] == before[i] {
					continue
				}
				moved++
				if delta > 0 && after[i] != target {
					t.Fatalf("raising %s %v→%v moved user %d from %s to %s", target, base, w, i, before[i], after[i])
				}
				if delta < 0 && before[i] != target {
					t.Fatalf("lowering %s %v→%v moved user %d from %s to %s", target, base, w, i, before[i], after[i])
				}
			}
			if moved == 0 {
				t.Fatalf("%v→%v moved nobody", base, w)
			}
		}
	}
}
