package shadow_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/shadow"
)

func httpShadowConfig(t *testing.T, addr string, c config.Compare) *config.Config {
	t.Helper()
	be, err := config.ParseBackend(addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Endpoints: []config.Endpoint{{Name: "m", Match: config.Match{PathPrefix: "/m"},
		Variants: []config.Variant{{Name: "a", Weight: 1, Backends: []config.Backend{be}}},
		Shadows:  []config.Shadow{{Name: "s", Percent: 100, Backends: []config.Backend{be}, Compare: &c}}}}}
	cfg.ApplyDefaults()
	return cfg
}

func exchange(m *shadow.Manager, i int, primary string) bool {
	c := m.Begin("m", "s")
	if c == nil {
		return false
	}
	if !c.Request([]byte(fmt.Sprintf(`{"input": %d}`, i))) || !c.Response([]byte(primary)) {
		return false
	}
	c.Finish(shadow.Exchange{Method: "POST", Path: "/m", PrimaryStatus: 200, PrimaryLatency: time.Millisecond})
	return true
}

func waitStats(t *testing.T, m *shadow.Manager, done func(shadow.Stats) bool) shadow.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := m.Stats("m", "s")
		if done(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A shadow that hangs: past max_concurrency replays are dropped at once,
// Finish never waits, the timeout drops the hung ones, and the gauges
// return to zero.
func TestBudgetsDropInsteadOfWaiting(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprint(w, `{"label": "x"}`)
	}))
	defer srv.Close()
	defer close(release)
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(httpShadowConfig(t, strings.TrimPrefix(srv.URL, "http://"), config.Compare{
		Field: "label", MaxConcurrency: 2, MaxBytesInFlight: 1 << 20, Timeout: config.Duration(300 * time.Millisecond)}))

	start := time.Now()
	for i := 0; i < 100; i++ {
		exchange(m, i, `{"label": "x"}`)
	}
	// A sanity ceiling only: 100 Finish calls that waited on the hung
	// shadow would take 300 ms timeouts each (30s).
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("100 Finish calls took %v: the caller waited on the shadow", d)
	}
	conc := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "s", "concurrency"))
	if conc != 98 {
		t.Errorf("concurrency drops = %v, want 98 (2 replays allowed)", conc)
	}
	st := waitStats(t, m, func(s shadow.Stats) bool { return s.Dropped == 100 })
	if timeouts := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "s", "timeout")); timeouts != 2 || st.Compared != 0 {
		t.Errorf("timeouts %v, compared %d; want the 2 hung replays dropped by the timeout", timeouts, st.Compared)
	}
	if b, f := testutil.ToFloat64(mt.ShadowBytes.WithLabelValues("m", "s")), testutil.ToFloat64(mt.ShadowInFlight.WithLabelValues("m", "s")); b != 0 || f != 0 {
		t.Errorf("after all replays: bytes %v, in flight %v, want 0", b, f)
	}
}

// Bodies over max_bytes_in_flight are dropped while capturing, and the
// budget is freed for the next exchange.
func TestBytesBudget(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"label":"x"}`) }))
	defer srv.Close()
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(httpShadowConfig(t, strings.TrimPrefix(srv.URL, "http://"), config.Compare{
		Field: "label", MaxConcurrency: 8, MaxBytesInFlight: 64, Timeout: config.Duration(time.Second)}))
	c := m.Begin("m", "s")
	if c.Request(make([]byte, 100)) {
		t.Fatal("a 100-byte body fit a 64-byte budget")
	}
	if got := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "s", "bytes")); got != 1 {
		t.Errorf("bytes drops = %v, want 1", got)
	}
	if !exchange(m, 1, `{"label":"x"}`) {
		t.Fatal("a small exchange was refused after the big one was dropped")
	}
	st := waitStats(t, m, func(s shadow.Stats) bool { return s.Compared == 1 })
	if st.Compared != 1 || st.Agreed != 1 {
		t.Errorf("stats %+v, want one agreeing comparison", st)
	}
}

// Close cancels hung replays and leaks no goroutines.
func TestCloseCancelsReplays(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Reading the body lets the server notice the client going away.
	hang := &http.Server{Handler: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	})}
	go hang.Serve(lis)
	defer hang.Close()
	before := runtime.NumGoroutine()
	m := shadow.NewManager(shadow.Options{})
	m.SetConfig(httpShadowConfig(t, lis.Addr().String(), config.Compare{MaxConcurrency: 4, MaxBytesInFlight: 1 << 20, Timeout: config.Duration(time.Hour)}))
	for i := 0; i < 4; i++ {
		exchange(m, i, `{}`)
	}
	done := make(chan struct{})
	go func() { m.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with hung replays")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d before, %d after Close\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

// The shadow's answer is held against the same budget: one that does not
// fit is dropped, not compared truncated.
func TestBytesBudgetShadowAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush() // no Content-Length: the budget is checked while reading
		}
		fmt.Fprintf(w, `{"label":"x","pad":%q}`, strings.Repeat("p", 1000))
	}))
	defer srv.Close()
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(httpShadowConfig(t, strings.TrimPrefix(srv.URL, "http://"), config.Compare{
		Field: "label", MaxConcurrency: 8, MaxBytesInFlight: 512, Timeout: config.Duration(5 * time.Second)}))
	for _, path := range []string{"/m", "/m?chunked=1"} {
		c := m.Begin("m", "s")
		if !c.Request([]byte(`{"input": 1}`)) || !c.Response([]byte(`{"label":"x"}`)) {
			t.Fatal("small capture refused")
		}
		c.Finish(shadow.Exchange{Method: "POST", Path: path, PrimaryStatus: 200})
	}
	st := waitStats(t, m, func(s shadow.Stats) bool { return s.Dropped == 2 })
	if got := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "s", "bytes")); got != 2 || st.Compared != 0 {
		t.Errorf("bytes drops %v, compared %d; want both oversized answers dropped", got, st.Compared)
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(mt.ShadowInFlight.WithLabelValues("m", "s")) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if b := testutil.ToFloat64(mt.ShadowBytes.WithLabelValues("m", "s")); b != 0 {
		t.Errorf("bytes held after the drops: %v", b)
	}
}
