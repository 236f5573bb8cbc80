package translate

import (
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	extprocsvcv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/config"
)

// Health, retries and failover of the variants, and of Envoy's
// connections to modelsplit itself.
//
// A variant's cluster <endpoint>/<variant> holds its own backends at
// priority 0 and, when the endpoint fails over, each failover target's
// backends at the next priorities. Envoy sends a priority's share of the
// traffic on to the next one only as that priority loses healthy hosts;
// the overprovisioning factor makes a priority count as fully available
// while any one of its hosts is healthy, so a variant keeps all of its
// users until none of its backends is left. Every host carries its variant
// in its metadata, and the response headers are read from the host that
// answered: x-modelsplit-variant never names a variant that did not
// answer, and x-modelsplit-failover-from names the variant the user was
// routed to when a failover target answered instead. The decision is not
// touched: users keep their assignment and come back once a backend of
// their variant is healthy again.

// hostMetadataNamespace holds, on every variant host, the variant it
// belongs to ("variant") and, on a failover target's host, the variant
// whose cluster it serves as a failover ("failover_from").
const hostMetadataNamespace = "modelsplit"

const (
	hostVariantKey      = "variant"
	hostFailoverFromKey = "failover_from"
)

// Envoy's extension names for the retry plugins.
const (
	previousHostsPredicate   = "envoy.retry_host_predicates.previous_hosts"
	previousPrioritiesPolicy = "envoy.retry_priorities.previous_priorities"
)

// Keepalive and health checks of Envoy's connections to modelsplit: a
// peer that stops answering without closing its connection (a paused or
// partitioned process) is noticed after at most interval (+15% jitter) +
// timeout, about 9s, instead of when TCP gives up.
const (
	controlKeepaliveInterval = 5 * time.Second
	controlKeepaliveTimeout  = 3 * time.Second
	extProcHealthInterval    = 2 * time.Second
	extProcHealthTimeout     = time.Second
	extProcUnhealthy         = 2
	extProcHealthy           = 1
)

// variantHosts is one priority of a variant's cluster.
type variantHosts struct {
	variant  string
	backends []config.Backend
}

// priorities are the member's hosts by priority: its own, then its
// failover targets' in order.
func (m member) priorities() []variantHosts {
	out := []variantHosts{{variant: m.variant, backends: m.backends}}
	return append(out, m.failover...)
}

// allBackends is every host of the member's cluster.
func (m member) allBackends() []config.Backend {
	var out []config.Backend
	for _, p := range m.priorities() {
		out = append(out, p.backends...)
	}
	return out
}

// envoyLoadAssignment lists a member's hosts for Envoy. A shadow has only
// its backends; a variant's hosts carry their variant in their metadata,
// by priority when it has failover targets, and the host name its health
// checks send.
func envoyLoadAssignment(m member) *endpointv3.ClusterLoadAssignment {
	if m.variant == "" {
		return loadAssignment(m.cluster, m.backends, false)
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: m.cluster}
	for prio, p := range m.priorities() {
		md := map[string]*structpb.Value{hostVariantKey: structpb.NewStringValue(p.variant)}
		if prio > 0 {
			md[hostFailoverFromKey] = structpb.NewStringValue(m.variant)
		}
		meta := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{hostMetadataNamespace: {Fields: md}}}
		lle := &endpointv3.LocalityLbEndpoints{Priority: uint32(prio)}
		for _, b := range p.backends {
			ep := &endpointv3.Endpoint{Address: socketAddress(b.Host, b.Port)}
			if m.health != nil {
				// Envoy's default Host for a probe is the cluster name,
				// which holds a '/': many servers refuse it (Go's answer
				// 400). Probe as a client of this backend would.
				ep.HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{Hostname: b.String()}
			}
			lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: ep},
				Metadata:       meta,
			})
		}
		cla.Endpoints = append(cla.Endpoints, lle)
	}
	if len(m.failover) > 0 {
		// A priority's availability is min(100, healthy% × factor/100):
		// with 100 × hosts, one healthy host makes any priority fully
		// available, so nothing spills over while a variant has one.
		cla.Policy = &endpointv3.ClusterLoadAssignment_Policy{
			OverprovisioningFactor: wrapperspb.UInt32(uint32(100 * len(m.allBackends()))),
		}
	}
	return cla
}

// variantHealthChecks are the active health checks of a variant's
// cluster (none unless the endpoint has health_check, none for shadows).
// The probes run at the same interval when the cluster gets no traffic,
// so a failover target's health is current when it is needed.
func variantHealthChecks(m member) []*corev3.HealthCheck {
	h := m.health
	if h == nil || m.variant == "" {
		return nil
	}
	hc := &corev3.HealthCheck{
		Timeout:            durationpb.New(h.Timeout.D()),
		Interval:           durationpb.New(h.Interval.D()),
		NoTrafficInterval:  durationpb.New(h.Interval.D()),
		UnhealthyThreshold: wrapperspb.UInt32(uint32(h.UnhealthyThreshold)),
		HealthyThreshold:   wrapperspb.UInt32(uint32(h.HealthyThreshold)),
	}
	switch m.protocol {
	case config.ProtocolGRPC:
		hc.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{ServiceName: h.GRPCService}}
	default:
		http := &corev3.HealthCheck_HttpHealthCheck{
			Path:             h.Path,
			ExpectedStatuses: []*typev3.Int64Range{{Start: 200, End: 300}},
		}
		if m.protocol == config.ProtocolHTTP2 {
			http.CodecClientType = typev3.CodecClientType_HTTP2
		}
		hc.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: http}
	}
	return []*corev3.HealthCheck{hc}
}

// memberOutlierDetection ejects a backend after consecutive 5xx (5 by
// default) or gateway failures (3: 502/503/504 and connection failures).
// How many may be ejected at once: see config.Endpoint.EjectionPercent.
func memberOutlierDetection(m member) *clusterv3.OutlierDetection {
	o := m.outlier
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:                    wrapperspb.UInt32(uint32(o.Consecutive5xx)),
		ConsecutiveGatewayFailure:          wrapperspb.UInt32(uint32(o.ConsecutiveGatewayFailure)),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100), // Envoy's default is 0: detected, never enforced
		Interval:                           durationpb.New(o.Interval.D()),
		BaseEjectionTime:                   durationpb.New(o.BaseEjectionTime.D()),
		MaxEjectionPercent:                 wrapperspb.UInt32(uint32(m.maxEjectionPercent)),
	}
}

// withRetries gives every route of an endpoint its retry policy.
func withRetries(e *config.Endpoint, routes []*routev3.Route) []*routev3.Route {
	p := retryPolicy(e)
	for _, r := range routes {
		if a := r.GetRoute(); a != nil && p != nil {
			a.RetryPolicy = p
		}
	}
	return routes
}

// retryPolicy retries the endpoint's retry conditions (by default only
// failures in which no backend received the request: connect-failure,
// refused-stream, reset-before-request) on another backend, and — when the
// endpoint fails over — at the next priority, i.e. on a failover target:
// a variant whose backend just refused a connection may have no other
// (its users fail over as soon as Envoy ejects or fails it anyway).
// No per-try timeout: each try may use the whole route timeout. Envoy
// never retries once it has sent the client a response byte.
func retryPolicy(e *config.Endpoint) *routev3.RetryPolicy {
	n := e.RetryAttempts()
	if n <= 0 {
		return nil
	}
	p := &routev3.RetryPolicy{
		RetryOn:    strings.Join(e.Retries.On, ","),
		NumRetries: wrapperspb.UInt32(uint32(n)),
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       previousHostsPredicate,
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		HostSelectionRetryMaxAttempts: 3,
	}
	if endpointFailsOver(e) {
		p.RetryPriority = &routev3.RetryPolicy_RetryPriority{
			Name: previousPrioritiesPolicy,
			ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: mustAny(
				&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 1})},
		}
	}
	return p
}

func endpointFailsOver(e *config.Endpoint) bool {
	for i := range e.Variants {
		if len(e.FailoverTargets(&e.Variants[i])) > 0 {
			return true
		}
	}
	return false
}

// servedVariantHeaders name, on every answer, the variant whose backend
// answered, read from that host's metadata, and after a failover the
// variant the request was routed to. An empty value adds no header.
//
// The colon form of UPSTREAM_METADATA: Envoy 1.40 logs a warning for every
// header written in the older JSON-list form, each time it loads the route
// configuration — 16,000 lines per update at 1,000 endpoints.
func servedVariantHeaders() []*corev3.HeaderValueOption {
	h := func(key, mdKey string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: key, Value: `%UPSTREAM_METADATA(` + hostMetadataNamespace + `:` + mdKey + `)%`},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}
	}
	return []*corev3.HeaderValueOption{h(config.VariantHeader, hostVariantKey), h(config.FailoverHeader, hostFailoverFromKey)}
}

// servedVariantHeaderNames are removed from backends' answers before
// servedVariantHeaders are added (Envoy removes, then adds): a backend
// cannot claim a failover that did not happen.
var servedVariantHeaderNames = []string{config.VariantHeader, config.FailoverHeader}

// extProcHealthChecks ask modelsplit's gRPC health service about the
// ext_proc service every 2s; two failures (a timeout is one) mark it
// unhealthy. With the panic threshold at 0 (extProcCluster), Envoy then
// fails open at once instead of waiting out extproc_timeout on every
// request, and with several modelsplit replicas behind one name it
// skips the one that stopped answering.
func extProcHealthChecks() []*corev3.HealthCheck {
	return []*corev3.HealthCheck{{
		Timeout:            durationpb.New(extProcHealthTimeout),
		Interval:           durationpb.New(extProcHealthInterval),
		NoTrafficInterval:  durationpb.New(extProcHealthInterval),
		UnhealthyThreshold: wrapperspb.UInt32(extProcUnhealthy),
		HealthyThreshold:   wrapperspb.UInt32(extProcHealthy),
		HealthChecker: &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{
			ServiceName: extprocsvcv3.ExternalProcessor_ServiceDesc.ServiceName,
		}},
	}}
}

// noPanic turns Envoy's panic routing off: with no healthy host the
// cluster has none to offer, rather than all of them.
func noPanic() *clusterv3.Cluster_CommonLbConfig {
	return &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
}

// controlHTTP2Options is http2Options with HTTP/2 keepalive PINGs, for the
// connections to modelsplit (xDS and ext_proc): no PING answer within
// controlKeepaliveTimeout closes the connection.
func controlHTTP2Options() map[string]*anypb.Any {
	return map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
				ConnectionKeepalive: &corev3.KeepaliveSettings{
					Interval: durationpb.New(controlKeepaliveInterval),
					Timeout:  durationpb.New(controlKeepaliveTimeout),
				},
			}},
		}},
	})}
}
