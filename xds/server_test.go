package xds

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelsplit/modelsplit/metrics"
)

func startServer(t *testing.T, cfgPath string) (*Server, *metrics.Metrics, *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := metrics.New()
	s := NewServer(ctx, ServerOptions{Metrics: m})
	if err := s.Apply(loadCase(t, cfgPath)); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, m, conn
}

func envoyNode(id string) *corev3.Node {
	return &corev3.Node{Id: id, UserAgentName: "envoy"}
}

// receive runs the stream's only receiver and hands responses over a
// channel (gRPC streams allow one concurrent Recv).
func receive(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient) <-chan *discovery.DiscoveryResponse {
	out := make(chan *discovery.DiscoveryResponse, 100000)
	go func() {
		defer close(out)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			out <- r
		}
	}()
	return out
}

// collect returns the responses that arrive within d.
func collect(in <-chan *discovery.DiscoveryResponse, d time.Duration) []*discovery.DiscoveryResponse {
	var got []*discovery.DiscoveryResponse
	timer := time.After(d)
	for {
		select {
		case r, ok := <-in:
			if !ok {
				return got
			}
			got = append(got, r)
		case <-timer:
			return got
		}
	}
}

// A NACK must not make the server re-send the rejected snapshot in a loop;
// the client gets the next version as soon as there is one.
func TestNackStopsResendLoop(t *testing.T) {
	s, m, conn := startServer(t, "testdata/in/ab.yaml")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := envoyNode("nacker")
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	in := receive(stream)
	firsts := collect(in, 500*time.Millisecond)
	if len(firsts) != 1 {
		t.Fatalf("got %d initial responses, want 1", len(firsts))
	}
	first := firsts[0]
	if first.GetVersionInfo() != s.Version(KindEnvoy) {
		t.Fatalf("got version %q, server serves %q", first.GetVersionInfo(), s.Version(KindEnvoy))
	}
	// Reject it: version_info is the last accepted version (none).
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType,
		ResponseNonce: first.GetNonce(), ErrorDetail: &rpcstatus.Status{Code: 3, Message: "test rejection"}}); err != nil {
		t.Fatal(err)
	}
	resent := collect(in, time.Second)
	t.Logf("responses in the second after a NACK: %d", len(resent))
	if len(resent) != 0 {
		t.Fatalf("server re-sent the NACKed snapshot %d times in 1s", len(resent))
	}
	if got := testutil.ToFloat64(m.XDSNacks.WithLabelValues("envoy", "Cluster")); got != 1 {
		t.Errorf("xds_nacks_total = %v, want 1", got)
	}
	// The next snapshot is delivered to the parked watch.
	cfg := loadCase(t, "testdata/in/ab.yaml")
	cfg.Endpoints[0].Variants[0].Weight = 10
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	next := collect(in, 2*time.Second)
	if len(next) != 1 || next[0].GetVersionInfo() != s.Version(KindEnvoy) {
		t.Fatalf("after Apply got %d responses (want 1 with version %q)", len(next), s.Version(KindEnvoy))
	}
}

// Versions never repeat across restarts, so a reconnecting client that
// holds the old version still receives the new process's config.
func TestVersionsUniqueAcrossRestarts(t *testing.T) {
	a, _, _ := startServer(t, "testdata/in/ab.yaml")
	time.Sleep(time.Millisecond)
	b, _, _ := startServer(t, "testdata/in/ab.yaml")
	if a.Version(KindEnvoy) == b.Version(KindEnvoy) {
		t.Fatalf("two server lifetimes produced the same version %q", a.Version(KindEnvoy))
	}
	v1 := b.Version(KindEnvoy)
	if err := b.Apply(loadCase(t, "testdata/in/ab.yaml")); err != nil {
		t.Fatal(err)
	}
	if b.Version(KindEnvoy) == v1 {
		t.Fatal("Apply did not advance the version")
	}
}

// An invalid config is refused and the last good snapshot stays served.
func TestApplyRefusesInvalidResources(t *testing.T) {
	s, m, _ := startServer(t, "testdata/in/ab.yaml")
	before := s.Version(KindEnvoy)
	bad := loadCase(t, "testdata/in/ab.yaml")
	bad.Gateway.ExtProcAddress = "not-an-address" // fails in Build
	err := s.Apply(bad)
	if err == nil || !strings.Contains(err.Error(), "ext_proc address") {
		t.Fatalf("Apply = %v, want an ext_proc address error", err)
	}
	if s.Version(KindEnvoy) != before {
		t.Errorf("version moved to %q after a refused config", s.Version(KindEnvoy))
	}
	if got := testutil.ToFloat64(m.XDSSnapshotRefused); got != 1 {
		t.Errorf("xds_snapshot_refused_total = %v", got)
	}
}

// Envoy and gRPC nodes get their own resource sets; a delta stream works.
func TestNodeKindsGetTheirResources(t *testing.T) {
	_, m, conn := startServer(t, "testdata/in/grpc.yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ads := discovery.NewAggregatedDiscoveryServiceClient(conn)
	for _, tc := range []struct {
		node *corev3.Node
		want string
	}{
		{envoyNode("e1"), GatewayListenerName},
		{&corev3.Node{Id: "g1", UserAgentName: "gRPC Go"}, "triton"},
	} {
		stream, err := ads.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.Send(&discovery.DiscoveryRequest{Node: tc.node, TypeUrl: resource.ListenerType})
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResources()) != 1 || !strings.Contains(string(resp.GetResources()[0].GetValue()), tc.want) {
			t.Errorf("node %s got %d listeners, want %q", tc.node.GetUserAgentName(), len(resp.GetResources()), tc.want)
		}
	}
	delta, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = delta.Send(&discovery.DeltaDiscoveryRequest{Node: envoyNode("d1"), TypeUrl: resource.ClusterType})
	dr, err := delta.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(dr.GetResources()) != 3 { // two variants + ext_proc
		t.Errorf("delta CDS got %d clusters, want 3", len(dr.GetResources()))
	}
	deadline := time.Now().Add(2 * time.Second)
	for testutil.ToFloat64(m.XDSClients.WithLabelValues("grpc")) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.XDSClients.WithLabelValues("grpc")); got != 1 {
		t.Errorf("xds_connected_clients{grpc} = %v, want 1", got)
	}
}

func TestKindOf(t *testing.T) {
	md := func(k string) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{NodeKindMetadataKey: structpb.NewStringValue(k)}}
	}
	for _, tc := range []struct {
		node *corev3.Node
		want NodeKind
	}{
		{&corev3.Node{UserAgentName: "envoy"}, KindEnvoy},
		{&corev3.Node{UserAgentName: "gRPC Go"}, KindGRPC},
		{&corev3.Node{UserAgentName: "gRPC C-core"}, KindGRPC},
		{&corev3.Node{UserAgentName: "gRPC Java"}, KindGRPC},
		{&corev3.Node{UserAgentName: "something"}, KindEnvoy},
		{nil, KindEnvoy},
		{&corev3.Node{UserAgentName: "envoy", Metadata: md("grpc")}, KindGRPC},
		{&corev3.Node{UserAgentName: "gRPC Go", Metadata: md("ENVOY")}, KindEnvoy},
		{&corev3.Node{UserAgentName: "gRPC Go", Metadata: md("bogus")}, KindGRPC},
	} {
		if got := KindOf(tc.node); got != tc.want {
			t.Errorf("KindOf(%v) = %s, want %s", tc.node, got, tc.want)
		}
	}
}
