package translate

import (
	"fmt"
	"net"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// BootstrapOptions describes the Envoy that will connect to modelsplit.
type BootstrapOptions struct {
	NodeID      string // unique per Envoy
	NodeCluster string
	XDSAddress  string // host:port of modelsplit's xDS listener
	Delta       bool   // DELTA_GRPC instead of state-of-the-world
	// AdminAddress is ip:port for Envoy's admin API, e.g. 0.0.0.0:9901 in
	// a container. Empty means 127.0.0.1:AdminPort.
	AdminAddress string
	// AdminPort puts the admin API on loopback when AdminAddress is empty;
	// 0 (with no AdminAddress) turns it off. The admin API can stop Envoy
	// and dump its config, so loopback is the default.
	AdminPort int
	// TLS, when set, makes Envoy reach modelsplit's xDS over TLS.
	TLS *BootstrapTLS
	// MaxConnections caps the downstream connections Envoy holds open at
	// once, across listeners (the admin API is exempt); MaxHeapBytes is
	// the heap budget past which Envoy shrinks its heap (95%) and refuses
	// new requests (98%, answered 503). 0 turns either off.
	MaxConnections int64
	MaxHeapBytes   int64
}

// BootstrapTLS is the xDS connection's TLS. The files are read by Envoy,
// so they are paths on Envoy's host, written into the bootstrap as given.
type BootstrapTLS struct {
	// CAFile verifies modelsplit's certificate (required: Envoy has no
	// default trust store).
	CAFile string
	// CertFile and KeyFile are Envoy's client certificate and key, for a
	// modelsplit with tls.client_ca_file (mTLS).
	CertFile, KeyFile string
	// ServerName is the SNI sent and the DNS or IP subject alternative
	// name modelsplit's certificate must hold; default: the xDS host.
	ServerName string
}

// xdsClusterName is the bootstrap's static cluster for the ADS connection.
const xdsClusterName = "xds_cluster"

// DefaultBootstrapOptions is what `modelsplit bootstrap` prints without
// flags and what envoy/bootstrap.yaml holds: an Envoy on the same host as
// `make run`.
func DefaultBootstrapOptions() BootstrapOptions {
	return BootstrapOptions{NodeID: "envoy-1", NodeCluster: "modelsplit-gateway", XDSAddress: "127.0.0.1:18000", AdminPort: 9901,
		MaxConnections: DefaultMaxDownstreamConnections, MaxHeapBytes: DefaultMaxHeapBytes}
}

// Bootstrap returns an Envoy bootstrap that takes listeners, routes,
// clusters, endpoints and the runtime layer of live weights from
// modelsplit over ADS.
func Bootstrap(o BootstrapOptions) (*bootstrapv3.Bootstrap, error) {
	host, portStr, err := net.SplitHostPort(o.XDSAddress)
	if err != nil {
		return nil, fmt.Errorf("xDS address %q: %w", o.XDSAddress, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("xDS address %q: bad port", o.XDSAddress)
	}
	if o.NodeID == "" {
		return nil, fmt.Errorf("node id is required")
	}
	apiType := corev3.ApiConfigSource_GRPC
	if o.Delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	discovery := clusterv3.Cluster_STRICT_DNS
	if net.ParseIP(host) != nil {
		discovery = clusterv3.Cluster_STATIC
	}
	var socket *corev3.TransportSocket
	if t := o.TLS; t != nil {
		if t.CAFile == "" {
			return nil, fmt.Errorf("xDS TLS needs a CA file to verify modelsplit's certificate")
		}
		if (t.CertFile == "") != (t.KeyFile == "") {
			return nil, fmt.Errorf("xDS TLS: the client certificate and key files must be given together")
		}
		u := upstreamTLS{ca: fileSource(t.CAFile), cert: fileSource(t.CertFile), key: fileSource(t.KeyFile), serverName: t.ServerName}
		if u.serverName == "" {
			u.serverName = host
		}
		socket = u.transportSocket()
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{
			Id: o.NodeID, Cluster: o.NodeCluster,
			Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{NodeKindMetadataKey: structpb.NewStringValue(string(KindEnvoy))}},
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             apiType,
				TransportApiVersion: corev3.ApiVersion_V3,
				// go-control-plane re-attaches the node to later requests.
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsClusterName}}}},
			},
			CdsConfig: adsSource(),
			LdsConfig: adsSource(),
		},
		LayeredRuntime: layeredRuntime(),
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{{
			Name:                          xdsClusterName,
			TransportSocket:               socket,
			ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: discovery},
			ConnectTimeout:                durationpb.New(time.Second),
			TypedExtensionProtocolOptions: controlHTTP2Options(), // gRPC needs HTTP/2; keepalive notices a vanished modelsplit
			LoadAssignment: &endpointv3.ClusterLoadAssignment{
				ClusterName: xdsClusterName,
				Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)}},
				}}}},
			},
		}}},
	}
	admin, err := adminAddress(o)
	if err != nil {
		return nil, err
	}
	if admin != nil {
		// The admin API stays reachable when the gateway is at its
		// connection limit.
		b.Admin = &bootstrapv3.Admin{Address: admin, IgnoreGlobalConnLimit: true}
	}
	if b.OverloadManager, err = overloadManager(o); err != nil {
		return nil, err
	}
	return b, nil
}

// layeredRuntime is Envoy's runtime: the live weights over RTDS (the
// layer WeightsRuntimeName, over the ADS stream), then an admin layer, so
// /runtime_modify still overrides any key as it did with Envoy's default
// runtime. The RTDS layer waits for its first answer without a timeout
// (the default is 15 s): Envoy loads no clusters or listeners before its
// RTDS layers, so its routes are never used without the weights they read
// (docs/envoy-notes.md §6.4). A modelsplit that cannot be reached serves
// no listener either, so the wait costs nothing.
func layeredRuntime() *bootstrapv3.LayeredRuntime {
	rtds := adsSource()
	rtds.InitialFetchTimeout = durationpb.New(0)
	return &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{
		{Name: WeightsRuntimeName, LayerSpecifier: &bootstrapv3.RuntimeLayer_RtdsLayer_{RtdsLayer: &bootstrapv3.RuntimeLayer_RtdsLayer{
			Name: WeightsRuntimeName, RtdsConfig: rtds}}},
		{Name: "admin", LayerSpecifier: &bootstrapv3.RuntimeLayer_AdminLayer_{AdminLayer: &bootstrapv3.RuntimeLayer_AdminLayer{}}},
	}}
}

// adminAddress is where Envoy's admin API listens, or nil for none. Envoy
// binds listeners to IP addresses only, so a host name is an error here
// rather than a failed Envoy start.
func adminAddress(o BootstrapOptions) (*corev3.Address, error) {
	if o.AdminAddress == "" {
		if o.AdminPort == 0 {
			return nil, nil
		}
		if o.AdminPort < 0 || o.AdminPort > 65535 {
			return nil, fmt.Errorf("admin port %d: want 1-65535 (0 turns the admin API off)", o.AdminPort)
		}
		return socketAddress("127.0.0.1", o.AdminPort), nil
	}
	host, portStr, err := net.SplitHostPort(o.AdminAddress)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", o.AdminAddress, err)
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("admin address %q: Envoy needs an IP address, not a host name", o.AdminAddress)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("admin address %q: bad port", o.AdminAddress)
	}
	return socketAddress(host, port), nil
}

// RenderBootstrapYAML prints a bootstrap as YAML for `envoy -c`.
func RenderBootstrapYAML(b *bootstrapv3.Bootstrap) ([]byte, error) {
	v, err := protoToPlain(b)
	if err != nil {
		return nil, err
	}
	return marshalYAML(v)
}
