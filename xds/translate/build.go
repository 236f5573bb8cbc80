package translate

import (
	"fmt"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/modelsplit/modelsplit/config"
)

// Fixed resource names. Deterministic names keep snapshots stable across
// restarts and replicas, and let operators grep Envoy's admin output.
const (
	GatewayListenerName = "modelsplit_gateway"
	GatewayRouteName    = "modelsplit_routes"
	ExtProcClusterName  = "modelsplit_extproc"
	// DecideFilterName is the ext_proc filter that decides the variant; the
	// per-route ExtProcPerRoute configs are keyed by it.
	DecideFilterName = "envoy.filters.http.ext_proc"
	// ObserveFilterName is the ext_proc filter in observability mode that
	// feeds per-variant telemetry and compare-mode shadows.
	ObserveFilterName = "modelsplit.observe"
	routerFilterName  = "envoy.filters.http.router"
	// grpcStatsFilterName counts gRPC statuses per cluster on the gateway.
	grpcStatsFilterName = "envoy.filters.http.grpc_stats"
	// GatewayStatPrefix is the gateway HCM's stat_prefix; the two ext_proc
	// filters' stats are http.<GatewayStatPrefix>.ext_proc.<filter
	// stat_prefix>.<counter>, e.g. http.modelsplit.ext_proc.decide.streams_started
	// (docs/envoy-notes.md §1.6).
	GatewayStatPrefix = "modelsplit"
	DecideStatPrefix  = "decide"
	ObserveStatPrefix = "observe"
)

// Build translates the config into the complete resource set for one node
// kind. Pure: no I/O, same input gives the same output.
func Build(cfg *config.Config, kind NodeKind) (Resources, error) {
	switch kind {
	case KindEnvoy:
		return buildEnvoy(cfg)
	case KindGRPC:
		return buildGRPC(cfg)
	default:
		return nil, fmt.Errorf("unknown node kind %q", kind)
	}
}

func buildEnvoy(cfg *config.Config) (Resources, error) {
	res, err := envoyGlobal(cfg)
	if err != nil {
		return nil, err
	}
	res.add(resource.RouteType, gatewayRouteConfig(cfg))
	res.add(resource.RuntimeType, WeightsRuntime(cfg))
	for i := range cfg.Endpoints {
		for t, list := range envoyEndpoint(&cfg.Endpoints[i]) {
			res[t] = append(res[t], list...)
		}
	}
	res.sort()
	return res, nil
}

// envoyGlobal is what Envoy nodes get once, whatever the endpoints: the
// gateway listener and the ext_proc cluster. (The listener still looks at
// every endpoint: whether any is observed or speaks gRPC.)
func envoyGlobal(cfg *config.Config) (Resources, error) {
	res := Resources{}
	lis, err := gatewayListener(cfg)
	if err != nil {
		return nil, err
	}
	res.add(resource.ListenerType, lis)
	extCluster, err := extProcCluster(cfg)
	if err != nil {
		return nil, err
	}
	res.add(resource.ClusterType, extCluster)
	return res, nil
}

// envoyEndpoint is one endpoint's clusters and load assignments for Envoy
// nodes; its routes live in the shared gateway route configuration
// (gatewayEndpointRoutes). It reads nothing but the endpoint.
func envoyEndpoint(e *config.Endpoint) Resources {
	res := Resources{}
	for k, m := range members(e) {
		c, cla := envoyCluster(m)
		if k >= len(e.Variants) {
			boundShadowStreams(c, e)
		}
		res.add(resource.ClusterType, c)
		if cla != nil {
			res.add(resource.EndpointType, cla)
		}
	}
	return res
}

// member is a variant or a shadow: something that gets a cluster.
type member struct {
	cluster  string
	backends []config.Backend
	protocol string
	// statName is the cluster's alt_stat_name (config.ClusterStatName).
	statName string

	// Health and failover (build_health.go). variant, failover and health
	// are set for variants only.
	variant            string
	failover           []variantHosts // failover targets, in order
	health             *config.HealthCheck
	outlier            config.OutlierDetection
	maxEjectionPercent int
}

func members(e *config.Endpoint) []member {
	ms := make([]member, 0, len(e.Variants)+len(e.Shadows))
	for i := range e.Variants {
		v := &e.Variants[i]
		m := member{cluster: config.ClusterName(e.Name, v.Name), backends: v.Backends, protocol: e.VariantProtocol(v),
			statName: config.ClusterStatName(e.Name, v.Name), variant: v.Name, health: e.HealthCheck, outlier: e.OutlierDetection, maxEjectionPercent: e.EjectionPercent(v)}
		for _, t := range e.FailoverTargets(v) {
			m.failover = append(m.failover, variantHosts{variant: t.Name, backends: t.Backends})
		}
		ms = append(ms, m)
	}
	for i := range e.Shadows {
		s := &e.Shadows[i]
		ms = append(ms, member{cluster: config.ClusterName(e.Name, s.Name), backends: s.Backends, protocol: e.ShadowProtocol(s),
			statName: config.ClusterStatName(e.Name, s.Name), outlier: e.OutlierDetection, maxEjectionPercent: e.EjectionPercent(nil)})
	}
	return ms
}

func (r Resources) add(t resource.Type, m types.Resource) { r[t] = append(r[t], m) }

// sort orders every type's resources by name so output is deterministic.
func (r Resources) sort() {
	for _, list := range r {
		sort.SliceStable(list, func(i, j int) bool { return resourceName(list[i]) < resourceName(list[j]) })
	}
}

func resourceName(m types.Resource) string {
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	if n, ok := m.(interface{ GetClusterName() string }); ok {
		return n.GetClusterName()
	}
	return ""
}

// mustAny packs a message built here; marshalling a well-formed message
// cannot fail, so a failure is a programming error worth a panic in tests.
//
// The payload is encoded deterministically: maps inside it (a Struct such
// as the access log's JSON format) would otherwise encode in random order,
// and an unchanged config would fingerprint differently and be pushed again.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("xds: packing %T: %v", m, err))
	}
	return a
}
