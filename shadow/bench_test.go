package shadow_test

import (
	"net/http"
	"net/http/httptest"
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
			mt := metrics.New()
			m := shadow.NewManager(shadow.Options{Metrics: mt})
			defer m.Close()
			be, _ := config.ParseBackend(strings.TrimPrefix(srv.URL, "http://"))
			cfg := &config.Config{Endpoints: []config.Endpoint{{Name: "m", Variants: []config.Variant{{Name: "a", Weight: 1, Backends: []config.Backend{be}}},
				Shadows: []config.Shadow{{Name: "s", Backends: []config.Backend{be}, Compare: &config.Compare{Field: "label", MaxConcurrency: tc.maxConc}}}}}}
			cfg.ApplyDefaults()
			m.SetConfig(cfg)
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
