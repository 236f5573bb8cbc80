package translate

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	grpcstatsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_stats/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// The observe filter never holds traffic (observability mode), and every
// processing mode Envoy's routes can put in force sends the response
// trailers, where a gRPC answer's status is: the filter's own and the
// compare-mode override.
func TestObserveFilterSendsTrailersWithoutWaiting(t *testing.T) {
	for _, name := range []string{"grpc", "compare", "multi", "ab"} {
		res := buildChecked(t, loadCase(t, "testdata/in/"+name+".yaml"), KindEnvoy)
		hcm := listenerHCMs(res[resource.ListenerType][0].(*listenerv3.Listener))[0]
		var modes []*extprocv3.ProcessingMode
		for _, f := range hcm.GetHttpFilters() {
			if f.GetName() != ObserveFilterName {
				continue
			}
			ep := &extprocv3.ExternalProcessor{}
			if err := f.GetTypedConfig().UnmarshalTo(ep); err != nil {
				t.Fatal(err)
			}
			if !ep.GetObservabilityMode() || !ep.GetFailureModeAllow() {
				t.Errorf("%s: observe filter must be in observability mode and fail open: %v", name, ep)
			}
			modes = append(modes, ep.GetProcessingMode())
		}
		if len(modes) != 1 {
			t.Fatalf("%s: %d observe filters", name, len(modes))
		}
		for _, r := range res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes() {
			per := &extprocv3.ExtProcPerRoute{}
			if a := r.GetTypedPerFilterConfig()[ObserveFilterName]; a == nil || a.UnmarshalTo(per) != nil {
				t.Fatalf("%s: route %s: no observe ExtProcPerRoute", name, r.GetName())
			}
			if m := per.GetOverrides().GetProcessingMode(); m != nil {
				modes = append(modes, m)
			}
		}
		for _, m := range modes {
			if m.GetResponseTrailerMode() != extprocv3.ProcessingMode_SEND || m.GetResponseHeaderMode() != extprocv3.ProcessingMode_SEND {
				t.Errorf("%s: observe processing mode %v does not send response headers and trailers", name, m)
			}
			for _, b := range []extprocv3.ProcessingMode_BodySendMode{m.GetRequestBodyMode(), m.GetResponseBodyMode()} {
				if b != extprocv3.ProcessingMode_NONE && b != extprocv3.ProcessingMode_STREAMED {
					t.Errorf("%s: body mode %v is not allowed in observability mode", name, b)
				}
			}
		}
	}
}

// Envoy's router counts a gRPC answer as HTTP 200 whatever its
// grpc-status; the grpc_stats filter (per-cluster, no method names) gives
// Envoy's own per-variant gRPC status counts, before the router, only
// where an endpoint speaks gRPC.
func TestGRPCStatsFilterOnlyForGRPC(t *testing.T) {
	for name, want := range map[string]bool{"grpc": true, "multi": true, "compare": true, "ab": false, "three": false} {
		res := buildChecked(t, loadCase(t, "testdata/in/"+name+".yaml"), KindEnvoy)
		filters := listenerHCMs(res[resource.ListenerType][0].(*listenerv3.Listener))[0].GetHttpFilters()
		at := -1
		for i, f := range filters {
			if f.GetName() == grpcStatsFilterName {
				at = i
				cfg := &grpcstatsv3.FilterConfig{}
				if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
					t.Fatal(err)
				}
				if cfg.GetStatsForAllMethods() == nil || cfg.GetStatsForAllMethods().GetValue() {
					t.Errorf("%s: grpc_stats must not emit per-method stats (clients would grow them): %v", name, cfg)
				}
			}
		}
		if (at >= 0) != want {
			t.Errorf("%s: grpc_stats filter present = %v, want %v", name, at >= 0, want)
		}
		if at >= 0 && filters[len(filters)-1].GetName() != routerFilterName {
			t.Errorf("%s: the router must stay last", name)
		}
	}
}
