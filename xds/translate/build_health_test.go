package translate

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

type builtEnvoy struct {
	clusters map[string]*clusterv3.Cluster
	cla      map[string]*endpointv3.ClusterLoadAssignment
	routes   map[string]*routev3.Route
}

func buildEnvoyCase(t *testing.T, path string) builtEnvoy {
	t.Helper()
	res := buildChecked(t, loadCase(t, path), KindEnvoy)
	b := builtEnvoy{clusters: map[string]*clusterv3.Cluster{}, cla: map[string]*endpointv3.ClusterLoadAssignment{}, routes: map[string]*routev3.Route{}}
	for _, r := range res[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		b.clusters[c.GetName()] = c
		if c.GetLoadAssignment() != nil {
			b.cla[c.GetName()] = c.GetLoadAssignment()
		}
	}
	for _, r := range res[resource.EndpointType] {
		cla := r.(*endpointv3.ClusterLoadAssignment)
		b.cla[cla.GetClusterName()] = cla
	}
	for _, r := range res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes() {
		b.routes[r.GetName()] = r
	}
	return b
}

// hostVariants lists, per priority, the variant metadata of the hosts and
// whether each carries failover_from = from.
func hostVariants(t *testing.T, cla *endpointv3.ClusterLoadAssignment, from string) [][]string {
	t.Helper()
	var out [][]string
	for i, lle := range cla.GetEndpoints() {
		if int(lle.GetPriority()) != i {
			t.Errorf("%s: locality %d has priority %d", cla.GetClusterName(), i, lle.GetPriority())
		}
		var vs []string
		for _, ep := range lle.GetLbEndpoints() {
			md := ep.GetMetadata().GetFilterMetadata()[hostMetadataNamespace].GetFields()
			vs = append(vs, md[hostVariantKey].GetStringValue())
			ff := md[hostFailoverFromKey].GetStringValue()
			if (i == 0 && ff != "") || (i > 0 && ff != from) {
				t.Errorf("%s priority %d: failover_from %q", cla.GetClusterName(), i, ff)
			}
		}
		out = append(out, vs)
	}
	return out
}

// A variant's cluster holds its backends at priority 0 and its failover
// targets' (same protocol, config order) after them; one healthy host
// keeps a priority fully available; health checks, outlier detection and
// retries follow the endpoint's settings.
func TestVariantClustersFailOverByPriority(t *testing.T) {
	b := buildEnvoyCase(t, "testdata/in/health.yaml")
	for _, tc := range []struct {
		cluster string
		want    [][]string
		factor  uint32
	}{
		// c speaks HTTP/2: no target for a and b, none for itself.
		{"detect/a", [][]string{{"a", "a"}, {"b"}}, 300},
		{"detect/b", [][]string{{"b"}, {"a", "a"}}, 300},
		{"detect/c", [][]string{{"c"}}, 0},
		{"generate/small", [][]string{{"small"}, {"large"}}, 200},
		{"pinned/a", [][]string{{"a"}}, 0}, // failover: false
	} {
		cla := b.cla[tc.cluster]
		if cla == nil {
			t.Fatalf("no load assignment for %s", tc.cluster)
		}
		variant := tc.want[0][0]
		got := hostVariants(t, cla, variant)
		if len(got) != len(tc.want) {
			t.Errorf("%s: priorities %v, want %v", tc.cluster, got, tc.want)
			continue
		}
		for i := range got {
			if len(got[i]) != len(tc.want[i]) || got[i][0] != tc.want[i][0] {
				t.Errorf("%s: priorities %v, want %v", tc.cluster, got, tc.want)
			}
		}
		if f := cla.GetPolicy().GetOverprovisioningFactor().GetValue(); f != tc.factor {
			t.Errorf("%s: overprovisioning factor %d, want %d", tc.cluster, f, tc.factor)
		}
	}

	a := b.clusters["detect/a"]
	hc := a.GetHealthChecks()
	if len(hc) != 1 || hc[0].GetHttpHealthCheck().GetPath() != "/healthz" || hc[0].GetInterval().AsDuration().Seconds() != 2 ||
		hc[0].GetNoTrafficInterval().AsDuration() != hc[0].GetInterval().AsDuration() || hc[0].GetUnhealthyThreshold().GetValue() != 3 {
		t.Errorf("detect/a health checks: %v", hc)
	}
	if c := b.clusters["detect/c"].GetHealthChecks(); len(c) != 1 || c[0].GetHttpHealthCheck().GetCodecClientType() != typev3.CodecClientType_HTTP2 {
		t.Errorf("detect/c (http2) health checks: %v", c)
	}
	if g := b.clusters["generate/small"].GetHealthChecks(); len(g) != 1 || g[0].GetGrpcHealthCheck().GetServiceName() != "llm.Generator" {
		t.Errorf("generate/small (grpc) health checks: %v", g)
	}
	if p := b.clusters["pinned/a"]; len(p.GetHealthChecks()) != 0 || p.GetOutlierDetection().GetMaxEjectionPercent().GetValue() != 0 {
		t.Errorf("pinned/a: health checks %v, max ejection %v", p.GetHealthChecks(), p.GetOutlierDetection().GetMaxEjectionPercent())
	}
	// Probes carry the backend's host:port, not the cluster name.
	if h := b.cla["detect/b"].GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetHealthCheckConfig().GetHostname(); h != "127.0.0.1:3" {
		t.Errorf("detect/b probe host %q", h)
	}
	od := a.GetOutlierDetection()
	if od.GetConsecutive_5Xx().GetValue() != 10 || od.GetConsecutiveGatewayFailure().GetValue() != 3 ||
		od.GetEnforcingConsecutiveGatewayFailure().GetValue() != 100 || od.GetMaxEjectionPercent().GetValue() != 100 ||
		od.GetBaseEjectionTime().AsDuration().Seconds() != 10 {
		t.Errorf("detect/a outlier detection: %v", od)
	}
	if od := b.clusters["detect/c"].GetOutlierDetection(); od.GetMaxEjectionPercent().GetValue() != 50 {
		t.Errorf("detect/c (no failover target) may eject %d%%: its only backend", od.GetMaxEjectionPercent().GetValue())
	}

	for name, want := range map[string]struct {
		on       string
		n        uint32
		priority bool
	}{
		"detect/a":        {"connect-failure,refused-stream,reset-before-request,5xx", 2, true},
		"detect/fallback": {"connect-failure,refused-stream,reset-before-request,5xx", 2, true},
		"generate/large":  {"connect-failure,refused-stream,reset-before-request", 1, true},
		"pinned/a":        {"", 0, false},
	} {
		p := b.routes[name].GetRoute().GetRetryPolicy()
		if p.GetRetryOn() != want.on || p.GetNumRetries().GetValue() != want.n || (p.GetRetryPriority() != nil) != want.priority ||
			(want.n > 0 && (len(p.GetRetryHostPredicate()) != 1 || p.GetPerTryTimeout() != nil)) {
			t.Errorf("route %s: retry policy %v", name, p)
		}
	}
}

// Envoy's connections to modelsplit ping (HTTP/2 keepalive), and the
// ext_proc cluster is health checked over gRPC with panic routing off.
func TestControlConnectionsKeptAlive(t *testing.T) {
	b := buildEnvoyCase(t, "testdata/in/ab.yaml")
	ext := b.clusters[ExtProcClusterName]
	hc := ext.GetHealthChecks()
	if len(hc) != 1 || hc[0].GetGrpcHealthCheck().GetServiceName() != "envoy.service.ext_proc.v3.ExternalProcessor" {
		t.Errorf("ext_proc health checks: %v", hc)
	}
	if p := ext.GetCommonLbConfig().GetHealthyPanicThreshold(); p == nil || p.GetValue() != 0 {
		t.Errorf("ext_proc panic threshold %v, want 0", p)
	}
	boot, err := Bootstrap(DefaultBootstrapOptions())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*clusterv3.Cluster{ext, boot.GetStaticResources().GetClusters()[0]} {
		opts := &httpv3.HttpProtocolOptions{}
		if err := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey].UnmarshalTo(opts); err != nil {
			t.Fatalf("%s: HTTP protocol options: %v", c.GetName(), err)
		}
		ka := opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions().GetConnectionKeepalive()
		if ka.GetInterval().AsDuration() != controlKeepaliveInterval || ka.GetTimeout().AsDuration() != controlKeepaliveTimeout {
			t.Errorf("%s: keepalive %v", c.GetName(), ka)
		}
	}
}
