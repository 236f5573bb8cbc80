package shadow_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/shadow"
)

// BenchmarkCapture measures what the observe filter pays per sampled
// request: Begin, the body copies and Finish. "dropped": the shadow hangs,
// so past max_concurrency every exchange is dropped at Finish. "replayed":
// a fast shadow; replays run in the background (those over the budget
// are dropped).
func BenchmarkCapture(b *testing.B) {
	req := []byte(`{"inputs":[[0.1,0.2,0.3,0.4]],"user":"u-123"}`)
	resp := []byte(`{"label":"cat","score":0.93}`)
	x := shadow.Exchange{Method: "POST", Path: "/m/predict", PrimaryStatus: 200, PrimaryLatency: time.Millisecond,
		Header: http.Header{"Content-Type": {"application/json"}}}
	for _, tc := range []struct {
		name    string
		hang    bool
		maxConc int
	}{{"dropped", true, 1}, {"replayed", false, 64}} {
		b.Run(tc.name, func(b *testing.B) {
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.hang {
					select {
					case <-release:
					case <-r.Context().Done():
					}
				}
				w.Write(resp)
			}))
			defer srv.Close()
			defer close(release)
			m := benchManager(srv.URL, tc.maxConc)
			defer m.Close()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c := m.Begin("m", "s")
				c.Request(req)
				c.Response(resp)
				c.Finish(x)
			}
			b.StopTimer()
		})
	}
}

// BenchmarkReplayComplete: one sampled exchange from Begin until its
// replay is compared (the next starts only then), against a fast HTTP
// shadow in this process: the whole replay path, both sides of the HTTP
// exchange included. Allocations per op are the figure to watch.
func BenchmarkReplayComplete(b *testing.B) {
	req := []byte(`{"inputs":[[0.1,0.2,0.3,0.4]],"user":"u-123"}`)
	resp := []byte(`{"label":"cat","score":0.93}`)
	x := shadow.Exchange{Method: "POST", Path: "/m/predict", PrimaryStatus: 200, PrimaryLatency: time.Millisecond,
		Header: http.Header{"Content-Type": {"application/json"}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(resp)
	}))
	defer srv.Close()
	m := benchManager(srv.URL, 0)
	defer m.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := m.Begin("m", "s")
		c.Request(req)
		c.Response(resp)
		c.Finish(x)
		for {
			st, _ := m.Stats("m", "s")
			if st.Compared+st.Dropped+st.Errors == uint64(i+1) {
				break
			}
			runtime.Gosched()
		}
	}
	b.StopTimer()
	if st, _ := m.Stats("m", "s"); st.Agreed != uint64(b.N) {
		b.Fatalf("%d of %d replays agreed (%+v)", st.Agreed, b.N, st)
	}
}

// benchManager is a shadow manager with one compare shadow "m"/"s" (field
// label) replaying to url; maxConc 0 keeps the default concurrency.
func benchManager(url string, maxConc int) *shadow.Manager {
	m := shadow.NewManager(shadow.Options{Metrics: metrics.New()})
	be, _ := config.ParseBackend(strings.TrimPrefix(url, "http://"))
	cfg := &config.Config{Endpoints: []config.Endpoint{{Name: "m", Variants: []config.Variant{{Name: "a", Weight: 1, Backends: []config.Backend{be}}},
		Shadows: []config.Shadow{{Name: "s", Backends: []config.Backend{be}, Compare: &config.Compare{Field: "label", MaxConcurrency: maxConc}}}}}}
	cfg.ApplyDefaults()
	m.SetConfig(cfg)
	return m
}
