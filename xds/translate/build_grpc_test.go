package translate

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/modelsplit/modelsplit/config"
)

// routedClusters lists every cluster a route configuration names.
func routedClusters(rc *routev3.RouteConfiguration) map[string]bool {
	out := map[string]bool{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if c := r.GetRoute().GetCluster(); c != "" {
				out[c] = true
			}
			for _, cw := range r.GetRoute().GetWeightedClusters().GetClusters() {
				out[cw.GetName()] = true
			}
		}
	}
	return out
}

// grpc-go fails calls for a moment when a route switches to a cluster it
// was not yet using (docs/envoy-notes.md §4.5): every variant, weight 0
// included, stays referenced. And no route lets a client pick a variant with
// x-modelsplit-variant.
func TestGRPCRoutesKeepEveryVariantReferenced(t *testing.T) {
	for _, in := range []string{"zero", "three", "multi"} {
		cfg := loadCase(t, "testdata/in/"+in+".yaml")
		res := buildChecked(t, cfg, KindGRPC)
		byName := map[string]*routev3.RouteConfiguration{}
		for _, r := range res[resource.RouteType] {
			rc := r.(*routev3.RouteConfiguration)
			byName[rc.GetName()] = rc
		}
		for _, e := range cfg.Endpoints {
			rc := byName[e.Name]
			if rc == nil {
				t.Fatalf("%s: no route configuration named %s", in, e.Name)
			}
			refs := routedClusters(rc)
			for _, v := range e.Variants {
				if !refs[config.ClusterName(e.Name, v.Name)] {
					t.Errorf("%s: variant %s (weight %d) is not referenced by any route", in, v.Name, v.Weight)
				}
			}
			for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
				for _, h := range r.GetMatch().GetHeaders() {
					if h.GetName() == config.VariantHeader {
						t.Errorf("%s: route %s matches %s, which clients could set", in, r.GetName(), config.VariantHeader)
					}
					if h.GetName() == config.TargetHeader && !e.AllowTarget {
						t.Errorf("%s: route %s honours explicit targets on an endpoint that does not allow them", in, r.GetName())
					}
				}
			}
		}
	}
}

// Each gRPC listener's ext_proc names the client kind and the endpoint in
// the stream metadata (there is no per-route config in grpc-go).
func TestGRPCExtProcMetadata(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/multi.yaml"), KindGRPC)
	if n := len(res[resource.ListenerType]); n != 2 {
		t.Fatalf("%d listeners, want one per endpoint (2)", n)
	}
	for _, r := range res[resource.ListenerType] {
		l := r.(*listenerv3.Listener)
		hcm := listenerHCMs(l)[0]
		ep := &extprocv3.ExternalProcessor{}
		if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(ep); err != nil {
			t.Fatalf("listener %s: first filter is not ext_proc: %v", l.GetName(), err)
		}
		md := map[string]string{}
		for _, h := range ep.GetGrpcService().GetInitialMetadata() {
			md[h.GetKey()] = h.GetValue()
		}
		if md[config.ClientMetadataKey] != "grpc" || md[config.EndpointMetadataKey] != l.GetName() {
			t.Errorf("listener %s: metadata %v", l.GetName(), md)
		}
		if got := ep.GetGrpcService().GetGoogleGrpc().GetTargetUri(); got != "unix:/run/modelsplit/extproc.sock" {
			t.Errorf("listener %s: target_uri %q", l.GetName(), got)
		}
		if rds := hcm.GetRds().GetRouteConfigName(); rds != l.GetName() {
			t.Errorf("listener %s: RDS name %q, want the endpoint name", l.GetName(), rds)
		}
	}
}
