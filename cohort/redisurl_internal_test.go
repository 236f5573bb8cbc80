package cohort

import (
	"math"
	"strings"
	"testing"
)

// Pool sizes are refused exactly when go-redis could not hold them in an
// int32; the bounds themselves are accepted. (Not through a client: one with
// a pool of MaxInt32 would reserve 16 GiB for its idle list.)
func TestCheckPoolSizesBounds(t *testing.T) {
	for _, n := range []int{0, 10, math.MaxInt32, math.MinInt32} {
		if err := checkPoolSizes(1, n, 1); err != nil {
			t.Errorf("%d refused: %v", n, err)
		}
	}
	for _, n := range []int{math.MaxInt32 + 1, math.MinInt32 - 1} {
		err := checkPoolSizes(1, n, 1)
		if err == nil || !strings.Contains(err.Error(), "min_idle_conns") {
			t.Errorf("%d as the second size: %v, want min_idle_conns refused", n, err)
		}
	}
}
