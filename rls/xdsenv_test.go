package rls

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// This file is a small stand-in for the xds package's gRPC resources (the
// rls package cannot import xds, which imports rls): a go-control-plane
// snapshot with what a proxyless client needs for RLS routing, served over
// real ADS on loopback to a real grpc-go xDS client.

const testNodeID = "rls-test-client"

// rlsSnapshot builds: an api_listener named after the endpoint; a route
// config whose first route uses the RLS plugin and whose second is the
// weighted route (used only by clients without RLS support); the variant
// clusters (referenced by the weighted route), their RLS aliases and the
// weighted cluster, all over EDS with localities.
func rlsSnapshot(t testing.TB, e *config.Endpoint, lookupService, version string) *cache.Snapshot {
	t.Helper()
	// A lookup may take 4 s (the calls' deadline is 5 s), not the default
	// 1 s: these tests check where answered lookups send users, and on a
	// loaded machine a lookup past 1 s sends its user to the weighted
	// default target instead, which they would report as a wrong pick.
	plugin, err := translate.ClusterSpecifierPlugin(e, translate.PluginOptions{LookupService: lookupService, LookupTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	hcm := &hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: e.Name,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAnyT(t, &routerv3.Router{})}}},
	}
	lis := &listenerv3.Listener{Name: e.Name, ApiListener: &listenerv3.ApiListener{ApiListener: mustAnyT(t, hcm)}}
	weighted := &routev3.WeightedCluster{}
	for _, v := range e.Variants {
		if v.Weight > 0 {
			weighted.Clusters = append(weighted.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name: config.ClusterName(e.Name, v.Name), Weight: wrapperspb.UInt32(uint32(v.Weight))})
		}
	}
	rc := &routev3.RouteConfiguration{
		Name:                    e.Name,
		ClusterSpecifierPlugins: []*routev3.ClusterSpecifierPlugin{plugin},
		VirtualHosts: []*routev3.VirtualHost{{Name: e.Name, Domains: []string{e.Name}, Routes: []*routev3.Route{
			{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_ClusterSpecifierPlugin{ClusterSpecifierPlugin: translate.PluginName}}}},
			{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: weighted}}}},
		}}},
	}
	var clusters, clas []types.Resource
	addCluster := func(name string, cla *endpointv3.ClusterLoadAssignment) {
		clusters = append(clusters, &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
			LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		})
		cla.ClusterName = name
		clas = append(clas, cla)
	}
	weightedCLA := &endpointv3.ClusterLoadAssignment{}
	for _, v := range e.Variants {
		addCluster(config.ClusterName(e.Name, v.Name), &endpointv3.ClusterLoadAssignment{Endpoints: []*endpointv3.LocalityLbEndpoints{locality(v, 1)}})
		addCluster(translate.AliasCluster(e.Name, v.Name), &endpointv3.ClusterLoadAssignment{Endpoints: []*endpointv3.LocalityLbEndpoints{locality(v, 1)}})
		if v.Weight > 0 {
			weightedCLA.Endpoints = append(weightedCLA.Endpoints, locality(v, uint32(v.Weight)))
		}
	}
	addCluster(translate.WeightedCluster(e.Name), weightedCLA)
	snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: {lis},
		resource.RouteType:    {rc},
		resource.ClusterType:  clusters,
		resource.EndpointType: clas,
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// locality holds one variant's backends; the sub-zone tells variants apart
// inside the weighted cluster.
func locality(v config.Variant, weight uint32) *endpointv3.LocalityLbEndpoints {
	lle := &endpointv3.LocalityLbEndpoints{
		Locality:            &corev3.Locality{Region: "modelsplit", Zone: "default", SubZone: v.Name},
		LoadBalancingWeight: wrapperspb.UInt32(weight),
	}
	for _, b := range v.Backends {
		lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: b.Host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(b.Port)}}}}}}})
	}
	return lle
}

func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func mustAnyT(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// xdsControlPlane serves snapshots over ADS on loopback. The snapshot
// cache is not in ADS mode: grpc-go subscribes to RLS targets one by one,
// and an ADS-mode cache answers only requests naming every resource
// (docs/envoy-notes.md §3.3).
type xdsControlPlane struct {
	addr  string
	cache cache.SnapshotCache
}

func startControlPlane(t testing.TB) *xdsControlPlane {
	t.Helper()
	c := cache.NewSnapshotCache(false, cache.IDHash{}, nil)
	srv := xdsserver.NewServer(context.Background(), c, nil)
	g := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return &xdsControlPlane{addr: lis.Addr().String(), cache: c}
}

func (cp *xdsControlPlane) set(t testing.TB, snap *cache.Snapshot) {
	t.Helper()
	if err := cp.cache.SetSnapshot(context.Background(), testNodeID, snap); err != nil {
		t.Fatal(err)
	}
}

// xdsDial dials xds:///<endpoint> with a private xDS client bootstrapped
// at cp.
func xdsDial(t testing.TB, cp *xdsControlPlane, endpoint string) testgrpc.TestServiceClient {
	t.Helper()
	bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":"passthrough:///%s","channel_creds":[{"type":"insecure"}],"server_features":["trusted_xds_server"]}],"node":{"id":%q}}`, cp.addr, testNodeID)
	res, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(res))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	cc.Connect()
	return testgrpc.NewTestServiceClient(cc)
}

// variantBackend is a real gRPC server standing in for one variant; it
// answers with its name and counts the RLS header data it received (empty
// when the call went to the default target rather than a lookup answer).
type variantBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
	addr string
	mu   sync.Mutex
	rls  map[string]int
}

func startVariantBackend(t testing.TB, name string) *variantBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &variantBackend{name: name, addr: lis.Addr().String(), rls: map[string]int{}}
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, b)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return b
}

func (b *variantBackend) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	data := strings.Join(md.Get("x-google-rls-data"), ",")
	b.mu.Lock()
	b.rls[data]++
	b.mu.Unlock()
	// Hostname says which backend answered; Username echoes whether the
	// call was routed by a lookup answer (the variant) or not ("").
	return &testgrpc.SimpleResponse{Hostname: b.name, Username: data}, nil
}
