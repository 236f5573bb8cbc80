package server

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
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/xds/internal/xdstest"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// testServer is a Server listening on 127.0.0.1:0 with a client
// connection to it.
type testServer struct {
	*Server
	metrics *metrics.Metrics
	addr    string
	conn    *grpc.ClientConn
	cancel  context.CancelFunc // ends the Server's streams
}

func startServer(t testing.TB, cfg *config.Config, log *zap.Logger) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := metrics.New()
	s := NewServer(ctx, ServerOptions{Metrics: m, Logger: log})
	if cfg != nil {
		if err := s.Apply(cfg); err != nil {
			t.Fatal(err)
		}
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
	return &testServer{Server: s, metrics: m, addr: lis.Addr().String(), conn: conn, cancel: cancel}
}

func envoyNode(id string) *corev3.Node {
	return &corev3.Node{Id: id, UserAgentName: "envoy"}
}

// adsStream is a raw state-of-the-world ADS stream with one receiving
// goroutine (gRPC allows one concurrent Recv) feeding a channel.
type adsStream struct {
	discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	in <-chan *discovery.DiscoveryResponse
}

func openADS(t *testing.T, conn *grpc.ClientConn) *adsStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan *discovery.DiscoveryResponse, 100000)
	go func() {
		defer close(in)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			in <- r
		}
	}()
	return &adsStream{stream, in}
}

func (a *adsStream) send(t *testing.T, req *discovery.DiscoveryRequest) {
	t.Helper()
	if err := a.Send(req); err != nil {
		t.Fatal(err)
	}
}

// collect returns the responses that arrive within d.
func (a *adsStream) collect(d time.Duration) []*discovery.DiscoveryResponse {
	var got []*discovery.DiscoveryResponse
	timer := time.After(d)
	for {
		select {
		case r, ok := <-a.in:
			if !ok {
				return got
			}
			got = append(got, r)
		case <-timer:
			return got
		}
	}
}

// next waits for one response.
func (a *adsStream) next(t *testing.T) *discovery.DiscoveryResponse {
	t.Helper()
	select {
	case r, ok := <-a.in:
		if !ok {
			t.Fatal("stream ended")
		}
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no response within 5s")
	}
	return nil
}

// Versions never repeat across restarts, so a reconnecting client that
// holds the old version still receives the new process's config.
func TestVersionsUniqueAcrossRestarts(t *testing.T) {
	first := startServer(t, loadCase(t, xdstest.Case("ab.yaml")), nil)
	restarted := startServer(t, loadCase(t, xdstest.Case("ab.yaml")), nil)
	v1, v2 := first.Version(translate.KindEnvoy), restarted.Version(translate.KindEnvoy)
	if v1 == "" || v1 == v2 {
		t.Fatalf("two server lifetimes produced versions %q and %q", v1, v2)
	}
	if first.Version(translate.KindGRPC) != v1 {
		t.Errorf("one update, two versions: envoy %q, grpc %q", v1, first.Version(translate.KindGRPC))
	}

	// A client that holds the first process's version, reconnecting to the
	// restarted one, is sent the restarted one's snapshot.
	stream := openADS(t, restarted.conn)
	stream.send(t, &discovery.DiscoveryRequest{Node: envoyNode("reconnect"), TypeUrl: resource.ClusterType, VersionInfo: v1})
	if got := stream.next(t).GetVersionInfo(); got != v2 {
		t.Fatalf("reconnecting client got version %q, want %q", got, v2)
	}

	if err := restarted.Apply(nextWeights(t, 10)); err != nil {
		t.Fatal(err)
	}
	if v3 := restarted.Version(translate.KindEnvoy); v3 == v2 || !strings.HasPrefix(v3, strings.SplitN(v2, "-", 2)[0]+"-") {
		t.Fatalf("Apply moved the version from %q to %q; want a new counter under the same boot id", v2, v3)
	}
}

// An invalid config is refused: counted, named in the error, and the last
// good snapshot stays served to clients.
func TestApplyRefusesInvalidResources(t *testing.T) {
	s := startServer(t, loadCase(t, xdstest.Case("ab.yaml")), nil)
	before := s.Version(translate.KindEnvoy)
	bad := loadCase(t, xdstest.Case("ab.yaml"))
	bad.Gateway.ExtProcAddress = "not-an-address" // fails in translate.Build
	err := s.Apply(bad)
	if err == nil || !strings.Contains(err.Error(), "ext_proc address") {
		t.Fatalf("Apply = %v, want an ext_proc address error", err)
	}
	if err := s.Apply(nil); err == nil {
		t.Fatal("Apply(nil) = nil, want an error")
	}
	if s.Version(translate.KindEnvoy) != before || s.Version(translate.KindGRPC) != before {
		t.Errorf("versions moved to %q/%q after refused configs", s.Version(translate.KindEnvoy), s.Version(translate.KindGRPC))
	}
	if got := testutil.ToFloat64(s.metrics.XDSSnapshotRefused); got != 2 {
		t.Errorf("xds_snapshot_refused_total = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.metrics.XDSSnapshotVersion.WithLabelValues("envoy", before)); got != 1 {
		t.Errorf("xds_snapshot_info{envoy,%s} = %v, want 1", before, got)
	}
	stream := openADS(t, s.conn)
	stream.send(t, &discovery.DiscoveryRequest{Node: envoyNode("e"), TypeUrl: resource.ClusterType})
	if got := stream.next(t).GetVersionInfo(); got != before {
		t.Errorf("client got version %q, want the last good %q", got, before)
	}
}

// Before the first Apply the server is not ready and answers nothing; the
// first snapshot reaches a client that was already waiting.
func TestReadyAfterFirstApply(t *testing.T) {
	s := startServer(t, nil, nil)
	if s.Ready() {
		t.Fatal("Ready before any Apply")
	}
	stream := openADS(t, s.conn)
	stream.send(t, &discovery.DiscoveryRequest{Node: envoyNode("early"), TypeUrl: resource.ClusterType})
	if got := stream.collect(200 * time.Millisecond); len(got) != 0 {
		t.Fatalf("got %d responses before any snapshot", len(got))
	}
	if err := s.Apply(loadCase(t, xdstest.Case("ab.yaml"))); err != nil {
		t.Fatal(err)
	}
	if !s.Ready() {
		t.Fatal("not Ready after Apply")
	}
	if got := stream.next(t).GetVersionInfo(); got != s.Version(translate.KindEnvoy) {
		t.Fatalf("waiting client got %q, want %q", got, s.Version(translate.KindEnvoy))
	}
}

var (
	loadCase    = xdstest.LoadCase
	benchConfig = xdstest.BenchConfig
)
