package control_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/metrics"
)

// manyEndpoints is a valid config with n endpoints of two variants each.
func manyEndpoints(tb testing.TB, n int) *config.Config {
	tb.Helper()
	var b strings.Builder
	b.WriteString("endpoints:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: ep%d\n    match: {path_prefix: /ep%d}\n    sticky: {header: x-user-id}\n"+
			"    variants:\n      - {name: a, weight: 90, backends: [\"127.0.0.1:8001\"]}\n"+
			"      - {name: b, weight: 10, backends: [\"127.0.0.1:8002\"]}\n", i, i)
	}
	cfg, err := config.Parse("bench.yaml", []byte(b.String()))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// listFixture is a controller over n endpoints whose decision and request
// counters all have values (every source of every variant, as a running
// server has after a while), served through the admin handler.
type listFixture struct {
	h      http.Handler
	engine *cohort.Engine
	ctl    *control.Controller
}

func newListFixture(tb testing.TB, n int, p control.Persister) *listFixture {
	tb.Helper()
	cfg := manyEndpoints(tb, n)
	m := metrics.New()
	engine := cohort.NewEngine(cohort.NewMemoryStore(0), cohort.Options{Metrics: m})
	ctl := control.New(context.Background(), control.Options{Metrics: m, Persister: p, Users: engine,
		Apply: func(c *config.Config) error { engine.SetConfig(c); return nil }})
	if _, err := ctl.SetFileConfig(cfg); err != nil {
		tb.Fatal(err)
	}
	for _, e := range cfg.Endpoints {
		for _, v := range e.Variants {
			for _, src := range []string{"target", "rule", "store", "hash", "random", "fallback"} {
				m.Decisions.WithLabelValues(e.Name, v.Name, src).Add(3)
			}
			m.VariantRequests.WithLabelValues(e.Name, v.Name).Add(7)
		}
	}
	h := admin.New(admin.Options{Metrics: m})
	ctl.Register(h)
	return &listFixture{h: h, engine: engine, ctl: ctl}
}

func (f *listFixture) get(tb testing.TB, path string) int {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Host = "127.0.0.1:18002"
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		tb.Fatalf("GET %s: %d %s", path, w.Code, w.Body.String())
	}
	_, _ = io.Copy(io.Discard, w.Body)
	return w.Body.Len()
}

type mapHeaders map[string]string

func (h mapHeaders) Get(name string) (string, bool) { v, ok := h[name]; return v, ok }

// BenchmarkListEndpoints is GET /v1/endpoints (what `modelsplit status`
// asks) at 100, 1,000 and 10,000 endpoints of two variants, each with
// decision counters for every source and observed requests. Its cost must
// grow linearly with the endpoints. Meanwhile one goroutine makes
// decisions for cached users: decide-p99-µs is their p99 while listing,
// to compare with BenchmarkListEndpoints/idle (no listing). It shows
// in-process interference (locks, GC); on a loaded machine the listing's
// CPU time is what competes with the ext_proc path, so ns/op is the
// figure that matters there.
func BenchmarkListEndpoints(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			f := newListFixture(b, n, nil)
			stop := f.decideInBackground()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				f.get(b, "/v1/endpoints")
			}
			b.StopTimer()
			b.ReportMetric(stop(), "decide-p99-µs")
		})
	}
	b.Run("idle", func(b *testing.B) {
		// The same decision loop with nobody listing, for comparison.
		f := newListFixture(b, 1000, nil)
		stop := f.decideInBackground()
		for b.Loop() {
			time.Sleep(10 * time.Millisecond)
		}
		b.ReportMetric(stop(), "decide-p99-µs")
	})
}

// decideInBackground decides for cached users in a loop until the
// returned stop is called, which returns the p99 decision time in µs.
func (f *listFixture) decideInBackground() (stop func() float64) {
	users := make([]mapHeaders, 256)
	for i := range users {
		users[i] = mapHeaders{"x-user-id": fmt.Sprintf("u%d", i)}
		_, _ = f.engine.Decide(context.Background(), "ep1", users[i])
	}
	var done atomic.Bool
	var wg sync.WaitGroup
	var lat []time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		eps := [2]string{"ep0", "ep1"}
		for i := 0; !done.Load(); i++ {
			ep := eps[i&1]
			start := time.Now()
			_, _ = f.engine.Decide(ctx, ep, users[i&255])
			lat = append(lat, time.Since(start))
			if i&63 == 0 {
				time.Sleep(100 * time.Microsecond) // a steady rate, not a CPU hog
			}
		}
	}()
	return func() float64 {
		done.Store(true)
		wg.Wait()
		if len(lat) == 0 {
			return 0
		}
		slices.Sort(lat)
		return float64(lat[len(lat)*99/100].Nanoseconds()) / 1e3
	}
}
