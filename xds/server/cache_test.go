package server

import (
	"context"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// openDelta opens a delta ADS stream subscribed to every resource of typ
// and returns its first response.
func openDelta(t *testing.T, s *testServer, node *corev3.Node, typ string) (discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, *discovery.DeltaDiscoveryResponse) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d, err := discovery.NewAggregatedDiscoveryServiceClient(s.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
		t.Fatal(err)
	}
	first, err := d.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: first.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	return d, first
}

// A weight change on one endpoint reaches a delta client as that
// endpoint's resources only; a state-of-the-world client gets the whole
// type. Both are sent the very Any values the cache holds (encoded once).
func TestDeltaSendsOnlyTheChangedEndpoint(t *testing.T) {
	cfg := benchConfig(t, 20, false)
	s := startServer(t, cfg, nil)
	grpcNode := &corev3.Node{Id: "d1", UserAgentName: "gRPC Go"}
	d, first := openDelta(t, s, grpcNode, resource.RouteType)
	if len(first.GetResources()) != 20 {
		t.Fatalf("first delta response: %d route configurations, want 20", len(first.GetResources()))
	}
	sotw := openADS(t, s.conn)
	sotw.send(t, &discovery.DiscoveryRequest{Node: &corev3.Node{Id: "s1", UserAgentName: "gRPC Go"}, TypeUrl: resource.RouteType})
	r := sotw.next(t)
	sotw.send(t, &discovery.DiscoveryRequest{TypeUrl: resource.RouteType, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})

	next := cfg.Clone()
	next.Endpoints[5].Variants[0].Weight, next.Endpoints[5].Variants[1].Weight = 40, 10
	if err := s.Apply(next); err != nil {
		t.Fatal(err)
	}
	got, err := d.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetResources()) != 1 || got.GetResources()[0].GetName() != "model-5" || len(got.GetRemovedResources()) != 0 {
		var names []string
		for _, r := range got.GetResources() {
			names = append(names, r.GetName())
		}
		t.Fatalf("delta update: resources %v, removed %v; want model-5 only", names, got.GetRemovedResources())
	}
	if full := sotw.next(t); len(full.GetResources()) != 20 {
		t.Fatalf("state-of-the-world update: %d route configurations, want all 20", len(full.GetResources()))
	}
	// Encoded once: the cache's Any is the one every response points at.
	held := s.caches["grpc"].res[resource.RouteType]["model-5"]
	resp := s.caches["grpc"].deltaResponse(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType}, fetchSubscription{&discovery.DiscoveryRequest{}}, false)
	for _, r := range resp.(*deltaResponse).resp.GetResources() {
		if r.GetName() == "model-5" && r.GetResource() != held.any {
			t.Error("a response carries its own copy of the encoded resource")
		}
	}

	// An endpoint removed is a removal, with nothing else sent.
	gone := next.Clone()
	gone.Endpoints = append(gone.Endpoints[:3], gone.Endpoints[4:]...)
	if err := d.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.RouteType, ResponseNonce: got.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(gone); err != nil {
		t.Fatal(err)
	}
	got, err = d.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetResources()) != 0 || len(got.GetRemovedResources()) != 1 || got.GetRemovedResources()[0] != "model-3" {
		t.Fatalf("removal: resources %d, removed %v; want model-3 removed only", len(got.GetResources()), got.GetRemovedResources())
	}
}

// Changes applied within the debounce are served as one version, no later
// than the debounce after the first; Apply still refuses a bad config at
// once.
func TestDebounceGathersABurst(t *testing.T) {
	cfg := benchConfig(t, 10, false)
	var mu sync.Mutex
	var served []time.Time
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Long enough for the burst to fit even under -race.
	const debounce = 300 * time.Millisecond
	s := NewServer(ctx, ServerOptions{Debounce: debounce, OnServe: func(string) {
		mu.Lock()
		served = append(served, time.Now())
		mu.Unlock()
	}})
	if err := s.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	first := s.Version("envoy") // serves the pending first config at once
	mu.Lock()
	served = nil
	mu.Unlock()

	start := time.Now()
	for i := range 10 {
		next := cfg.Clone()
		next.Endpoints[i].Variants[0].Weight = 5
		if err := s.Apply(next); err != nil {
			t.Fatal(err)
		}
		cfg = next
	}
	bad := cfg.Clone()
	for i := range bad.Endpoints[0].Variants {
		bad.Endpoints[0].Variants[i].Weight = 0
	}
	if err := s.Apply(bad); err == nil {
		t.Fatal("a config with all-zero weights was accepted")
	}
	time.Sleep(3 * debounce)
	mu.Lock()
	defer mu.Unlock()
	if len(served) != 1 {
		t.Fatalf("a burst of 10 changes was served as %d versions, want 1", len(served))
	}
	if d := served[0].Sub(start); d < debounce || d > debounce+100*time.Millisecond {
		t.Errorf("served %v after the first change, want about %v", d, debounce)
	}
	if v := s.servedVersion("envoy"); v == first {
		t.Error("the version did not move")
	}
	set := s.caches["envoy"].res[resource.RouteType]
	if len(set) != 1 {
		t.Fatalf("%d Envoy route configurations", len(set))
	}
}
