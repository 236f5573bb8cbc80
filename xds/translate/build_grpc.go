package translate

import (
	"fmt"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	insecurev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/grpc_service/channel_credentials/insecure/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/modelsplit/modelsplit/config"
)

// buildGRPC produces what proxyless gRPC clients need: a listener per
// endpoint (clients dial xds:///<endpoint>), its route config, EDS clusters
// with localities. grpc-go ignores mirrors, so shadows get no resources.
func buildGRPC(cfg *config.Config) (Resources, error) {
	res := Resources{}
	for i := range cfg.Endpoints {
		r, err := grpcEndpoint(&cfg.Endpoints[i], cfg.ExtProcTarget())
		if err != nil {
			return nil, err
		}
		for t, list := range r {
			res[t] = append(res[t], list...)
		}
	}
	res.sort()
	return res, nil
}

// grpcEndpoint is everything one endpoint gives gRPC nodes. It reads the
// endpoint and the ext_proc target only, which is what the incremental
// translator compares to decide whether to build it again.
func grpcEndpoint(e *config.Endpoint, extProcTarget string) (Resources, error) {
	res := Resources{}
	res.add(resource.ListenerType, grpcListener(e, extProcTarget))
	rc := grpcRouteConfig(e, extProcTarget)
	// Sticky cohorts for proxyless clients go through RLS (opt-in per
	// endpoint); the lookup service shares the ext_proc listener.
	if e.RouteLookup {
		r, err := buildGRPCRLS(e, grpcTarget(extProcTarget))
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: route lookup: %w", e.Name, err)
		}
		withRLS(rc, r)
		for _, c := range r.clusters {
			res.add(resource.ClusterType, c)
		}
		for _, a := range r.assigns {
			res.add(resource.EndpointType, a)
		}
	}
	withGRPCTimeouts(e, rc)
	res.add(resource.RouteType, rc)
	for _, v := range e.Variants {
		name := config.ClusterName(e.Name, v.Name)
		res.add(resource.ClusterType, grpcCluster(name))
		res.add(resource.EndpointType, loadAssignment(name, v.Backends, true))
	}
	return res, nil
}

// grpcListener is an api_listener named after the endpoint, with the
// ext_proc filter (so the decided variant reaches the backend as a header)
// and the router.
func grpcListener(e *config.Endpoint, extProcTarget string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: e.Name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: e.Name,
			ConfigSource:    adsSource(),
		}},
	}
	if e.Decided() {
		// Optional: grpc-go registers ext_proc only behind
		// GRPC_EXPERIMENTAL_XDS_EXT_PROC_ON_CLIENT, and a client without
		// it would NACK the whole listener for an unknown filter. The
		// filter only informs the backend; routing does not need it.
		hcm.HttpFilters = append(hcm.HttpFilters, &hcmv3.HttpFilter{Name: DecideFilterName, IsOptional: true,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(grpcDecideFilter(e, extProcTarget))}})
	}
	if e.Observed() {
		// Optional, like the decision: a client built without the ext_proc
		// filter keeps working, unobserved.
		hcm.HttpFilters = append(hcm.HttpFilters, &hcmv3.HttpFilter{Name: ObserveFilterName, IsOptional: true,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(grpcObserveFilter(e, extProcTarget))}})
	}
	hcm.HttpFilters = append(hcm.HttpFilters, &hcmv3.HttpFilter{Name: routerFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}})
	return &listenerv3.Listener{
		Name:        e.Name,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)},
	}
}

// grpcDecideFilter differs from Envoy's: grpc-go accepts only google_grpc
// and body modes NONE/GRPC, and reads HeaderValue.value (told apart by the
// x-modelsplit-client metadata). The endpoint is fixed per listener, so it
// travels in the base metadata.
func grpcDecideFilter(e *config.Endpoint, target string) *extprocv3.ExternalProcessor {
	target = grpcTarget(target)
	return &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{
				TargetUri:                target,
				StatPrefix:               "modelsplit_extproc",
				ChannelCredentialsPlugin: []*anypb.Any{mustAny(&insecurev3.InsecureCredentials{})},
			}},
			InitialMetadata: []*corev3.HeaderValue{
				{Key: config.ClientMetadataKey, Value: "grpc"},
				{Key: config.EndpointMetadataKey, Value: e.Name},
			},
		},
		FailureModeAllow: true,
		ProcessingMode:   decideProcessingMode(),
	}
}

// grpcTarget turns our address forms into a gRPC dial target.
// grpcObserveService is the observe filter's side channel; variant, when
// set, tells the server which variant the route or weighted cluster
// carrying this override sent the call to (grpc-go picks clusters itself,
// so no header says it).
func grpcObserveService(e *config.Endpoint, target, variant string) *corev3.GrpcService {
	md := []*corev3.HeaderValue{
		{Key: config.ClientMetadataKey, Value: "grpc"},
		{Key: config.EndpointMetadataKey, Value: e.Name},
	}
	if variant != "" {
		md = append(md, &corev3.HeaderValue{Key: config.ServedVariantMetadataKey, Value: variant})
	}
	return &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{
			TargetUri:                grpcTarget(target),
			StatPrefix:               "modelsplit_observe",
			ChannelCredentialsPlugin: []*anypb.Any{mustAny(&insecurev3.InsecureCredentials{})},
		}},
		InitialMetadata: md,
	}
}

// grpcObserveFilter is the observe filter for proxyless clients:
// observability mode, response trailers for the gRPC status, and the
// messages themselves (body mode GRPC) where a compare shadow needs them.
func grpcObserveFilter(e *config.Endpoint, target string) *extprocv3.ExternalProcessor {
	bodies := extprocv3.ProcessingMode_NONE
	var attrs []string
	if e.Comparing() {
		bodies = extprocv3.ProcessingMode_GRPC
		// grpc-go sends no :path; replays need the method.
		attrs = []string{"request.path", "request.host"}
	}
	return &extprocv3.ExternalProcessor{
		RequestAttributes:    attrs,
		GrpcService:          grpcObserveService(e, target, ""),
		ObservabilityMode:    true,
		DeferredCloseTimeout: durationpb.New(time.Second),
		FailureModeAllow:     true,
		ProcessingMode:       observeProcessingMode(bodies, extprocv3.ProcessingMode_SEND),
	}
}

// grpcObservePerVariant is the per-route (or per weighted cluster)
// override naming the variant behind it.
func grpcObservePerVariant(e *config.Endpoint, target, variant string) map[string]*anypb.Any {
	if !e.Observed() {
		return nil
	}
	perRoute := &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{
		Overrides: &extprocv3.ExtProcOverrides{GrpcService: grpcObserveService(e, target, variant)},
	}}
	// Optional: a client without the ext_proc filter (its flag unset)
	// would otherwise reject the whole route config for an unknown type.
	return map[string]*anypb.Any{ObserveFilterName: mustAny(&routev3.FilterConfig{Config: mustAny(perRoute), IsOptional: true})}
}

func grpcTarget(addr string) string {
	if len(addr) > len("unix://") && addr[:len("unix://")] == "unix://" {
		return "unix:" + addr[len("unix://"):]
	}
	return "dns:///" + addr
}

// grpcRouteConfig is the endpoint's route configuration: the variant
// routes first, the weighted default route last. A route that picks the
// cluster another way (the RLS plugin) belongs between the two, so that
// explicit targets still win and clients without the plugin fall through
// to the weighted route.
func grpcRouteConfig(e *config.Endpoint, target string) *routev3.RouteConfiguration {
	routes := append(grpcVariantRoutes(e, target), grpcWeightedRoute(e, target))
	return &routev3.RouteConfiguration{
		Name:         e.Name,
		VirtualHosts: []*routev3.VirtualHost{{Name: e.Name, Domains: []string{e.Name}, Routes: routes}},
	}
}

// withRLS puts the lookup route after the variant routes (explicit targets
// still match first) and before the weighted route, which a client that
// does not support the optional plugin falls through to.
func withRLS(rc *routev3.RouteConfiguration, r *grpcRLS) {
	rc.ClusterSpecifierPlugins = []*routev3.ClusterSpecifierPlugin{r.plugin}
	vh := rc.GetVirtualHosts()[0]
	n := len(vh.Routes)
	vh.Routes = append(vh.Routes[:n-1:n-1], r.route, vh.Routes[n-1])
}

// grpcVariantRoutes: one route per variant. grpc-go subscribes only to
// clusters its routes reference, and switching to a cluster it was not yet
// using fails calls for a moment (docs/envoy-notes.md §4.5) — so every variant,
// including those at weight 0, gets a route that keeps its cluster warm:
// one that never matches (runtime fraction 0%), or, where the endpoint
// allows explicit targets, one on x-modelsplit-target. Clients can never
// pick a variant with x-modelsplit-variant.
func grpcVariantRoutes(e *config.Endpoint, target string) []*routev3.Route {
	routes := make([]*routev3.Route, 0, len(e.Variants)+2)
	for _, v := range e.Variants {
		cluster := config.ClusterName(e.Name, v.Name)
		match := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
		if e.AllowTarget {
			match.Headers = []*routev3.HeaderMatcher{exactHeader(config.TargetHeader, v.Name)}
		} else {
			match.RuntimeFraction = &corev3.RuntimeFractionalPercent{
				DefaultValue: &typev3.FractionalPercent{Numerator: 0, Denominator: typev3.FractionalPercent_HUNDRED},
			}
		}
		routes = append(routes, &routev3.Route{
			Name:                 cluster,
			Match:                match,
			Action:               &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			TypedPerFilterConfig: grpcObservePerVariant(e, target, v.Name),
		})
	}
	return routes
}

// grpcWeightedRoute splits the rest by weight, per request: proxyless
// clients get stickiness from RLS, not from this route.
func grpcWeightedRoute(e *config.Endpoint, target string) *routev3.Route {
	wc := weightedClusters(e, false)
	for _, cw := range wc.Clusters {
		_, variant, _ := strings.Cut(cw.Name, "/")
		cw.TypedPerFilterConfig = grpcObservePerVariant(e, target, variant)
	}
	return &routev3.Route{
		Name:  e.Name + "/weighted",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc},
		}},
	}
}

func grpcCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		OutlierDetection:     outlierDetection(),
	}
}
