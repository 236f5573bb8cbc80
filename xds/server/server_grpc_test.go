package server

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	// Route configs of protocol: grpc endpoints carry the RLS cluster
	// specifier; a grpc-go binary without the RLS balancer NACKs them
	// ("RLS LB policy not registered"), is_optional notwithstanding.
	_ "google.golang.org/grpc/balancer/rls"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	xdsgrpc "google.golang.org/grpc/xds"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// echoBackend is a real gRPC server standing in for one variant: it answers
// grpc.testing.TestService/UnaryCall with its name.
type echoBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name, addr string
}

func startEcho(t *testing.T, name string) *echoBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &echoBackend{name: name, addr: lis.Addr().String()}
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, b)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return b
}

func (b *echoBackend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Hostname: b.name}, nil
}

// echoConfig splits endpoint "echo" between backends a and b. It is not
// protocol: grpc, so no RLS route: calls split by the weighted route alone.
func echoConfig(t *testing.T, a, b *echoBackend, wa, wb int) *config.Config {
	t.Helper()
	cfg, err := config.Parse("echo.yaml", fmt.Appendf(nil, `endpoints:
  - name: echo
    match: {path_prefix: /grpc.testing.TestService/}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: %d, backends: ["%s"]}
      - {name: b, weight: %d, backends: ["%s"]}
`, wa, a.addr, wb, b.addr))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// grpcClient is a real grpc-go xDS client (its own xDS client and node id)
// dialing xds:///echo through s.
func grpcClient(t *testing.T, s *testServer, nodeID string) testgrpc.TestServiceClient {
	t.Helper()
	bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":"passthrough:///%s","channel_creds":[{"type":"insecure"}],"server_features":["trusted_xds_server"]}],"node":{"id":%q}}`, s.addr, nodeID)
	res, err := xdsgrpc.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///echo", grpc.WithResolvers(res), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testgrpc.NewTestServiceClient(cc)
}

// calls makes n calls and counts the answering backends ("error" for
// failed calls).
func calls(c testgrpc.TestServiceClient, n int) map[string]int {
	got := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			got["error"]++
			continue
		}
		got[resp.GetHostname()]++
	}
	return got
}

// untilServedBy calls until a call is answered by backend (the client has
// switched), failing after a deadline.
func untilServedBy(t *testing.T, c testgrpc.TestServiceClient, backend string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for calls(c, 1)[backend] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no call reached %s within 10s", backend)
		}
	}
}

func ackedRoute(s *testServer, node string) string {
	return s.ACKs()[node].Acked[resource.RouteType]
}

// A real grpc-go client follows Apply: 100/0 sends every call to a, 0/100
// to b; a refused update leaves b serving every call.
func TestGRPCClientFollowsApply(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	s := startServer(t, echoConfig(t, a, b, 100, 0), nil)
	client := grpcClient(t, s, "follower")

	if got := calls(client, 100); got["a"] != 100 {
		t.Fatalf("weights 100/0: calls by backend %v, want all 100 on a", got)
	}
	if v := ackedRoute(s, "follower"); v != s.Version(translate.KindGRPC) {
		t.Fatalf("client ACKed route version %q, server serves %q", v, s.Version(translate.KindGRPC))
	}
	if s.Clients(translate.KindGRPC) != 1 || s.Clients(translate.KindEnvoy) != 0 {
		t.Errorf("Clients = grpc %d, envoy %d; want 1, 0", s.Clients(translate.KindGRPC), s.Clients(translate.KindEnvoy))
	}

	if err := s.Apply(echoConfig(t, a, b, 0, 100)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client to ACK the new route", func() bool { return ackedRoute(s, "follower") == s.Version(translate.KindGRPC) })
	untilServedBy(t, client, "b")
	if got := calls(client, 100); got["b"] != 100 {
		t.Fatalf("weights 0/100: calls by backend %v, want all 100 on b", got)
	}

	good := s.Version(translate.KindGRPC)
	bad := echoConfig(t, a, b, 100, 0)
	bad.Gateway.ExtProcAddress = "not-an-address"
	if err := s.Apply(bad); err == nil {
		t.Fatal("Apply of an invalid config succeeded")
	}
	if got := calls(client, 100); got["b"] != 100 {
		t.Fatalf("after a refused update: calls by backend %v, want all 100 still on b", got)
	}
	if v := ackedRoute(s, "follower"); v != good || s.Version(translate.KindGRPC) != good {
		t.Errorf("after a refused update: client holds %q, server serves %q; want %q", v, s.Version(translate.KindGRPC), good)
	}
}

// A snapshot that grpc-go rejects is NACKed a bounded number of times (the
// loop is stopped), the client keeps serving from its last good config,
// and the next good snapshot reaches it.
func TestGRPCClientNackKeepsLastGoodConfig(t *testing.T) {
	a, b := startEcho(t, "a"), startEcho(t, "b")
	s := startServer(t, echoConfig(t, a, b, 100, 0), nil)
	client := grpcClient(t, s, "rejecter")
	if got := calls(client, 20); got["a"] != 20 {
		t.Fatalf("calls by backend %v, want all 20 on a", got)
	}

	// The same resources, but cluster echo/a is STATIC: grpc-go accepts
	// only EDS, LOGICAL_DNS and aggregate clusters and NACKs the CDS update.
	res, err := translate.Build(echoConfig(t, a, b, 100, 0), translate.KindGRPC)
	if err != nil {
		t.Fatal(err)
	}
	broken := false
	for _, r := range res[resource.ClusterType] {
		if c := r.(*clusterv3.Cluster); c.GetName() == config.ClusterName("echo", "a") {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
			c.EdsClusterConfig = nil
			broken = true
		}
	}
	if !broken {
		t.Fatal("no cluster echo/a to break")
	}
	if err := s.setResources(map[translate.NodeKind]translate.Resources{translate.KindGRPC: res}); err != nil {
		t.Fatal(err)
	}
	nacks := func() float64 { return testutil.ToFloat64(s.metrics.XDSNacks.WithLabelValues("grpc", "Cluster")) }
	waitFor(t, "grpc-go to NACK the broken cluster", func() bool { return nacks() >= 1 })
	time.Sleep(time.Second) // the window a resend loop would fill with ~10k NACKs
	t.Logf("CDS NACKs from grpc-go in the second after the broken snapshot: %v", nacks())
	if n := nacks(); n > 3 {
		t.Fatalf("grpc-go NACKed %v times: the server kept re-sending the rejected snapshot", n)
	}
	if reason := s.ACKs()["rejecter"].Nacked[resource.ClusterType]; reason == "" {
		t.Error("ACKs() shows no CDS rejection for the node")
	}
	if got := calls(client, 20); got["a"] != 20 {
		t.Fatalf("after the NACK: calls by backend %v, want all 20 still on a", got)
	}

	if err := s.Apply(echoConfig(t, a, b, 0, 100)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client to ACK the next good snapshot", func() bool {
		ack := s.ACKs()["rejecter"]
		return ack.Acked[resource.ClusterType] == s.Version(translate.KindGRPC) && ack.Nacked[resource.ClusterType] == ""
	})
	untilServedBy(t, client, "b")
	if got := calls(client, 20); got["b"] != 20 {
		t.Fatalf("after the next good snapshot: calls by backend %v, want all 20 on b", got)
	}
}
