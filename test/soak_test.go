//go:build soak

package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc/extproctest"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

// TestSoak runs `modelsplit serve` for SOAK_DURATION (default 10m) under a
// steady load and prints a table every SOAK_REPORT (default 1m): 2,000
// decisions/s over 200,000 users through ext_proc, a weight change every
// 30 s (never to 0, so no stored user may move), a Redis restart half-way
// (with persistence, as in production) and 20 grpc-go xDS clients, each
// with an xDS client of its own. It fails on a failed decision, a moved
// user, or goroutines/heap/RSS growing after warm-up.
//
//	make soak                     # 10 minutes
//	make soak SOAK_DURATION=2m
func TestSoak(t *testing.T) {
	duration := envDuration(t, "SOAK_DURATION", 10*time.Minute)
	every := envDuration(t, "SOAK_REPORT", time.Minute)
	const (
		rate     = 2000
		users    = 200_000
		clients  = 20
		changeIn = 30 * time.Second
		workers  = 16
	)
	r := testredis.Start(t, testredis.Persistent())
	p := newPorts(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	cfg := p.listenYAML() + fmt.Sprintf(`store: {redis: %q, cache_size: 400000}
endpoints:
  - name: echo
    protocol: grpc
    match: {path_prefix: /grpc.testing.TestService/}
    sticky: {header: x-user-id, ttl: 24h}
    variants:
      - {name: a, weight: 50, backends: [%q]}
      - {name: b, weight: 50, backends: [%q]}
`, r.URL(), a.addr, b.addr)
	path := tempConfig(t, cfg)
	serve := startServe(t, path, p)
	pid := serve.cmd.Process.Pid

	// 20 grpc-go channels, each with an xDS client of its own.
	for i := range clients {
		bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":"passthrough:///127.0.0.1:%d","channel_creds":[{"type":"insecure"}],"server_features":["trusted_xds_server"]}],"node":{"id":"soak-%d","user_agent_name":"gRPC Go"}}`, p.xds, i)
		res, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient("xds:///echo", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(res))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		cc.Connect()
	}

	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", p.extproc), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	md := map[string]string{config.ClientMetadataKey: "envoy", config.EndpointMetadataKey: "echo"}

	var (
		first     = make([]atomic.Pointer[string], users)
		decisions atomic.Int64
		failed    atomic.Int64
		moved     atomic.Int64
		firstErr  atomic.Value
	)
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) * workers / rate)
	for w := range workers {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			next := time.Now().Add(time.Duration(w) * interval / workers)
			for ctx.Err() == nil {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				next = next.Add(interval)
				u := rand.IntN(users)
				rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := extproctest.Do(rctx, conn, extproctest.Request{Metadata: md,
					Headers: []extproctest.Header{extproctest.H(":path", "/grpc.testing.TestService/UnaryCall"), extproctest.H("x-user-id", fmt.Sprint("soak-", u))}})
				rcancel()
				decisions.Add(1)
				v, ok := extproctest.Get(res.RequestHeaders, config.VariantHeader)
				if err != nil || !ok {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%v (variant header %v)", err, ok))
					continue
				}
				if prev := first[u].Load(); prev == nil {
					first[u].CompareAndSwap(nil, &v)
				} else if *prev != v {
					moved.Add(1)
				}
			}
		}(w)
	}

	// Weight changes every 30 s, never to 0; a Redis restart half-way.
	weights := [][2]int{{30, 70}, {70, 30}, {10, 90}, {90, 10}, {50, 50}}
	changes := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(changeIn)
		defer tick.Stop()
		restart := time.After(duration / 2)
		for {
			select {
			case <-ctx.Done():
				return
			case <-restart:
				t.Logf("%s: restarting redis", time.Now().Format(time.TimeOnly))
				r.Restart()
			case <-tick.C:
				w := weights[changes%len(weights)]
				body := fmt.Sprintf(`{"weights":{"a":%d,"b":%d}}`, w[0], w[1])
				req, _ := http.NewRequest(http.MethodPut, "http://"+serve.admin+"/v1/endpoints/echo/weights", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("weight change %v: %v %v", w, err, resp)
				} else {
					resp.Body.Close()
					changes++
				}
			}
		}
	}()

	type row struct {
		at                               time.Duration
		decisions, failed, moved         int64
		goroutines, heapMB, rssMB, flaps float64
		fallback, storeUp, xdsClients    float64
	}
	var rows []row
	start := time.Now()
	sample := func() {
		m := func(s string) float64 { v, _ := serve.metric(s); return v }
		rows = append(rows, row{at: time.Since(start).Round(time.Second), decisions: decisions.Load(), failed: failed.Load(), moved: moved.Load(),
			goroutines: m("go_goroutines"), heapMB: m("go_memstats_heap_inuse_bytes") / 1e6, rssMB: rssMB(pid),
			flaps: m("modelsplit_store_down_total"), storeUp: m("modelsplit_store_up"),
			fallback:   m(`modelsplit_decisions_total{endpoint="echo",source="fallback",variant="a"}`) + m(`modelsplit_decisions_total{endpoint="echo",source="fallback",variant="b"}`),
			xdsClients: m(`modelsplit_xds_connected_clients{node_kind="grpc"}`)})
		x := rows[len(rows)-1]
		t.Logf("%8v %10d %7d %6d %10.0f %8.1f %7.1f %6.0f %9.0f %8.0f %11.0f", x.at, x.decisions, x.failed, x.moved, x.goroutines, x.heapMB, x.rssMB, x.storeUp, x.flaps, x.fallback, x.xdsClients)
	}
	t.Logf("%8s %10s %7s %6s %10s %8s %7s %6s %9s %8s %11s", "time", "decisions", "failed", "moved", "goroutines", "heap MB", "RSS MB", "redis", "went down", "fallback", "xds clients")
	report := time.NewTicker(every)
	defer report.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-report.C:
			sample()
		}
	}
	wg.Wait()
	time.Sleep(time.Second)
	sample()
	t.Logf("%d weight changes; %d users seen; first error: %v", changes, seen(first), firstErr.Load())

	last := rows[len(rows)-1]
	if last.failed != 0 {
		t.Errorf("%d of %d decisions failed", last.failed, last.decisions)
	}
	if last.moved != 0 {
		t.Errorf("%d decisions moved a user off their first variant (weights never went to 0)", last.moved)
	}
	if got := float64(last.decisions) / duration.Seconds(); got < 0.9*rate {
		t.Errorf("%.0f decisions/s, want %d", got, rate)
	}
	if last.xdsClients < clients {
		t.Errorf("%v grpc xDS clients connected at the end, want %d", last.xdsClients, clients)
	}
	// Flat after warm-up: compare the end with the second report.
	if len(rows) >= 3 {
		warm := rows[1]
		if last.goroutines > warm.goroutines+50 {
			t.Errorf("goroutines grew from %v (at %v) to %v", warm.goroutines, warm.at, last.goroutines)
		}
		if last.rssMB > 1.5*warm.rssMB+20 {
			t.Errorf("RSS grew from %.1f MB (at %v) to %.1f MB", warm.rssMB, warm.at, last.rssMB)
		}
		if last.heapMB > 1.5*warm.heapMB+20 {
			t.Errorf("heap grew from %.1f MB (at %v) to %.1f MB", warm.heapMB, warm.at, last.heapMB)
		}
	}
}

func seen(first []atomic.Pointer[string]) int {
	n := 0
	for i := range first {
		if first[i].Load() != nil {
			n++
		}
	}
	return n
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// rssMB is the resident set of process pid, from /proc (Linux).
func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(rest), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}
