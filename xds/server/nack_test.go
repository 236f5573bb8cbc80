package server

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds/internal/xdstest"
	"github.com/modelsplit/modelsplit/xds/translate"
)

func rejection(msg string) *rpcstatus.Status { return &rpcstatus.Status{Code: 3, Message: msg} }

// nextWeights returns ab.yaml with the first variant's weight changed, so
// Apply produces a new version.
func nextWeights(t *testing.T, w int) *config.Config {
	t.Helper()
	cfg := loadCase(t, xdstest.Case("ab.yaml"))
	cfg.Endpoints[0].Variants[0].Weight = w
	return cfg
}

// A NACK must not make the server re-send the rejected snapshot: not right
// after the NACK (go-control-plane would, ~10k/s), not when the client asks
// again without accepting. The client gets the next version as soon as
// there is one, and ACKs() shows the rejection until it accepts.
func TestNackStopsResendLoop(t *testing.T) {
	for _, tc := range []struct {
		name string
		node *corev3.Node
		// names is the subscription: Envoy asks for every cluster, grpc-go
		// for the ones it uses (answered by the gRPC kind's cache).
		names []string
		kind  string
	}{
		{"envoy wildcard", envoyNode("nacker"), nil, "envoy"},
		{"grpc partial", &corev3.Node{Id: "grpc-nacker", UserAgentName: "gRPC Go"}, []string{"face-recognition/a"}, "grpc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, loadCase(t, xdstest.Case("ab.yaml")), nil)
			stream := openADS(t, s.conn)
			stream.send(t, &discovery.DiscoveryRequest{Node: tc.node, TypeUrl: resource.ClusterType, ResourceNames: tc.names})
			first := stream.next(t)
			if first.GetVersionInfo() != s.Version(translate.KindOf(tc.node)) {
				t.Fatalf("got version %q, server serves %q", first.GetVersionInfo(), s.Version(translate.KindOf(tc.node)))
			}
			// Reject it: version_info is the last accepted version (none).
			stream.send(t, &discovery.DiscoveryRequest{Node: tc.node, TypeUrl: resource.ClusterType, ResourceNames: tc.names,
				ResponseNonce: first.GetNonce(), ErrorDetail: rejection("test rejection")})
			resent := stream.collect(time.Second)
			t.Logf("responses in the second after a NACK: %d", len(resent))
			if len(resent) > 0 {
				t.Fatalf("server re-sent the NACKed snapshot %d times in 1s", len(resent))
			}
			if got := testutil.ToFloat64(s.metrics.XDSNacks.WithLabelValues(tc.kind, "Cluster")); got != 1 {
				t.Errorf("xds_nacks_total{%s,Cluster} = %v, want 1", tc.kind, got)
			}
			if got := s.ACKs()[tc.node.GetId()].Nacked[resource.ClusterType]; got != "test rejection" {
				t.Errorf("ACKs()[%s].Nacked[CDS] = %q, want the reason", tc.node.GetId(), got)
			}

			// Asking again without accepting (e.g. a subscription change)
			// does not bring the rejected snapshot back either.
			stream.send(t, &discovery.DiscoveryRequest{Node: tc.node, TypeUrl: resource.ClusterType, ResourceNames: tc.names,
				ResponseNonce: first.GetNonce()})
			if again := stream.collect(500 * time.Millisecond); len(again) > 0 {
				t.Fatalf("a request after the NACK got the rejected snapshot again (%d responses)", len(again))
			}

			// The next snapshot reaches the parked watch, and its ACK clears
			// the rejection.
			if err := s.Apply(nextWeights(t, 10)); err != nil {
				t.Fatal(err)
			}
			next := stream.next(t)
			if next.GetVersionInfo() != s.Version(translate.KindOf(tc.node)) || next.GetVersionInfo() == first.GetVersionInfo() {
				t.Fatalf("after Apply got version %q, want %q", next.GetVersionInfo(), s.Version(translate.KindOf(tc.node)))
			}
			stream.send(t, &discovery.DiscoveryRequest{Node: tc.node, TypeUrl: resource.ClusterType, ResourceNames: tc.names,
				ResponseNonce: next.GetNonce(), VersionInfo: next.GetVersionInfo()})
			waitFor(t, "the ACK to be recorded", func() bool {
				a := s.ACKs()[tc.node.GetId()]
				return a.Acked[resource.ClusterType] == next.GetVersionInfo() && len(a.Nacked) == 0
			})
		})
	}
}

// A fleet rejecting one snapshot logs one line per (kind, type, version),
// naming a node and the reason; every NACK is counted.
func TestNackLoggedOncePerVersion(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	s := startServer(t, loadCase(t, xdstest.Case("ab.yaml")), zap.New(core))
	nack := func(id string) {
		stream := openADS(t, s.conn)
		stream.send(t, &discovery.DiscoveryRequest{Node: envoyNode(id), TypeUrl: resource.ListenerType})
		first := stream.next(t)
		stream.send(t, &discovery.DiscoveryRequest{Node: envoyNode(id), TypeUrl: resource.ListenerType,
			ResponseNonce: first.GetNonce(), ErrorDetail: rejection("bad filter")})
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		nack(id)
	}
	waitFor(t, "three NACKs counted", func() bool {
		return testutil.ToFloat64(s.metrics.XDSNacks.WithLabelValues("envoy", "Listener")) == 3
	})
	lines := logs.FilterMessageSnippet("NACK").All()
	if len(lines) != 1 {
		t.Fatalf("got %d NACK log lines for one rejected version, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if f["version"] != s.Version(translate.KindEnvoy) || f["reason"] != "bad filter" || f["node"] == "" || f["type"] != resource.ListenerType {
		t.Errorf("NACK log fields = %v", f)
	}

	// A new version that is rejected again is logged again.
	if err := s.Apply(nextWeights(t, 20)); err != nil {
		t.Fatal(err)
	}
	nack("n4")
	waitFor(t, "the NACK of the new version logged", func() bool {
		return logs.FilterMessageSnippet("NACK").Len() == 2
	})
}

// Delta streams get resources, NACKs are detected and counted with the
// rejected version, nothing is re-sent, and the next version arrives.
func TestDeltaStreamAndNack(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	s := startServer(t, loadCase(t, xdstest.Case("ab.yaml")), zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	delta, err := discovery.NewAggregatedDiscoveryServiceClient(s.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan *discovery.DeltaDiscoveryResponse, 1000)
	go func() {
		for {
			r, err := delta.Recv()
			if err != nil {
				close(in)
				return
			}
			in <- r
		}
	}()
	recv := func(d time.Duration) (*discovery.DeltaDiscoveryResponse, bool) {
		select {
		case r, ok := <-in:
			return r, ok
		case <-time.After(d):
			return nil, false
		}
	}
	node := envoyNode("d1")
	if err := delta.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	first, ok := recv(5 * time.Second)
	if !ok {
		t.Fatal("no delta response")
	}
	var names []string
	for _, r := range first.GetResources() {
		names = append(names, r.GetName())
	}
	if len(names) != 3 { // two variants + ext_proc
		t.Errorf("delta CDS got clusters %v, want 3", names)
	}
	if first.GetSystemVersionInfo() != s.Version(translate.KindEnvoy) {
		t.Errorf("delta system version %q, want %q", first.GetSystemVersionInfo(), s.Version(translate.KindEnvoy))
	}

	if err := delta.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType,
		ResponseNonce: first.GetNonce(), ErrorDetail: rejection("delta rejection")}); err != nil {
		t.Fatal(err)
	}
	if r, ok := recv(time.Second); ok {
		t.Fatalf("server re-sent after a delta NACK: %d resources", len(r.GetResources()))
	}
	if got := testutil.ToFloat64(s.metrics.XDSNacks.WithLabelValues("envoy", "Cluster")); got != 1 {
		t.Errorf("xds_nacks_total{envoy,Cluster} = %v, want 1", got)
	}
	if l := logs.FilterMessageSnippet("NACK").All(); len(l) != 1 || l[0].ContextMap()["version"] != first.GetSystemVersionInfo() {
		t.Errorf("delta NACK log lines: %v", l)
	}

	// Delta sends only what changed: a new variant's cluster.
	cfg := loadCase(t, xdstest.Case("ab.yaml"))
	e := &cfg.Endpoints[0]
	e.Variants = append(e.Variants, config.Variant{Name: "c", Weight: 0, Backends: e.Variants[0].Backends})
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	next, ok := recv(5 * time.Second)
	if !ok || next.GetSystemVersionInfo() != s.Version(translate.KindEnvoy) {
		t.Fatalf("after Apply got %v, want version %q", next, s.Version(translate.KindEnvoy))
	}
	if r := next.GetResources(); len(r) != 1 || r[0].GetName() != "face-recognition/c" {
		t.Errorf("delta update carried %d resources, want only face-recognition/c", len(r))
	}
	if err := delta.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: next.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delta ACK recorded", func() bool {
		a := s.ACKs()["d1"]
		return a.Acked[resource.ClusterType] == next.GetSystemVersionInfo() && len(a.Nacked) == 0
	})
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
