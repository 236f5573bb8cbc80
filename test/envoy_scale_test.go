package test

import (
	"context"
	"fmt"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"net"
	"net/url"
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
// route configuration of ~5 MB, a runtime layer of 4,000 weights) with
// zero NACKs, over delta xDS; then a change of one endpoint's weights is
// in force (p99 of 20 changes, goal 200 ms, asserted 1 s: see the end).
// Envoy's weighted routes read the weights from the RTDS layer, so a
// change re-sends the ~110 KB Runtime resource only and Envoy does not
// reload its routes (checked: the route configuration's reload counter
// and version stay put).
//
// In force is when Envoy loaded the new runtime snapshot: the RTDS
// subscription's runtime.update_time gauge (epoch ms), read once Envoy has
// ACKed the Runtime version to modelsplit (Envoy ACKs after it applied
// the update); Envoy's /runtime is then checked to hold the new weight
// (config_dump does not show the runtime). Nothing polls Envoy's admin
// API during a change: at 4,000 clusters one /stats request, filtered or
// not, holds Envoy's main thread, which also applies xDS, for ~100-300 ms
// on this machine, and polling it inflated the figures by that much.
// Reports p50/p99 of Apply → update_time, and of Apply → ACK.
func TestEnvoyScale1000Endpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 1,000 endpoints into Envoy")
	}
	envoyBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := metrics.New()
	type event struct {
		at      time.Time
		version string
	}
	servedAt := make(chan event, 100)
	runtimeACKs := make(chan event, 100)
	s := xds.NewServer(ctx, xds.ServerOptions{Metrics: m, Debounce: xds.DefaultDebounce,
		OnServe: func(v string) { servedAt <- event{time.Now(), v} },
		OnACK: func(_ *corev3.Node, typeURL, v string) {
			if typeURL == resource.RuntimeType {
				runtimeACKs <- event{time.Now(), v}
			}
		}})
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

	runtimeStat := func(name string) uint64 {
		code, body := httpGet(e.adminURL("/stats?filter=" + url.QueryEscape("^runtime\\.update_")))
		if code != 200 {
			t.Fatalf("envoy /stats: %d %s", code, body)
		}
		for _, line := range strings.Split(body, "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok && k == name {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				return n
			}
		}
		return 0
	}
	reloadsBefore := e.stat(routeReloads)
	routeVersionBefore := routeVersion()
	var lat, acked, served []time.Duration
	for i := range 20 {
		next := cfg.Clone()
		ep := &next.Endpoints[i*37%1000]
		ep.Variants[0].Weight = 1 + i // never the 25 it had
		key := "modelsplit.weights." + config.ClusterName(ep.Name, ep.Variants[0].Name)
		want := strconv.Itoa(int(config.ScaledWeights(ep.Variants)[0]))
		updates := runtimeStat("runtime.update_success")
		for len(servedAt) > 0 {
			<-servedAt
		}
		for len(runtimeACKs) > 0 {
			<-runtimeACKs
		}
		begin := time.Now()
		if err := s.Apply(next); err != nil {
			t.Fatal(err)
		}
		sv := <-servedAt
		served = append(served, sv.at.Sub(begin))
	wait:
		for {
			select {
			case ack := <-runtimeACKs:
				if ack.version == sv.version {
					acked = append(acked, ack.at.Sub(begin))
					break wait
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("change %d: Envoy did not ACK runtime version %s within 10s", i, sv.version)
			}
		}
		if n := runtimeStat("runtime.update_success"); n != updates+1 {
			t.Fatalf("change %d: runtime.update_success %d → %d, want one update", i, updates, n)
		}
		lat = append(lat, time.UnixMilli(int64(runtimeStat("runtime.update_time"))).Sub(begin))
		if got := e.runtime()[key]; got != want {
			t.Fatalf("change %d: Envoy ACKed the runtime but /runtime shows %s = %q, want %s", i, key, got, want)
		}
		cfg = next
	}
	if n, v := e.stat(routeReloads), routeVersion(); n != reloadsBefore || v != routeVersionBefore {
		t.Errorf("20 weight changes reloaded Envoy's routes: %s %d → %d, version %s → %s", routeReloads, reloadsBefore, n, routeVersionBefore, v)
	}
	p50p99 := func(ds []time.Duration) (p50, p99 time.Duration) {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2].Round(time.Millisecond), ds[int(0.99*float64(len(ds)-1))].Round(time.Millisecond)
	}
	s50, _ := p50p99(served)
	t.Logf("of which Apply and the %v debounce until served: p50 %v", xds.DefaultDebounce, s50)
	a50, a99 := p50p99(acked)
	t.Logf("one-endpoint change → Envoy's ACK of the runtime: p50 %v, p99 %v", a50, a99)
	p50, p99 := p50p99(lat)
	t.Logf("one-endpoint change → in force in Envoy's runtime (runtime.update_time): p50 %v, p99 %v (20 changes)", p50, p99)
	e.assertNoRejections()
	for _, typ := range []string{"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration", "Runtime"} {
		if n := testutil.ToFloat64(m.XDSNacks.WithLabelValues("envoy", typ)); n != 0 {
			t.Errorf("modelsplit counted %v NACKs of %s from Envoy", n, typ)
		}
	}
	// The goal is 200 ms. The bound guards against regressions on
	// modelsplit's side without failing on a loaded machine.
	if p99 > time.Second {
		t.Errorf("p99 %v from change to Envoy's runtime, want ≤ 1s (goal 200ms)", p99)
	}
}
