package rls

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/rls/lookuppb"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// BenchmarkRouteLookup measures RouteLookup over a real loopback gRPC
// connection with the real engine and memory store, for returning users
// (assignment cached in the engine; what a client's stale-age refresh
// sends) and new users (hash + store write). It reports lookups/s and the
// p50/p99 latency of single calls.
func BenchmarkRouteLookup(b *testing.B) {
	for _, bc := range []struct {
		name     string
		returner bool
		parallel bool
	}{
		{"returning/serial", true, false},
		{"returning/parallel", true, true},
		{"new/serial", false, false},
		{"new/parallel", false, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			env := startLookup(b, parseConfig(b, twoVariantYAML))
			const known = 10_000
			reqs := make([]*lookuppb.RouteLookupRequest, known)
			for i := range reqs {
				reqs[i] = lookupReq(map[string]string{translate.EndpointKey: "scorer", "x-user-id": fmt.Sprintf("user-%d", i)})
				if bc.returner {
					if _, err := env.client.RouteLookup(context.Background(), reqs[i]); err != nil {
						b.Fatal(err)
					}
				}
			}
			var mu sync.Mutex
			var lat []time.Duration
			var seq uint64
			one := func(local *[]time.Duration, i int) {
				req := reqs[i%known]
				if !bc.returner {
					req = lookupReq(map[string]string{translate.EndpointKey: "scorer", "x-user-id": fmt.Sprintf("new-%d", i)})
				}
				start := time.Now()
				if _, err := env.client.RouteLookup(context.Background(), req); err != nil {
					b.Error(err)
				}
				*local = append(*local, time.Since(start))
			}
			b.ReportAllocs()
			b.ResetTimer()
			if bc.parallel {
				b.RunParallel(func(pb *testing.PB) {
					var local []time.Duration
					for pb.Next() {
						mu.Lock()
						seq++
						i := int(seq)
						mu.Unlock()
						one(&local, i)
					}
					mu.Lock()
					lat = append(lat, local...)
					mu.Unlock()
				})
			} else {
				for i := 0; i < b.N; i++ {
					one(&lat, i)
				}
			}
			b.StopTimer()
			reportLatency(b, lat)
		})
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}
