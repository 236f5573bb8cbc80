package translate

import (
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/modelsplit/modelsplit/config"
)

func configFromYAML(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("inline.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func buildChecked(t *testing.T, cfg *config.Config, kind NodeKind) Resources {
	t.Helper()
	res, err := Build(cfg, kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(res); err != nil {
		t.Fatal(err)
	}
	return res
}

// With overlapping prefixes the longer one must be matched first, whatever
// the config order, or /v1 would take /v1/chat's traffic.
func TestLongerPrefixRoutesFirst(t *testing.T) {
	cfg := configFromYAML(t, `
endpoints:
  - name: all
    match: {path_prefix: /v1}
    variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]
  - name: chat
    match: {path_prefix: /v1/chat}
    variants: [{name: a, weight: 1, backends: ["10.0.0.2:80"]}]
`)
	res := buildChecked(t, cfg, KindEnvoy)
	routes := res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes()
	var order []string
	for _, r := range routes {
		order = append(order, r.GetName())
	}
	if got, want := strings.Join(order, " "), "chat/a chat/fallback all/a all/fallback unmatched"; got != want {
		t.Fatalf("route order %q, want %q", got, want)
	}
}

// Envoy allows any non-system header mutation unless disallow_all is set;
// the decision may only touch our two headers and set-cookie.
func TestDecideFilterRestrictsMutations(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/three.yaml"), KindEnvoy)
	hcm := listenerHCMs(res[resource.ListenerType][0].(*listenerv3.Listener))[0]
	ep := &extprocv3.ExternalProcessor{}
	if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(ep); err != nil {
		t.Fatal(err)
	}
	rules := ep.GetMutationRules()
	if !rules.GetDisallowAll().GetValue() {
		t.Error("mutation_rules.disallow_all is not set: allow_expression alone does not restrict")
	}
	var fwd []string
	for _, p := range ep.GetForwardRules().GetAllowedHeaders().GetPatterns() {
		fwd = append(fwd, p.GetExact())
	}
	// three.yaml: cookie stickiness, rules on x-region and x-device, a user
	// list (keyed by the cookie), explicit targets.
	if got, want := strings.Join(fwd, ","), "cookie,x-device,x-modelsplit-target,x-region"; got != want {
		t.Errorf("forwarded headers %q, want %q", got, want)
	}
	if !ep.GetFailureModeAllow() || ep.GetProcessingMode().GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND ||
		ep.GetProcessingMode().GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP {
		t.Errorf("decide filter must fail open and send request headers only: %v", ep)
	}
}

// Every Envoy route carries the endpoint in the ext_proc stream metadata,
// and every variant route answers with the variant header (the answering
// host's, build_health.go).
func TestEveryEnvoyRouteNamesItsEndpoint(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/multi.yaml"), KindEnvoy)
	for _, r := range endpointRoutesOf(res) {
		per := &extprocv3.ExtProcPerRoute{}
		a := r.GetTypedPerFilterConfig()[DecideFilterName]
		if a == nil || a.UnmarshalTo(per) != nil {
			t.Errorf("route %s: no ExtProcPerRoute", r.GetName())
			continue
		}
		md := per.GetOverrides().GetGrpcInitialMetadata()
		endpoint := strings.Split(r.GetName(), "/")[0]
		if len(md) != 1 || md[0].GetKey() != config.EndpointMetadataKey || md[0].GetValue() != endpoint {
			t.Errorf("route %s: metadata %v, want %s: %s", r.GetName(), md, config.EndpointMetadataKey, endpoint)
		}
		if h := r.GetResponseHeadersToAdd(); len(h) != 0 {
			t.Errorf("route %s: response headers %v; the virtual host sets them", r.GetName(), h)
		}
	}
	// Once, on the virtual host every route is in: the variant that
	// answered and the one failed over from, each from the answering
	// host's metadata, after removing whatever a backend sent.
	vh := res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0]
	rh := vh.GetResponseHeadersToAdd()
	if len(rh) != 2 || rh[0].GetHeader().GetKey() != config.VariantHeader || rh[1].GetHeader().GetKey() != config.FailoverHeader ||
		rh[0].GetHeader().GetValue() != "%UPSTREAM_METADATA("+hostMetadataNamespace+":"+hostVariantKey+")%" ||
		rh[1].GetHeader().GetValue() != "%UPSTREAM_METADATA("+hostMetadataNamespace+":"+hostFailoverFromKey+")%" {
		t.Errorf("virtual host response headers %v", rh)
	}
	for _, o := range rh {
		if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("virtual host header %s: %v, want it overwritten", o.GetHeader().GetKey(), o.GetAppendAction())
		}
	}
	if rm := vh.GetResponseHeadersToRemove(); !slices.Equal(rm, []string{config.VariantHeader, config.FailoverHeader}) {
		t.Errorf("virtual host removes %v from answers, want both served-variant headers", rm)
	}
}

// envoyOverrideKey mirrors how Envoy matches a mode_override against
// allowed_override_modes: raw enum values of every field except
// request_header_mode (ext_proc allowed_override_modes_set.h).
func envoyOverrideKey(m *extprocv3.ProcessingMode) [5]int32 {
	return [5]int32{int32(m.GetResponseHeaderMode()), int32(m.GetRequestBodyMode()), int32(m.GetResponseBodyMode()),
		int32(m.GetRequestTrailerMode()), int32(m.GetResponseTrailerMode())}
}

// The server's cookie override must be accepted however it spells the
// trailer modes, and nothing that adds a body phase may be.
func TestDecideFilterAllowsOnlyTheCookieOverride(t *testing.T) {
	ep := decideFilter(loadCase(t, "testdata/in/three.yaml"))
	allowed := map[[5]int32]bool{}
	for _, m := range ep.GetAllowedOverrideModes() {
		allowed[envoyOverrideKey(m)] = true
	}
	send, skip := extprocv3.ProcessingMode_SEND, extprocv3.ProcessingMode_SKIP
	for _, tc := range []struct {
		name string
		mode *extprocv3.ProcessingMode
		want bool
	}{
		{"response headers only, rest unset", &extprocv3.ProcessingMode{ResponseHeaderMode: send}, true},
		{"response headers, trailers skipped", &extprocv3.ProcessingMode{RequestHeaderMode: send, ResponseHeaderMode: send, RequestTrailerMode: skip, ResponseTrailerMode: skip}, true},
		{"buffered request body", &extprocv3.ProcessingMode{ResponseHeaderMode: send, RequestBodyMode: extprocv3.ProcessingMode_BUFFERED}, false},
		{"response trailers", &extprocv3.ProcessingMode{ResponseHeaderMode: send, ResponseTrailerMode: send}, false},
	} {
		if got := allowed[envoyOverrideKey(tc.mode)]; got != tc.want {
			t.Errorf("%s: allowed=%v, want %v", tc.name, got, tc.want)
		}
	}
}

// A DNS-named backend makes a STRICT_DNS cluster with inline endpoints
// (Envoy's EDS takes IPs only); gRPC and HTTP/2 members speak HTTP/2; the
// ext_proc cluster's circuit breakers are far above Envoy's 1,024 default.
func TestEnvoyClusters(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/multi.yaml"), KindEnvoy)
	clusters := map[string]*clusterv3.Cluster{}
	for _, r := range res[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		clusters[c.GetName()] = c
	}
	cla := map[string]bool{}
	for _, r := range res[resource.EndpointType] {
		cla[r.(*endpointv3.ClusterLoadAssignment).GetClusterName()] = true
	}
	dns := clusters["embed/v2"]
	if dns.GetType() != clusterv3.Cluster_STRICT_DNS || dns.GetLoadAssignment() == nil || cla["embed/v2"] {
		t.Errorf("embed/v2 (DNS backend): type %v, inline endpoints %v, EDS assignment %v", dns.GetType(), dns.GetLoadAssignment() != nil, cla["embed/v2"])
	}
	if c := clusters["chat/small"]; c.GetType() != clusterv3.Cluster_EDS || !cla["chat/small"] {
		t.Errorf("chat/small (IP backends, failing over to IP backends) should be EDS with an assignment")
	}
	// embed/v1's own backend is an IP, but its cluster also holds its
	// failover target v2's DNS-named backend.
	if c := clusters["embed/v1"]; c.GetType() != clusterv3.Cluster_STRICT_DNS || cla["embed/v1"] {
		t.Errorf("embed/v1 (failing over to a DNS backend): type %v, EDS assignment %v", c.GetType(), cla["embed/v1"])
	}
	for _, name := range []string{"embed/v1", "embed/v2", ExtProcClusterName} {
		if _, ok := clusters[name].GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; !ok {
			t.Errorf("%s: no HTTP/2 protocol options", name)
		}
	}
	if _, ok := clusters["chat/small"].GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; ok {
		t.Error("chat/small is HTTP/1 but has HTTP/2 protocol options")
	}
	ext := clusters[ExtProcClusterName]
	if got := ext.GetCircuitBreakers().GetThresholds()[0].GetMaxRequests().GetValue(); got < 10_000 {
		t.Errorf("ext_proc cluster max_requests %d: one stream per request needs far more than 1,024", got)
	}
	if ext.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetPipe().GetPath() != "/run/modelsplit/extproc.sock" {
		t.Errorf("ext_proc cluster does not dial the unix socket: %v", ext.GetLoadAssignment())
	}
}

// decide: false (the benchmark baseline) turns the decision off on every
// route of that endpoint only, leaves the routes and clusters as they are,
// and gives proxyless gRPC clients of that endpoint no decide filter.
func TestDecideFalseDisablesTheDecisionPerEndpoint(t *testing.T) {
	cfg := configFromYAML(t, `
endpoints:
  - name: alone
    match: {path_prefix: /alone}
    sticky: {header: x-user-id}
    decide: false
    variants: [{name: a, weight: 50, backends: ["10.0.0.1:80"]}, {name: b, weight: 50, backends: ["10.0.0.2:80"]}]
    shadows: [{name: p, percent: 5, per_request: true, backends: ["10.0.0.3:80"]}]
  - name: decided
    match: {path_prefix: /decided}
    sticky: {header: x-user-id}
    variants: [{name: a, weight: 50, backends: ["10.0.0.1:80"]}, {name: b, weight: 50, backends: ["10.0.0.2:80"]}]
`)
	res := buildChecked(t, cfg, KindEnvoy)
	routes := endpointRoutesOf(res)
	perEndpoint := map[string]int{}
	for _, r := range routes {
		per := &extprocv3.ExtProcPerRoute{}
		if err := r.GetTypedPerFilterConfig()[DecideFilterName].UnmarshalTo(per); err != nil {
			t.Fatalf("route %s: %v", r.GetName(), err)
		}
		endpoint := strings.Split(r.GetName(), "/")[0]
		perEndpoint[endpoint]++
		if got, want := per.GetDisabled(), endpoint == "alone"; got != want {
			t.Errorf("route %s: decision disabled = %v, want %v", r.GetName(), got, want)
		}
	}
	if perEndpoint["alone"] != 3 || perEndpoint["decided"] != 3 {
		t.Errorf("routes per endpoint %v, want the same 3 (2 variants + fallback) for both", perEndpoint)
	}

	grpcRes := buildChecked(t, cfg, KindGRPC)
	for _, r := range grpcRes[resource.ListenerType] {
		l := r.(*listenerv3.Listener)
		has := false
		for _, f := range listenerHCMs(l)[0].GetHttpFilters() {
			has = has || f.GetName() == DecideFilterName
		}
		if want := l.GetName() == "decided"; has != want {
			t.Errorf("gRPC listener %s: decide filter present = %v, want %v", l.GetName(), has, want)
		}
	}
}
