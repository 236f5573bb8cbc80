package translate

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// editFirstExtProc rewrites the first listener's ext_proc filter in place,
// repacking the Anys as a hand edit of the YAML would.
func editFirstExtProc(t *testing.T, res Resources, edit func(*extprocv3.ExternalProcessor)) {
	t.Helper()
	l := res[resource.ListenerType][0].(*listenerv3.Listener)
	setHCM := func(h *hcmv3.HttpConnectionManager) {
		if api := l.GetApiListener(); api != nil {
			api.ApiListener = mustAny(h)
			return
		}
		l.GetFilterChains()[0].GetFilters()[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}
	}
	hcms := listenerHCMs(l)
	if len(hcms) != 1 {
		t.Fatalf("listener %s: %d connection managers, want 1", l.GetName(), len(hcms))
	}
	hcm := hcms[0]
	for _, f := range hcm.GetHttpFilters() {
		ep := &extprocv3.ExternalProcessor{}
		if f.GetTypedConfig().UnmarshalTo(ep) != nil {
			continue
		}
		edit(ep)
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(ep)}
		setHCM(hcm)
		return
	}
	t.Fatalf("listener %s has no ext_proc filter", l.GetName())
}

func TestCheckRejectsEnvoyGRPCOnAPIListener(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindGRPC)
	editFirstExtProc(t, res, func(ep *extprocv3.ExternalProcessor) {
		ep.GrpcService.TargetSpecifier = &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ExtProcClusterName}}
	})
	wantProblem(t, Check(res), "grpc-go rejects envoy_grpc")
}

// A streamed body mode is valid for Envoy but NACKed by grpc-go.
func TestCheckRejectsStreamedBodyOnAPIListener(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindGRPC)
	editFirstExtProc(t, res, func(ep *extprocv3.ExternalProcessor) {
		ep.ProcessingMode.RequestBodyMode = extprocv3.ProcessingMode_STREAMED
	})
	wantProblem(t, Check(res), "request_body_mode STREAMED: grpc-go accepts NONE or GRPC only")

	// The same mode on the Envoy listener is not a grpc-go problem.
	envoy := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	editFirstExtProc(t, envoy, func(ep *extprocv3.ExternalProcessor) {
		ep.ProcessingMode.RequestBodyMode = extprocv3.ProcessingMode_STREAMED
	})
	if err := Check(envoy); err != nil {
		t.Fatalf("Envoy listener with a streamed body: %v", err)
	}
}

func TestCheckRequiresExtProcGRPCService(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	editFirstExtProc(t, res, func(ep *extprocv3.ExternalProcessor) {
		ep.GrpcService = nil
		ep.HttpService = &extprocv3.ExtProcHttpService{}
	})
	wantProblem(t, Check(res), "has no grpc_service")
}

func TestCheckRequiresLocalityForGRPC(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindGRPC)
	res[resource.EndpointType][0].(*endpointv3.ClusterLoadAssignment).GetEndpoints()[0].Locality = nil
	wantProblem(t, Check(res), "has no locality (grpc-go rejects it)")
}

func TestCheckRejectsMissingRouteConfiguration(t *testing.T) {
	for _, kind := range Kinds {
		res := buildOrFail(t, "testdata/in/ab.yaml", kind)
		res[resource.RouteType] = nil
		wantProblem(t, Check(res), "route configuration")
	}
}

func TestCheckPairsEDSClustersWithAssignments(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	dropped := res[resource.EndpointType][0].(*endpointv3.ClusterLoadAssignment).GetClusterName()
	res[resource.EndpointType] = res[resource.EndpointType][1:]
	wantProblem(t, Check(res), "cluster "+dropped+": EDS cluster without a load assignment")

	res = buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	res[resource.EndpointType] = append(res[resource.EndpointType], &endpointv3.ClusterLoadAssignment{ClusterName: "nobody/x"})
	wantProblem(t, Check(res), "load assignment nobody/x: no EDS cluster")
}

func TestCheckRejectsUndefinedSpecifierPlugin(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindGRPC)
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	routes := rc.GetVirtualHosts()[0].GetRoutes()
	routes[len(routes)-1].GetRoute().ClusterSpecifier = &routev3.RouteAction_ClusterSpecifierPlugin{ClusterSpecifierPlugin: "rls"}
	wantProblem(t, Check(res), `cluster_specifier_plugin "rls" is not defined`)
}

// Problems are reported with the resource and the field path inside the
// Anys, so an operator can find them in `modelsplit render` output.
func TestCheckNamesResourceAndPath(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	editFirstExtProc(t, res, func(ep *extprocv3.ExternalProcessor) {
		ep.GrpcService.GetEnvoyGrpc().ClusterName = ""
	})
	wantProblem(t, Check(res), "Listener modelsplit_gateway.filter_chains[0].filters[0].typed_config<HttpConnectionManager>.http_filters[0].typed_config<ExternalProcessor>: ")
}

func TestCheckRejectsForeignResourceType(t *testing.T) {
	res := Resources{resource.ClusterType: []types.Resource{&routev3.RouteConfiguration{Name: "x"}}}
	if err := Check(res); err == nil {
		t.Fatal("a route configuration in the cluster list passed Check")
	}
}

func TestCheckRejectsNilResource(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	res[resource.ClusterType] = append(res[resource.ClusterType], nil)
	wantProblem(t, Check(res), "nil resource")
}

// The RLS plugin's default_target serves every call whose lookup fails;
// it must name a cluster that is served.
func TestCheckRejectsMissingRLSDefaultTarget(t *testing.T) {
	res := buildOrFail(t, "testdata/in/grpc.yaml", KindGRPC)
	target := WeightedCluster("triton")
	var kept []types.Resource
	for _, r := range res[resource.ClusterType] {
		if r.(*clusterv3.Cluster).GetName() != target {
			kept = append(kept, r)
		}
	}
	if len(kept) == len(res[resource.ClusterType]) {
		t.Fatalf("precondition: grpc.yaml (route_lookup) has no cluster %s", target)
	}
	res[resource.ClusterType] = kept
	wantProblem(t, Check(res), `default_target "`+target+`" does not exist`)
}

// A connection manager with an inline route table is held to the same
// route → cluster rule as one using RDS.
func TestCheckFollowsInlineRouteConfig(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	l := res[resource.ListenerType][0].(*listenerv3.Listener)
	hcm := listenerHCMs(l)[0]
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "nowhere/x"}
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	l.GetFilterChains()[0].GetFilters()[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
	res[resource.RouteType] = nil
	wantProblem(t, Check(res), `cluster "nowhere/x" does not exist`)
}

// Snapshots key resources by name, so a duplicate would silently replace
// the first; Check names it instead.
func TestCheckRejectsDuplicateNames(t *testing.T) {
	for _, typ := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		res := buildOrFail(t, "testdata/in/multi.yaml", KindGRPC)
		first := res[typ][0]
		res[typ] = append(res[typ], first)
		wantProblem(t, Check(res), resourceName(first)+": defined twice")
	}
}
