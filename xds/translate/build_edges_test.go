package translate

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/modelsplit/modelsplit/config"
)

// An endpoint with more shadows than variants gets an Envoy cluster for
// each (shadows are Envoy mirrors; proxyless gRPC clients get none).
func TestMoreShadowsThanVariants(t *testing.T) {
	cfg, err := config.Parse("shadows.yaml", []byte(`
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {header: x-user-id}
    variants:
      - {name: only, weight: 1, backends: ["10.0.0.1:8000"]}
    shadows:
      - {name: s1, percent: 10, backends: ["10.0.0.2:8000"]}
      - {name: s2, percent: 10, backends: ["10.0.0.3:8000"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []NodeKind{KindEnvoy} {
		res, err := Build(cfg, kind)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if err := Check(res); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		names := map[string]bool{}
		for _, r := range res[resource.ClusterType] {
			names[r.(*clusterv3.Cluster).GetName()] = true
		}
		for _, want := range []string{"m/only", "m/s1", "m/s2"} {
			if !names[want] {
				t.Errorf("%s: no cluster %s among %v", kind, want, names)
			}
		}
	}
}

// The ext_proc cluster takes ports 1 to 65535 and nothing else.
func TestExtProcClusterPortRange(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:1", true},
		{"127.0.0.1:65535", true},
		{"127.0.0.1:0", false},
		{"127.0.0.1:65536", false},
		{"127.0.0.1:-1", false},
		{"127.0.0.1:grpc", false},
		{"127.0.0.1", false},
	} {
		cfg := loadCase(t, "testdata/in/ab.yaml")
		cfg.Gateway.ExtProcAddress = tc.addr
		_, err := Build(cfg, KindEnvoy)
		if tc.ok && err != nil {
			t.Errorf("ext_proc address %s: %v", tc.addr, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "ext_proc address")) {
			t.Errorf("ext_proc address %s: Build error %v, want the address refused", tc.addr, err)
		}
	}
}

// Without the decision (decide: false) and without compare shadows, the
// fallback route streams no bodies to the observe filter: only compare
// shadows need them.
func TestNoDecisionNoCompareStreamsNoBodies(t *testing.T) {
	res := buildChecked(t, configFromYAML(t, `
endpoints:
  - name: plain
    match: {path_prefix: /p}
    decide: false
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
    shadows:
      - {name: m, percent: 10, per_request: true, backends: ["10.0.0.2:80"]}
`), KindEnvoy)
	seen := 0
	for _, r := range res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes() {
		mode, capture := observeCapture(t, r)
		if mode != nil || capture != "" {
			t.Errorf("route %s: observe mode %v, capture %q; want headers only (no compare shadow)", r.GetName(), mode, capture)
		}
		seen++
	}
	if seen == 0 {
		t.Fatal("no routes")
	}
}

// Endpoints whose path prefixes are as long as each other keep their
// config order in Envoy's route table (longer prefixes still go first).
func TestEqualPrefixLengthsKeepConfigOrder(t *testing.T) {
	res := buildChecked(t, configFromYAML(t, `
endpoints:
  - {name: e1, match: {path_prefix: /b}, variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]}
  - {name: e2, match: {path_prefix: /a}, variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]}
  - {name: e3, match: {path_prefix: /long}, variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]}
  - {name: e4, match: {path_prefix: /c}, variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]}
`), KindEnvoy)
	var order []string
	for _, r := range res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes() {
		if r.GetName() == UnmatchedRouteName {
			continue
		}
		ep, _, _ := strings.Cut(r.GetName(), "/")
		if len(order) == 0 || order[len(order)-1] != ep {
			order = append(order, ep)
		}
	}
	if got, want := strings.Join(order, " "), "e3 e1 e2 e4"; got != want {
		t.Fatalf("endpoint order in the route table: %s, want %s", got, want)
	}
}

// A variant at weight 0 stays out of the RLS weighted cluster (grpc-go
// and the proto rules refuse a locality of weight 0); the others keep
// theirs.
func TestRLSWeightedClusterLeavesOutZeroWeights(t *testing.T) {
	cfg := loadCase(t, "testdata/in/grpc.yaml")
	cfg.Endpoints[0].Variants[1].Weight = 0
	res := buildChecked(t, cfg, KindGRPC)
	var weighted *endpointv3.ClusterLoadAssignment
	for _, r := range res[resource.EndpointType] {
		if cla := r.(*endpointv3.ClusterLoadAssignment); cla.GetClusterName() == WeightedCluster("triton") {
			weighted = cla
		}
	}
	if weighted == nil {
		t.Fatalf("no load assignment %s", WeightedCluster("triton"))
	}
	var zones []string
	for _, lle := range weighted.GetEndpoints() {
		zones = append(zones, lle.GetLocality().GetSubZone())
	}
	if strings.Join(zones, ",") != "v1" {
		t.Fatalf("weighted cluster localities %v, want only v1 (v2 has weight 0)", zones)
	}
}

// A weight-0 variant anywhere in the list stays out of gRPC nodes'
// weighted split and the variants after it stay in. Envoy's split names
// every variant and takes the weights from the runtime layer, where the
// weight-0 variant is 0.
func TestWeightedSplitSkipsOnlyZeroWeights(t *testing.T) {
	cfg := configFromYAML(t, `
endpoints:
  - name: z
    match: {path_prefix: /z}
    sticky: {header: x-user-id}
    variants:
      - {name: off, weight: 0, backends: ["10.0.0.1:80"]}
      - {name: a, weight: 60, backends: ["10.0.0.2:80"]}
      - {name: b, weight: 40, backends: ["10.0.0.3:80"]}
`)
	for _, kind := range []NodeKind{KindEnvoy, KindGRPC} {
		res := buildChecked(t, cfg, kind)
		found := false
		for _, r := range res[resource.RouteType] {
			for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
				for _, route := range vh.GetRoutes() {
					wc := route.GetRoute().GetWeightedClusters()
					if wc == nil {
						continue
					}
					found = true
					var names []string
					for _, cw := range wc.GetClusters() {
						names = append(names, cw.GetName())
					}
					want := "z/a,z/b"
					if kind == KindEnvoy {
						want = "z/off,z/a,z/b"
					}
					if got := strings.Join(names, ","); got != want {
						t.Errorf("%s: route %s splits over %s, want %s", kind, route.GetName(), got, want)
					}
				}
			}
		}
		if !found {
			t.Errorf("%s: no weighted route", kind)
		}
		if kind == KindEnvoy {
			w := runtimeWeights(t, res)
			if w["modelsplit.weights.z/off"] != 0 || w["modelsplit.weights.z/a"] != 6000 || w["modelsplit.weights.z/b"] != 4000 || len(w) != 3 {
				t.Errorf("envoy: runtime weights %v, want z/off 0, z/a 6000, z/b 4000", w)
			}
		}
	}
}
