package stats_test

import (
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/stats"
)

// BenchmarkRecordRequest is the observe filter's per-request call: one
// pointer load and four atomic adds into the window, four into the
// totals, no allocation (~19 ns on the 2-core development machine).
func BenchmarkRecordRequest(b *testing.B) {
	r := stats.New(stats.Options{})
	v := r.Variant("ep", "a")
	b.ReportAllocs()
	for b.Loop() {
		v.Request(stats.Class2xx, 12*time.Millisecond)
	}
}

// BenchmarkRecordRequestParallel: every core records on the same variant
// (the worst case: all adds contend for the same cache lines).
func BenchmarkRecordRequestParallel(b *testing.B) {
	r := stats.New(stats.Options{})
	v := r.Variant("ep", "a")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			v.Request(stats.Class2xx, 12*time.Millisecond)
		}
	})
}

// BenchmarkRecordDecision is the cohort engine's per-decision call.
func BenchmarkRecordDecision(b *testing.B) {
	r := stats.New(stats.Options{})
	v := r.Variant("ep", "a")
	b.ReportAllocs()
	for b.Loop() {
		v.Decided()
	}
}

// BenchmarkRecordAcrossRotation rotates every 1,000 records (a window
// every 1,000 requests, far more often than in service): the amortised
// cost of opening windows.
func BenchmarkRecordAcrossRotation(b *testing.B) {
	c := newClock(at(0))
	r := newRecorder(c, stats.Options{Window: time.Second, Retention: time.Minute})
	v := r.Variant("ep", "a")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		v.Request(stats.Class2xx, 12*time.Millisecond)
		if i++; i%1000 == 0 {
			c.Advance(time.Second)
			r.Rotate()
		}
	}
}
