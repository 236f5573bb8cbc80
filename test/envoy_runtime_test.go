package test

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/modelsplit/modelsplit/xds"
)

// Scenario: Envoy's fallback route splits by the live weights it reads
// from its RTDS runtime layer (docs/envoy-notes.md §6.4). The endpoint has
// decide: false, so every request takes the weighted route, as every
// request does when ext_proc is down; requests without the sticky header
// are picked at random, so shares are sampled.
//
// Each share check has a σ of at most 0.92 pp (4,000 or 3,000 picks), so
// 5σ is at most 4.6 pp; the mistakes it must catch are 30 pp or more off:
// Envoy splitting by the route's placeholder weights (1 each: a third per
// variant), or totalling the placeholders (3) while reading the runtime
// weights (everything on the first variant).
func TestEnvoyRuntimeWeights(t *testing.T) {
	a, b, c := startHTTPBackend(t, "a"), startHTTPBackend(t, "b"), startHTTPBackend(t, "c")
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    observe: false
    decide: false
    variants:
      - {name: a, weight: 20, backends: [%q]}
      - {name: b, weight: 30, backends: [%q]}
      - {name: c, weight: 50, backends: [%q]}
`, a.addr, b.addr, c.addr), "", "/model/predict")
	rt := g.envoy.runtime()
	for k, want := range map[string]string{"modelsplit.weights.model/a": "2000", "modelsplit.weights.model/b": "3000", "modelsplit.weights.model/c": "5000"} {
		if rt[k] != want {
			t.Errorf("Envoy's runtime %s = %q, want %q (all: %v)", k, rt[k], want, rt)
		}
	}
	// The route holds placeholders, the same whatever the weights.
	route := routeWeights(t, g.envoy)
	if route["model/a"] != 1 || route["model/b"] != 1 || route["model/c"] != 1 {
		t.Errorf("the route's weights %v, want the placeholder 1 each", route)
	}
	assertRandomShares(t, g, "file 20/30/50", 4000, map[string]float64{"a": .2, "b": .3, "c": .5})

	// A live change, b to 0: through the runtime, without a route reload.
	version := g.envoy.xdsVersions()["route/"+gatewayRouteName]
	reloads := g.envoy.stat(routeReloads)
	mustCLI(t, g.admin(), "set-weights", "model", "a=70", "b=0", "c=30")
	waitEnvoyWeights(t, g.envoy, map[string]float64{"model/a": 7000, "model/b": 0, "model/c": 3000})
	if v, n := g.envoy.xdsVersions()["route/"+gatewayRouteName], g.envoy.stat(routeReloads); v != version || n != reloads {
		t.Errorf("the weight change reloaded Envoy's routes: version %s → %s, %s %d → %d", version, v, routeReloads, reloads, n)
	}
	assertRandomShares(t, g, "live 70/0/30", 4000, map[string]float64{"a": .7, "b": 0, "c": .3})
	// Users with the sticky key are hashed onto the same intervals as the
	// decision engine's new-user rule, over the runtime weights.
	assertExactPicks(t, "sticky users at the live 70/0/30", g.route(t, "/model/predict", userNames("u", 3000)), "", []int{70, 0, 30})

	// A key of 0 counts as 0, not as missing: with the admin layer setting
	// a and c to 1, b (0 from RTDS) still gets nothing, where the route's
	// placeholder would give it a third.
	adminRuntime(t, g, "modelsplit.weights.model/a=1", "modelsplit.weights.model/c=1")
	assertRandomShares(t, g, "admin layer a=1 c=1 over RTDS b=0", 3000, map[string]float64{"a": .5, "b": 0, "c": .5})
	// A key with no integer value is read as missing (Envoy's getInteger
	// falls back to the default either way): every variant at the route's
	// placeholder, a third each.
	adminRuntime(t, g, "modelsplit.weights.model/a=x", "modelsplit.weights.model/b=x", "modelsplit.weights.model/c=x")
	assertRandomShares(t, g, "no integer runtime values: the placeholders", 3000, map[string]float64{"a": 1. / 3, "b": 1. / 3, "c": 1. / 3})
	// Cleared, the RTDS layer is in force again.
	adminRuntime(t, g, "modelsplit.weights.model/a=", "modelsplit.weights.model/b=", "modelsplit.weights.model/c=")
	waitEnvoyWeights(t, g.envoy, map[string]float64{"model/a": 7000, "model/b": 0, "model/c": 3000})
	g.envoy.assertNoRejections()
	// This Envoy asked for its runtime layer before its listeners: the
	// warning meant for old bootstraps stays silent.
	if logs := g.serve.current().Logs(); strings.Contains(logs, "without the runtime layer") {
		t.Errorf("modelsplit warned of an Envoy without the runtime layer:\n%s", logs)
	}
}

// routeWeights reads the weights written in Envoy's loaded route
// configuration, without the runtime.
func routeWeights(t testing.TB, e *envoyProc) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, c := range asList(e.configDump()["configs"]) {
		for _, r := range asList(c["dynamic_route_configs"]) {
			rc, _ := r["route_config"].(map[string]any)
			for _, vh := range asList(rc["virtual_hosts"]) {
				for _, route := range asList(vh["routes"]) {
					ra, _ := route["route"].(map[string]any)
					wc, _ := ra["weighted_clusters"].(map[string]any)
					for _, cw := range asList(wc["clusters"]) {
						name, _ := cw["name"].(string)
						out[name], _ = cw["weight"].(float64)
					}
				}
			}
		}
	}
	return out
}

// adminRuntime sets (or, with an empty value, clears) keys of Envoy's
// admin runtime layer, which overrides the RTDS layer.
func adminRuntime(t *testing.T, g *gateway, kvs ...string) {
	t.Helper()
	code, body := send(t, http.MethodPost, g.envoy.adminURL("/runtime_modify?"+strings.Join(kvs, "&")), "", "")
	if code != http.StatusOK {
		t.Fatalf("runtime_modify %v: %d %s", kvs, code, body)
	}
}

// assertRandomShares sends n requests without the sticky header (Envoy
// picks at random) and checks each variant's share within 5σ of want; a
// variant of share 0 must get no request at all.
func assertRandomShares(t testing.TB, g *gateway, what string, n int, want map[string]float64) {
	t.Helper()
	got := map[string]float64{}
	for i := 0; i < n; i++ {
		r, err := g.client.get("/model/predict")
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("%s: request %d: %v status %d %q", what, i, err, r.status, r.body)
		}
		got[r.body]++
	}
	for v, p := range want {
		share := got[v] / float64(n)
		sigma := math.Sqrt(p * (1 - p) / float64(n))
		if p == 0 && got[v] != 0 || math.Abs(share-p) > 5*sigma {
			t.Errorf("%s: %s got %.2f%% of %d, want %.2f%% ± %.2f pp (5σ); counts %v", what, v, 100*share, n, 100*p, 500*sigma, got)
		}
	}
	t.Logf("%s: counts of %d: %v", what, n, got)
}

// Scenario: before its RTDS layer arrives Envoy loads nothing. The
// bootstrap's RTDS layer has no initial fetch timeout, and Envoy starts
// its CDS and LDS subscriptions only once its runtime is initialized, so
// it never routes by the routes' placeholder weights. Here the xDS server
// has no config yet: Envoy waits in PRE_INITIALIZING with no cluster or
// listener; once the server has one, Envoy loads the runtime and the rest.
func TestEnvoyWaitsForItsRuntimeLayer(t *testing.T) {
	envoyBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := xds.NewServer(ctx, xds.ServerOptions{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}))
	s.Register(gs)
	go gs.Serve(lis)
	defer gs.Stop()
	e := startEnvoy(t, envoyOptions{XDS: lis.Addr().String(), Unready: true})
	e.waitStat("control_plane.connected_state", 20*time.Second, func(v uint64) bool { return v == 1 })
	time.Sleep(3 * time.Second)
	state := func() string {
		_, body := httpGet(e.adminURL("/server_info"))
		_, rest, _ := strings.Cut(body, `"state": "`)
		st, _, _ := strings.Cut(rest, `"`)
		return st
	}
	if st, cds, lis := state(), e.stat("cluster_manager.cds.update_attempt"), e.stat("listener_manager.total_listeners_active"); st != "PRE_INITIALIZING" || cds != 0 || lis != 0 {
		t.Fatalf("connected, without its runtime layer for 3s: state %s, CDS update attempts %d, listeners %d; want PRE_INITIALIZING, 0, 0", st, cds, lis)
	}
	t.Logf("connected, no runtime layer: %s, no CDS request, no listener", state())

	p := newPorts(t)
	cfg := scaleConfig(t, 3, fmt.Sprintf("127.0.0.1:%d", p.extproc))
	gwPort, _ := freePort()
	cfg.Gateway.Port, cfg.Gateway.Address = gwPort, "127.0.0.1"
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	e.waitStat("listener_manager.total_listeners_active", 20*time.Second, func(v uint64) bool { return v == 1 })
	for deadline := time.Now().Add(10 * time.Second); state() != "LIVE"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Envoy %s 10s after its listener", state())
		}
	}
	if rt := e.runtime(); rt["modelsplit.weights.model-2/v3"] != "2500" || len(rt) != 12 {
		t.Errorf("runtime after the config: %v, want 12 keys of 2500", rt)
	}
	e.assertNoRejections()
}
