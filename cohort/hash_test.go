package cohort

import (
	"strconv"
	"testing"
)

// BenchmarkHash is the hash alone: the salted user-key hash plus a weighted
// rendezvous pick among three variants.
func BenchmarkHash(b *testing.B) {
	seeds := []uint64{variantSeed("m", "s", "a"), variantSeed("m", "s", "b"), variantSeed("m", "s", "c")}
	weights := []float64{90, 5, 5}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i, sink := 0, 0
	for b.Loop() {
		sink += pickRendezvous(keyHash(42, keys[i&1023]), seeds, weights)
		i++
	}
	_ = sink
}

// The pick must not depend on the order variants are listed in.
func TestRendezvousIgnoresVariantOrder(t *testing.T) {
	seeds := []uint64{variantSeed("m", "", "a"), variantSeed("m", "", "b"), variantSeed("m", "", "c")}
	weights := []float64{50, 30, 20}
	rs := []uint64{seeds[2], seeds[0], seeds[1]}
	rw := []float64{weights[2], weights[0], weights[1]}
	back := []int{2, 0, 1} // index in the shuffled order → original index
	for i := 0; i < 10000; i++ {
		kh := keyHash(7, strconv.Itoa(i))
		if a, b := pickRendezvous(kh, seeds, weights), back[pickRendezvous(kh, rs, rw)]; a != b {
			t.Fatalf("key %d: %d in one order, %d in another", i, a, b)
		}
	}
	if pickRendezvous(1, seeds, []float64{0, 0, 0}) != -1 {
		t.Error("no variant has weight, yet one was picked")
	}
}
