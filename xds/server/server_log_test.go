package server

import (
	"context"
	"strings"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/xds/internal/xdstest"
)

// go-control-plane's servers log per stream and watch; those lines must
// reach the log at Debug only, so a fleet of delta clients does not flood
// an Info log. (Its snapshot cache logged at Info per parked delta watch,
// i.e. per delta ACK; the encoded cache that replaced it logs nothing.)
func TestCacheInfoLinesDemotedToDebug(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	s := startServer(t, loadCase(t, xdstest.Case("ab.yaml")), zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	delta, err := discovery.NewAggregatedDiscoveryServiceClient(s.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discovery.DeltaDiscoveryRequest{Node: envoyNode("quiet"), TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := delta.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// The ACK finds the client up to date: the cache parks a delta watch.
	if err := delta.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delta ACK", func() bool {
		return s.ACKs()["quiet"].Acked[resource.ClusterType] != ""
	})
	for _, e := range logs.All() {
		if strings.HasPrefix(e.LoggerName, "cache") || strings.HasPrefix(e.LoggerName, "ads") {
			if e.Level > zapcore.DebugLevel {
				t.Errorf("go-control-plane logged at %s: %q", e.Level, e.Message)
			}
		}
	}
}
