package server

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdsgrpc "google.golang.org/grpc/xds"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds/internal/xdstest"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// ackTracker records when each node ACKs a version of one type: the
// route configuration, or for Envoy nodes (whose weights are in the
// runtime layer, not in the routes) the Runtime resource.
type ackTracker struct {
	typ   string
	mu    sync.Mutex
	acked map[string]map[string]time.Time // version → node → time
	cond  *sync.Cond
}

func newAckTracker() *ackTracker {
	a := &ackTracker{typ: resource.RouteType, acked: map[string]map[string]time.Time{}}
	a.cond = sync.NewCond(&a.mu)
	return a
}

func (a *ackTracker) onACK(node *corev3.Node, typeURL, version string) {
	if typeURL != a.typ {
		return
	}
	a.mu.Lock()
	if a.acked[version] == nil {
		a.acked[version] = map[string]time.Time{}
	}
	if _, ok := a.acked[version][node.GetId()]; !ok {
		a.acked[version][node.GetId()] = time.Now()
	}
	a.mu.Unlock()
	a.cond.Broadcast()
}

// wait blocks until n nodes ACKed version, returning their ACK times.
func (a *ackTracker) wait(version string, n int, timeout time.Duration) ([]time.Time, error) {
	deadline := time.Now().Add(timeout)
	go func() { time.Sleep(timeout); a.cond.Broadcast() }()
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.acked[version]) < n {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d clients ACKed %s within %v", len(a.acked[version]), n, version, timeout)
		}
		a.cond.Wait()
	}
	out := make([]time.Time, 0, n)
	for _, t := range a.acked[version] {
		out = append(out, t)
	}
	return out, nil
}

// BenchmarkWeightChangeToACK100Clients measures how long a weight change
// takes to be ACKed by 100 connected grpc-go xDS clients (each its own
// node and ADS stream), from Apply to each client's ACK of the new route.
// Each benchmark iteration makes ackUpdates updates, so the percentiles
// rest on enough of them: "p99-ms" is over every client's ACK (100 per
// update), "all-acked-p99-ms" over the per-update time until the last
// client ACKed — with 200 updates its p99 is the 2nd-slowest update, not
// the slowest one or two of 15 as a short run would report.
//
// "endpoints=1" is testdata's grpc.yaml; "endpoints=1000" 1,000 endpoints ×
// 4 variants, every client using the first, whose weights change.
func BenchmarkWeightChangeToACK100Clients(b *testing.B) {
	one := loadCase(b, xdstest.Case("grpc.yaml"))
	// xDS propagation only: without RLS, clients make no lookups to an
	// address where nothing listens.
	one.Endpoints[0].RouteLookup = false
	b.Run("endpoints=1", func(b *testing.B) { benchGRPCClients(b, one) })
	b.Run("endpoints=1000", func(b *testing.B) { benchGRPCClients(b, benchConfig(b, 1000, false)) })
}

func benchGRPCClients(b *testing.B, cfg *config.Config) {
	const ackUpdates = 200
	const clients = 100
	tracker := newAckTracker()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewServer(ctx, ServerOptions{OnACK: tracker.onACK})
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
	for i := 0; i < clients; i++ {
		bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":"passthrough:///%s","channel_creds":[{"type":"insecure"}],"server_features":["trusted_xds_server"]}],"node":{"id":"bench-%d","user_agent_name":"gRPC Go"}}`, lis.Addr(), i)
		res, err := xdsgrpc.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
		if err != nil {
			b.Fatal(err)
		}
		cc, err := grpc.NewClient("xds:///"+cfg.Endpoints[0].Name, grpc.WithResolvers(res), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		cc.Connect()
	}
	if _, err := tracker.wait(s.Version(translate.KindGRPC), clients, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	var lat, all []time.Duration
	w := 1
	for b.Loop() {
		for range ackUpdates {
			next := cfg.Clone()
			w = w%99 + 1
			next.Endpoints[0].Variants[0].Weight, next.Endpoints[0].Variants[1].Weight = w, 100-w
			start := time.Now()
			if err := s.Apply(next); err != nil {
				b.Fatal(err)
			}
			acks, err := tracker.wait(s.Version(translate.KindGRPC), clients, 10*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			var last time.Duration
			for _, t := range acks {
				lat = append(lat, t.Sub(start))
				last = max(last, t.Sub(start))
			}
			all = append(all, last)
		}
	}
	q := func(ds []time.Duration, p float64) float64 {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(all)), "updates")
	b.ReportMetric(q(lat, 0.5), "p50-ms")
	b.ReportMetric(q(lat, 0.99), "p99-ms")
	b.ReportMetric(q(all, 0.5), "all-acked-p50-ms")
	b.ReportMetric(q(all, 0.99), "all-acked-p99-ms")
	b.ReportMetric(q(all, 1), "max-ms")
}
