package translate

import (
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	earlyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/modelsplit/modelsplit/config"
)

// Every route an endpoint owns carries its bounds, the fallback route
// included: an HTTP endpoint's as timeout + idle_timeout, a gRPC
// endpoint's as max_stream_duration capped grpc-timeout + idle_timeout
// (RouteAction.timeout would be ignored there, so it is left unset).
func TestEnvoyRoutesCarryEndpointTimeouts(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/long.yaml"), KindEnvoy)
	want := map[string]struct {
		timeout, idle time.Duration
		grpc          bool
	}{
		"chat":     {15 * time.Minute, 30 * time.Second, false},
		"generate": {10 * time.Minute, 60 * time.Second, true},
	}
	seen := map[string]int{}
	for _, r := range res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes() {
		if r.GetName() == UnmatchedRouteName { // the gateway's 404, no endpoint's
			continue
		}
		ep, _, _ := strings.Cut(r.GetName(), "/")
		w, ok := want[ep]
		if !ok {
			t.Fatalf("route %s of no endpoint", r.GetName())
		}
		seen[ep]++
		a := r.GetRoute()
		if got := a.GetIdleTimeout().AsDuration(); got != w.idle {
			t.Errorf("route %s: idle_timeout %v, want %v", r.GetName(), got, w.idle)
		}
		msd := a.GetMaxStreamDuration()
		if w.grpc {
			if a.GetTimeout() != nil {
				t.Errorf("route %s: timeout %v set on a gRPC route (Envoy ignores it beside max_stream_duration)", r.GetName(), a.GetTimeout().AsDuration())
			}
			if msd.GetMaxStreamDuration().AsDuration() != w.timeout || msd.GetGrpcTimeoutHeaderMax().AsDuration() != w.timeout {
				t.Errorf("route %s: max_stream_duration %v, want max_stream_duration and grpc_timeout_header_max %v", r.GetName(), msd, w.timeout)
			}
		} else {
			if got := a.GetTimeout().AsDuration(); got != w.timeout {
				t.Errorf("route %s: timeout %v, want %v", r.GetName(), got, w.timeout)
			}
			if msd != nil {
				t.Errorf("route %s: max_stream_duration %v on an HTTP route", r.GetName(), msd)
			}
		}
	}
	if seen["chat"] != 3 || seen["generate"] != 3 {
		t.Errorf("routes per endpoint %v, want 2 variants + fallback each", seen)
	}

	hcm := listenerHCMs(res[resource.ListenerType][0].(*listenerv3.Listener))[0]
	if got := hcm.GetStreamIdleTimeout().AsDuration(); got != 60*time.Second {
		t.Errorf("stream_idle_timeout %v, want the longest endpoint idle_timeout 60s", got)
	}
	mut := &earlyv3.HeaderMutation{}
	if err := hcm.GetEarlyHeaderMutationExtensions()[0].GetTypedConfig().UnmarshalTo(mut); err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, m := range mut.GetMutations() {
		removed = append(removed, m.GetRemove())
	}
	for _, h := range clientTimeoutHeaders {
		if !slices.Contains(removed, h) {
			t.Errorf("client header %s is not stripped (removed: %v)", h, removed)
		}
	}
}

// A gRPC endpoint's mirror gets no timeout from Envoy's router (its route
// uses max_stream_duration), so its shadow cluster bounds the stream; an
// HTTP endpoint's mirror has the route's timeout and its cluster is left
// as it was.
func TestShadowClustersBoundedForGRPCEndpoints(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/long.yaml"), KindEnvoy)
	for _, m := range res[resource.ClusterType] {
		c := m.(*clusterv3.Cluster)
		opts := &httpv3.HttpProtocolOptions{}
		if a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; a != nil {
			if err := a.UnmarshalTo(opts); err != nil {
				t.Fatal(err)
			}
		}
		got := opts.GetCommonHttpProtocolOptions().GetMaxStreamDuration().AsDuration()
		want := time.Duration(0)
		if c.GetName() == "generate/c" {
			want = 10 * time.Minute
			if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
				t.Errorf("cluster %s lost its HTTP/2 protocol options: %v", c.GetName(), opts)
			}
		}
		if got != want {
			t.Errorf("cluster %s: upstream max_stream_duration %v, want %v", c.GetName(), got, want)
		}
	}
}

// Proxyless grpc-go reads only max_stream_duration (grpc_timeout_header_max
// first): every route of the endpoint's route configuration carries it,
// the lookup route included.
func TestGRPCRoutesCarryMaxStreamDuration(t *testing.T) {
	for _, name := range []string{"long", "grpc"} {
		cfg := loadCase(t, "testdata/in/"+name+".yaml")
		res := buildChecked(t, cfg, KindGRPC)
		for _, m := range res[resource.RouteType] {
			rc := m.(*routev3.RouteConfiguration)
			e, _ := cfg.Endpoint(rc.GetName())
			routes := rc.GetVirtualHosts()[0].GetRoutes()
			if e.RouteLookup && !slices.ContainsFunc(routes, func(r *routev3.Route) bool { return r.GetName() == e.Name+"/rls" }) {
				t.Errorf("%s: no lookup route", rc.GetName())
			}
			for _, r := range routes {
				msd := r.GetRoute().GetMaxStreamDuration()
				if msd.GetGrpcTimeoutHeaderMax().AsDuration() != e.Timeout.D() || msd.GetMaxStreamDuration().AsDuration() != e.Timeout.D() {
					t.Errorf("%s route %s: max_stream_duration %v, want %v", rc.GetName(), r.GetName(), msd, e.Timeout)
				}
			}
		}
	}
}

// A config built in code without ApplyDefaults still gets bounded routes
// (Envoy would read a zero as "no timeout").
func TestTimeoutsDefaultWithoutApplyDefaults(t *testing.T) {
	e := &config.Endpoint{Name: "m"}
	routes := withTimeouts(e, []*routev3.Route{{Action: &routev3.Route_Route{Route: &routev3.RouteAction{}}}})
	if got := routes[0].GetRoute().GetTimeout().AsDuration(); got != config.DefaultTimeout.D() {
		t.Errorf("timeout %v, want %v", got, config.DefaultTimeout)
	}
	if got := routes[0].GetRoute().GetIdleTimeout().AsDuration(); got != config.DefaultIdleTimeout.D() {
		t.Errorf("idle_timeout %v, want %v", got, config.DefaultIdleTimeout)
	}
}

// The gateway's stream_idle_timeout is the longest endpoint idle_timeout,
// also when that is longer than the default.
func TestStreamIdleTimeoutIsTheLongestEndpointIdle(t *testing.T) {
	cfg := configFromYAML(t, `
endpoints:
  - name: a
    match: {path_prefix: /a}
    timeout: 10m
    idle_timeout: 90s
    variants: [{name: v, weight: 1, backends: ["10.0.0.1:80"]}]
  - name: b
    match: {path_prefix: /b}
    idle_timeout: 20s
    variants: [{name: v, weight: 1, backends: ["10.0.0.2:80"]}]
`)
	hcm := listenerHCMs(buildChecked(t, cfg, KindEnvoy)[resource.ListenerType][0].(*listenerv3.Listener))[0]
	if got := hcm.GetStreamIdleTimeout().AsDuration(); got != 90*time.Second {
		t.Errorf("stream_idle_timeout %v, want a's 90s", got)
	}
}

// A gRPC endpoint's shadow that speaks HTTP/1 (no protocol options of its
// own) is bounded too: its cluster gets HTTP/1 options carrying the
// endpoint's timeout as max_stream_duration.
func TestHTTP1ShadowOfGRPCEndpointBounded(t *testing.T) {
	cfg := configFromYAML(t, `
endpoints:
  - name: g
    match: {path_prefix: /pkg.Svc/}
    protocol: grpc
    timeout: 7m
    variants: [{name: v, weight: 1, backends: ["10.0.0.1:9000"]}]
    shadows:
      - {name: h1, protocol: http1, percent: 10, per_request: true, backends: ["10.0.0.9:8080"]}
`)
	for _, m := range buildChecked(t, cfg, KindEnvoy)[resource.ClusterType] {
		c := m.(*clusterv3.Cluster)
		if c.GetName() != "g/h1" {
			continue
		}
		opts := &httpv3.HttpProtocolOptions{}
		a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
		if a == nil {
			t.Fatal("g/h1: no HTTP protocol options")
		}
		if err := a.UnmarshalTo(opts); err != nil {
			t.Fatal(err)
		}
		if got := opts.GetCommonHttpProtocolOptions().GetMaxStreamDuration().AsDuration(); got != 7*time.Minute || opts.GetExplicitHttpConfig().GetHttpProtocolOptions() == nil {
			t.Errorf("g/h1: max_stream_duration %v, options %v; want 7m over HTTP/1", got, opts)
		}
		return
	}
	t.Fatal("no cluster g/h1")
}
