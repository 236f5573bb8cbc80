package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/config"
)

// grpcRLS is what proxyless gRPC clients need for sticky routing through
// the Route Lookup Service: the plugin for the route configuration, the
// route that uses it, and the clusters lookups answer with.
type grpcRLS struct {
	plugin   *routev3.ClusterSpecifierPlugin
	route    *routev3.Route
	clusters []*clusterv3.Cluster
	assigns  []*endpointv3.ClusterLoadAssignment
}

// buildGRPCRLS builds the RLS pieces for one gRPC endpoint. lookupService is
// the gRPC target of modelsplit's lookup service (e.g. grpcTarget of the
// ext_proc address, when the lookup service shares that listener).
//
// Wiring (in buildGRPC / grpcRouteConfig):
//   - RouteConfiguration.ClusterSpecifierPlugins = [r.plugin];
//   - r.route goes after the per-variant routes and before the weighted
//     route: explicit targets still match first, and a client that does not
//     support the (optional) plugin skips the route and falls through to
//     the weighted route;
//   - r.clusters and r.assigns are added beside the variant clusters.
//
// The answers are alias clusters (AliasCluster), never the variant
// clusters the other routes reference: grpc-go 1.85 never readies an RLS
// target that a route also references (docs/envoy-notes.md §4.4). The weighted
// cluster (WeightedCluster) holds one locality per serving variant,
// weighted like the variant, so the plugin's default target — used when a
// lookup fails — still splits by weight, per request.
func buildGRPCRLS(e *config.Endpoint, lookupService string) (*grpcRLS, error) {
	plugin, err := ClusterSpecifierPlugin(e, PluginOptions{LookupService: lookupService})
	if err != nil {
		return nil, err
	}
	r := &grpcRLS{
		plugin: plugin,
		route: &routev3.Route{
			Name:  e.Name + "/rls",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_ClusterSpecifierPlugin{ClusterSpecifierPlugin: PluginName},
			}},
		},
	}
	weighted := &endpointv3.ClusterLoadAssignment{ClusterName: WeightedCluster(e.Name)}
	for _, v := range e.Variants {
		alias := AliasCluster(e.Name, v.Name)
		r.clusters = append(r.clusters, grpcCluster(alias))
		r.assigns = append(r.assigns, loadAssignment(alias, v.Backends, true))
		if v.Weight > 0 {
			weighted.Endpoints = append(weighted.Endpoints, variantLocality(v))
		}
	}
	r.clusters = append(r.clusters, grpcCluster(weighted.ClusterName))
	r.assigns = append(r.assigns, weighted)
	return r, nil
}

// variantLocality is a variant's backends as one locality of the weighted
// cluster; the sub-zone keeps localities distinct.
func variantLocality(v config.Variant) *endpointv3.LocalityLbEndpoints {
	lle := loadAssignment("", v.Backends, true).Endpoints[0]
	lle.Locality = &corev3.Locality{Region: "modelsplit", Zone: "default", SubZone: v.Name}
	lle.LoadBalancingWeight = wrapperspb.UInt32(uint32(v.Weight))
	return lle
}
