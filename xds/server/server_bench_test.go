package server

import (
	"fmt"
	"net"
	"sort"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// BenchmarkApply1000x4 is one Apply of 1,000 endpoints × 4 variants: translate.Build
// and translate.Check for both node kinds, then the snapshots, with no client
// connected (the DESIGN target for build + validate is 250 ms).
func BenchmarkApply1000x4(b *testing.B) {
	for _, rls := range []bool{false, true} {
		b.Run(fmt.Sprintf("rls=%v", rls), func(b *testing.B) {
			cfg := benchConfig(b, 1000, rls)
			s := NewServer(b.Context(), ServerOptions{})
			w := 0
			b.ReportAllocs()
			for b.Loop() {
				w = w%24 + 1
				cfg.Endpoints[0].Variants[0].Weight = w
				if err := s.Apply(cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkApplyUnchanged1000x4 is the repeat Apply of 1,000 endpoints ×
// 4 variants that changes nothing served: an equal config (a SIGHUP without
// an edit) and a config whose edit does not reach the resources.
func BenchmarkApplyUnchanged1000x4(b *testing.B) {
	for _, tc := range []struct {
		name string
		edit func(cfg *config.Config, i int)
	}{
		{"same-config", func(*config.Config, int) {}},
		{"same-resources", func(cfg *config.Config, i int) { cfg.Admin.TokenFile = fmt.Sprint("/token-", i%2) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := benchConfig(b, 1000, false)
			s := NewServer(b.Context(), ServerOptions{})
			if err := s.Apply(cfg); err != nil {
				b.Fatal(err)
			}
			version := s.Version(translate.KindEnvoy)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				i++
				tc.edit(cfg, i)
				if err := s.Apply(cfg); err != nil {
					b.Fatal(err)
				}
			}
			if s.Version(translate.KindEnvoy) != version {
				b.Fatalf("version moved from %s to %s", version, s.Version(translate.KindEnvoy))
			}
		})
	}
}

// BenchmarkWeightChangeToACK100Streams measures the server's side of
// propagation: 100 raw ADS streams (50 Envoy nodes, 50 gRPC nodes, each
// subscribed to routes) that ACK on receipt, from Apply to the server
// seeing each ACK of the new route version. Unlike
// BenchmarkWeightChangeToACK100Clients, no client CPU competes (there 100
// grpc-go clients in one process spend most of the time in their own
// balancer updates).
func BenchmarkWeightChangeToACK100Streams(b *testing.B) {
	for _, endpoints := range []int{1, 1000} {
		b.Run(fmt.Sprintf("endpoints=%d", endpoints), func(b *testing.B) {
			benchACKs(b, benchConfig(b, endpoints, false), 100)
		})
	}
}

func benchACKs(b *testing.B, cfg *config.Config, clients int) {
	tracker := newAckTracker()
	s := NewServer(b.Context(), ServerOptions{OnACK: tracker.onACK})
	if err := s.Apply(cfg); err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go g.Serve(lis)
	defer g.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for i := range clients {
		node := &corev3.Node{Id: fmt.Sprintf("bench-%d", i), UserAgentName: "envoy"}
		if i%2 == 1 {
			node.UserAgentName = "gRPC Go"
		}
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType}); err != nil {
			b.Fatal(err)
		}
		go ackEverything(stream)
	}
	if _, err := tracker.wait(s.Version(translate.KindGRPC), clients, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	w := 0
	for b.Loop() {
		w = w%24 + 1
		cfg.Endpoints[0].Variants[0].Weight = w
		start := time.Now()
		if err := s.Apply(cfg); err != nil {
			b.Fatal(err)
		}
		acks, err := tracker.wait(s.Version(translate.KindGRPC), clients, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range acks {
			lat = append(lat, t.Sub(start))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// ackEverything ACKs each response as it arrives, as a client that accepts
// everything would.
func ackEverything(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient) {
	for {
		resp, err := stream.Recv()
		if err != nil {
			return
		}
		if stream.Send(&discovery.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}) != nil {
			return
		}
	}
}
