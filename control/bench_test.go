package control_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/stats"
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
	return newFixture(tb, n, p, true)
}

// newFixture builds the fixture; withEngine false makes Apply a no-op
// after the first config (the decision engine keeps that one).
func newFixture(tb testing.TB, n int, p control.Persister, withEngine bool) *listFixture {
	tb.Helper()
	cfg := manyEndpoints(tb, n)
	m := metrics.New()
	engine := cohort.NewEngine(cohort.NewMemoryStore(0), cohort.Options{Metrics: m})
	applied := false
	ctl := control.New(context.Background(), control.Options{Metrics: m, Persister: p, Users: engine,
		Apply: func(c *config.Config) error {
			if withEngine || !applied {
				engine.SetConfig(c)
				applied = true
			}
			return nil
		}})
	if _, err := ctl.SetFileConfig(cfg); err != nil {
		tb.Fatal(err)
	}
	for _, e := range cfg.Endpoints {
		for _, v := range e.Variants {
			rec := m.Stats.Variant(e.Name, v.Name)
			for range 18 {
				rec.Decided()
			}
			for range 7 {
				rec.Request(stats.Class2xx, time.Millisecond)
			}
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

// BenchmarkChange is one live change (set-weights) with 1,000 endpoints
// in the config and a full audit (500 entries, each with a 256-byte
// User-Agent as clients may send): state copy, effective config, save
// and audit, with the state in memory, in a state file and in Redis.
// Serving the new config is left out (Apply does nothing: the xDS build
// is measured by the xds benchmarks), except in apply=engine, which
// recompiles the decision engine for the 1,000 endpoints too.
func BenchmarkChange(b *testing.B) {
	srv := testredis.Start(b)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rc.Close()
	for _, store := range []string{"memory", "file", "redis", "memory/apply=engine"} {
		b.Run("store="+store, func(b *testing.B) {
			var p control.Persister
			switch store {
			case "file":
				p = control.FilePersister{Path: filepath.Join(b.TempDir(), "state.json")}
			case "redis":
				p = control.RedisPersister{Client: rc, Key: "bench:control"}
				rc.Del(context.Background(), "bench:control")
			}
			f := newFixture(b, 1000, p, strings.HasSuffix(store, "apply=engine"))
			who := control.Requester{Remote: "127.0.0.1:40000", UserAgent: strings.Repeat("u", 300)}
			for i := range 500 {
				if _, err := f.ctl.SetWeights(fmt.Sprintf("ep%d", i%1000), map[string]int{"a": 1 + i%50, "b": 50}, who); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				res, err := f.ctl.SetWeights(fmt.Sprintf("ep%d", i%1000), map[string]int{"a": 1 + i%50, "b": 50}, who)
				if err != nil || !res.Persisted {
					b.Fatal(err, res.Warning)
				}
				i++
			}
			b.StopTimer()
			if n := len(f.ctl.Audit(0)); n != 500 {
				b.Fatalf("audit has %d entries, want 500", n)
			}
		})
	}
}
