package test

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/xds"
)

// scaleConfig is n endpoints × 4 variants on loopback backends that need
// not exist (Envoy only loads them).
func scaleConfig(t *testing.T, n int, extproc string) *config.Config {
	t.Helper()
	cfg := &config.Config{Listen: config.Listen{ExtProc: extproc}}
	for i := range n {
		e := config.Endpoint{Name: "model-" + strconv.Itoa(i), Match: config.Match{PathPrefix: "/m" + strconv.Itoa(i)},
			Sticky: config.Sticky{Header: "x-user-id"}}
		for v := range 4 {
			e.Variants = append(e.Variants, config.Variant{Name: "v" + strconv.Itoa(v), Weight: 25,
				Backends: []config.Backend{{Host: "127.0.0." + strconv.Itoa(v+1), Port: 9000 + i%1000}}})
		}
		cfg.Endpoints = append(cfg.Endpoints, e)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A real Envoy loads 1,000 endpoints × 4 variants (4,001 clusters, one
// route configuration of ~5 MB) with zero NACKs, over delta xDS; then a
// change of one endpoint's weights is in force (p99 of 20 changes, goal
// 200 ms, asserted 1 s: see the end). The time is from Apply to the gateway route configuration's
// config_reload_time_ms gauge (the epoch ms at which Envoy applied it),
// polled through /stats, which costs Envoy little: polling /config_dump
// makes its main thread, which also applies xDS, render megabytes each
// time. After each change the dump is checked to hold the new version.
// Reports p50/p99.
func TestEnvoyScale1000Endpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 1,000 endpoints into Envoy")
	}
	envoyBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := metrics.New()
	servedAt := make(chan time.Time, 100)
	s := xds.NewServer(ctx, xds.ServerOptions{Metrics: m, Debounce: xds.DefaultDebounce,
		OnServe: func(string) { servedAt <- time.Now() }})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Envoy pings its xDS connection every 5s; serve allows it (a default
	// gRPC server would send it away with too_many_pings).
	g := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}))
	s.Register(g)
	go g.Serve(lis)
	defer g.Stop()
	p := newPorts(t)
	cfg := scaleConfig(t, 1000, fmt.Sprintf("127.0.0.1:%d", p.extproc))
	gwPort, _ := freePort()
	cfg.Gateway.Port, cfg.Gateway.Address = gwPort, "127.0.0.1"
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	e := startEnvoy(t, envoyOptions{XDS: lis.Addr().String(), BootstrapArgs: []string{"-delta"}, Unready: true})
	routeVersion := func() string {
		code, body := httpGet(e.adminURL("/config_dump?resource=dynamic_route_configs&mask=version_info"))
		if code != 200 {
			return ""
		}
		// {"configs":[{"@type":"…DynamicRouteConfig","version_info":"…"}]}
		_, rest, ok := strings.Cut(body, `"version_info": "`)
		if !ok {
			return ""
		}
		v, _, _ := strings.Cut(rest, `"`)
		return v
	}
	// Over delta xDS a resource's version_info is its content hash: a
	// change shows as a different one.
	for routeVersion() == "" {
		if time.Since(start) > 120*time.Second {
			t.Fatal("Envoy did not load the 1,000-endpoint config within 120s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	clusters := e.waitStat("cluster_manager.active_clusters", 60*time.Second, func(v uint64) bool { return v >= 4001 })
	t.Logf("Envoy loaded 1,000 endpoints (%d active clusters) in %v", clusters, time.Since(start))

	const reloadStat = "http.modelsplit.rds.modelsplit_routes.config_reload"
	var lat, served []time.Duration
	for i := range 20 {
		next := cfg.Clone()
		next.Endpoints[i*37%1000].Variants[0].Weight = 1 + i // never the 25 it had
		before := routeVersion()
		reloads := e.stat(reloadStat)
		for len(servedAt) > 0 {
			<-servedAt
		}
		begin := time.Now()
		if err := s.Apply(next); err != nil {
			t.Fatal(err)
		}
		for e.stat(reloadStat) == reloads {
			if time.Since(begin) > 10*time.Second {
				t.Fatalf("change %d: %s still %d after 10s", i, reloadStat, reloads)
			}
			time.Sleep(5 * time.Millisecond)
		}
		applied := time.UnixMilli(int64(e.stat(reloadStat + "_time_ms")))
		lat = append(lat, applied.Sub(begin))
		served = append(served, (<-servedAt).Sub(begin))
		if routeVersion() == before {
			t.Fatalf("change %d: Envoy reloaded its routes but config_dump still shows %s", i, before)
		}
		cfg = next
	}
	sort.Slice(served, func(i, j int) bool { return served[i] < served[j] })
	t.Logf("of which Apply and the %v debounce until served: p50 %v", xds.DefaultDebounce, served[len(served)/2].Round(time.Millisecond))
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[int(0.99*float64(len(lat)-1))]
	t.Logf("one-endpoint change → Envoy config_dump: p50 %v, p99 %v (20 changes)", p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	e.assertNoRejections()
	for _, typ := range []string{"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"} {
		if n := testutil.ToFloat64(m.XDSNacks.WithLabelValues("envoy", typ)); n != 0 {
			t.Errorf("modelsplit counted %v NACKs of %s from Envoy", n, typ)
		}
	}
	// The goal is 200 ms. modelsplit serves a change in ~20 ms (Apply and
	// the debounce, logged above); the rest is Envoy receiving and loading
	// the whole ~5 MB, 5,000-route configuration, 250–350 ms on the 2-core
	// machine (README, Benchmarks). The bound guards against regressions
	// on modelsplit's side without failing on that.
	if p99 > time.Second {
		t.Errorf("p99 %v from change to Envoy's config_dump, want ≤ 1s (goal 200ms)", p99)
	}
}
