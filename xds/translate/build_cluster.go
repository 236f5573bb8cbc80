package translate

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/config"
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// envoyCluster is a variant's or shadow's cluster, plus its load assignment
// when the endpoints come over EDS. Envoy's EDS takes IP addresses only, so
// a member with any DNS name becomes a STRICT_DNS cluster with the
// endpoints inline.
func envoyCluster(m member) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment) {
	c := &clusterv3.Cluster{
		Name:             m.cluster,
		AltStatName:      m.statName,
		ConnectTimeout:   durationpb.New(2 * time.Second),
		LbPolicy:         clusterv3.Cluster_LEAST_REQUEST,
		OutlierDetection: memberOutlierDetection(m),
		CircuitBreakers:  circuitBreakers(4096),
		HealthChecks:     variantHealthChecks(m),
	}
	if m.protocol == config.ProtocolHTTP2 || m.protocol == config.ProtocolGRPC {
		c.TypedExtensionProtocolOptions = http2Options()
	}
	cla := envoyLoadAssignment(m)
	if allIPs(m.allBackends()) {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
		return c, cla
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	c.LoadAssignment = cla
	return c, nil
}

// extProcCluster points Envoy at the decision server. Envoy opens one
// ext_proc stream per request, so the default circuit breaker of 1,024
// requests would cap throughput (docs/envoy-notes.md §2.1). With `tls:` it
// carries the upstream TLS context from tls.envoy. HTTP/2 keepalive and
// gRPC health checks notice a modelsplit that stops answering
// (build_health.go).
func extProcCluster(cfg *config.Config) (*clusterv3.Cluster, error) {
	target := cfg.ExtProcTarget()
	socket, err := extProcTLS(cfg)
	if err != nil {
		return nil, err
	}
	c := &clusterv3.Cluster{
		TransportSocket:               socket,
		Name:                          ExtProcClusterName,
		ConnectTimeout:                durationpb.New(time.Second),
		TypedExtensionProtocolOptions: controlHTTP2Options(),
		CircuitBreakers:               circuitBreakers(100_000),
		HealthChecks:                  extProcHealthChecks(),
		CommonLbConfig:                noPanic(),
	}
	var addr *corev3.Address
	if path, ok := strings.CutPrefix(target, "unix://"); ok {
		addr = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	} else {
		host, portStr, err := net.SplitHostPort(target)
		if err != nil {
			return nil, fmt.Errorf("ext_proc address %q: %w", target, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("ext_proc address %q: bad port", target)
		}
		addr = socketAddress(host, port)
		if net.ParseIP(host) != nil {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		} else {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		}
	}
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
		ClusterName: ExtProcClusterName,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
		}}}},
	}
	return c, nil
}

// loadAssignment lists a member's backends. grpc-go NACKs endpoints without
// a locality, so gRPC nodes get one (harmless for Envoy too).
func loadAssignment(cluster string, backends []config.Backend, withLocality bool) *endpointv3.ClusterLoadAssignment {
	lle := &endpointv3.LocalityLbEndpoints{}
	if withLocality {
		lle.Locality = &corev3.Locality{Region: "modelsplit", Zone: "default"}
		lle.LoadBalancingWeight = wrapperspb.UInt32(1)
	}
	for _, b := range backends {
		lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(b.Host, b.Port)}},
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{lle}}
}

func allIPs(bs []config.Backend) bool {
	for _, b := range bs {
		if net.ParseIP(b.Host) == nil {
			return false
		}
	}
	return true
}

// outlierDetection ejects a backend after 5 consecutive 5xx for 30s, never
// more than half of a variant's backends.
func outlierDetection() *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(5),
		Interval:           durationpb.New(10 * time.Second),
		BaseEjectionTime:   durationpb.New(30 * time.Second),
		MaxEjectionPercent: wrapperspb.UInt32(50),
	}
}

func circuitBreakers(max uint32) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections:     wrapperspb.UInt32(max),
		MaxPendingRequests: wrapperspb.UInt32(max),
		MaxRequests:        wrapperspb.UInt32(max),
		MaxRetries:         wrapperspb.UInt32(max / 10),
	}}}
}

func http2Options() map[string]*anypb.Any {
	return map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})}
}
