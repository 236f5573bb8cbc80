package server

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelsplit/modelsplit/xds/internal/xdstest"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// Clients and ACKs follow streams: sotw and delta streams (whose ids
// go-control-plane counts separately) are told apart, a node id shared by
// two streams stays listed until both close.
func TestClientsAndACKsFollowStreams(t *testing.T) {
	s := startServer(t, loadCase(t, xdstest.Case("ab.yaml")), nil)
	grpcNode := &corev3.Node{Id: "g", UserAgentName: "gRPC Go"}

	envoy1 := openADS(t, s.conn)
	envoy1.send(t, &discovery.DiscoveryRequest{Node: envoyNode("shared"), TypeUrl: resource.ClusterType})
	first := envoy1.next(t)
	envoy1.send(t, &discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, // node only on the first request
		VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()})

	deltaCtx, closeDelta := context.WithCancel(context.Background())
	defer closeDelta()
	delta, err := discovery.NewAggregatedDiscoveryServiceClient(s.conn).DeltaAggregatedResources(deltaCtx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discovery.DeltaDiscoveryRequest{Node: grpcNode, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	if _, err := delta.Recv(); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "one envoy and one grpc client", func() bool { return s.Clients(translate.KindEnvoy) == 1 && s.Clients(translate.KindGRPC) == 1 })
	waitFor(t, "the ACK recorded", func() bool { return s.ACKs()["shared"].Acked[resource.ClusterType] == first.GetVersionInfo() })
	if k := s.ACKs()["g"].Kind; k != translate.KindGRPC {
		t.Errorf("ACKs()[g].Kind = %q, want grpc", k)
	}
	if got := testutil.ToFloat64(s.metrics.XDSClients.WithLabelValues("grpc")); got != 1 {
		t.Errorf("xds_connected_clients{grpc} = %v, want 1", got)
	}

	// A second stream from the same node id.
	ctx2, close2 := context.WithCancel(context.Background())
	envoy2, err := discovery.NewAggregatedDiscoveryServiceClient(s.conn).StreamAggregatedResources(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	if err := envoy2.Send(&discovery.DiscoveryRequest{Node: envoyNode("shared"), TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	if _, err := envoy2.Recv(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two envoy clients", func() bool { return s.Clients(translate.KindEnvoy) == 2 })
	close2()
	waitFor(t, "the second stream to close", func() bool { return s.Clients(translate.KindEnvoy) == 1 })
	if _, ok := s.ACKs()["shared"]; !ok {
		t.Error("node dropped from ACKs() while one of its streams is open")
	}

	closeDelta()
	waitFor(t, "the delta stream to close", func() bool { return s.Clients(translate.KindGRPC) == 0 })
	if s.Clients(translate.KindEnvoy) != 1 {
		t.Errorf("closing the delta stream changed the envoy count to %d", s.Clients(translate.KindEnvoy))
	}
	if _, ok := s.ACKs()["g"]; ok {
		t.Error("closed node still in ACKs()")
	}
	if got := testutil.ToFloat64(s.metrics.XDSClients.WithLabelValues("grpc")); got != 0 {
		t.Errorf("xds_connected_clients{grpc} = %v after close, want 0", got)
	}
}

// Cancelling the Server's context ends every stream, and nothing the
// server started is left running once the gRPC server stops.
func TestStreamsEndOnContextCancel(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	s := NewServer(ctx, ServerOptions{})
	if err := s.Apply(loadCase(t, xdstest.Case("ab.yaml"))); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	served := make(chan struct{})
	go func() { g.Serve(lis); close(served) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}

	ads := discovery.NewAggregatedDiscoveryServiceClient(conn)
	var ended []chan error
	for i := range 4 {
		stream, err := ads.StreamAggregatedResources(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		typ := []string{resource.ClusterType, resource.ListenerType, resource.RouteType, resource.EndpointType}[i]
		if err := stream.Send(&discovery.DiscoveryRequest{Node: envoyNode("n"), TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			for {
				if _, err := stream.Recv(); err != nil {
					done <- err
					return
				}
			}
		}()
		ended = append(ended, done)
	}
	waitFor(t, "four clients", func() bool { return s.Clients(translate.KindEnvoy) == 4 })

	cancel()
	for i, done := range ended {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d still open 5s after the server's context was cancelled", i)
		}
	}
	waitFor(t, "clients counted down", func() bool { return s.Clients(translate.KindEnvoy) == 0 })

	conn.Close()
	g.Stop()
	<-served
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after shutdown:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
