package server

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/xds/translate"
)

// An Envoy node subscribed to its RTDS layer by name, over delta, gets the
// Runtime resource; a weight change then sends that resource alone, under
// the version every other type and node kind moves to, and the Envoy
// stream's other types get nothing.
func TestDeltaWeightChangeSendsEnvoyOnlyTheRuntime(t *testing.T) {
	cfg := benchConfig(t, 20, false)
	s := startServer(t, cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := discovery.NewAggregatedDiscoveryServiceClient(s.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := envoyNode("rtds")
	in := make(chan *discovery.DeltaDiscoveryResponse, 100)
	go func() {
		for {
			r, err := d.Recv()
			if err != nil {
				close(in)
				return
			}
			in <- r
		}
	}()
	types := []string{resource.RuntimeType, resource.ClusterType, resource.RouteType}
	for _, typ := range types {
		req := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ}
		if typ == resource.RuntimeType {
			req.ResourceNamesSubscribe = []string{translate.WeightsRuntimeName}
		}
		if err := d.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() *discovery.DeltaDiscoveryResponse {
		t.Helper()
		select {
		case r := <-in:
			if r == nil {
				t.Fatal("stream ended")
			}
			if err := d.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
				t.Fatal(err)
			}
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("no response within 5s")
		}
		return nil
	}
	got := map[string]*discovery.DeltaDiscoveryResponse{}
	for range types {
		r := recv()
		got[r.GetTypeUrl()] = r
	}
	rt := got[resource.RuntimeType]
	if len(rt.GetResources()) != 1 || rt.GetResources()[0].GetName() != translate.WeightsRuntimeName {
		t.Fatalf("first Runtime response: %v", rt.GetResources())
	}
	var layer runtimev3.Runtime
	if err := rt.GetResources()[0].GetResource().UnmarshalTo(&layer); err != nil {
		t.Fatal(err)
	}
	weights := layer.GetLayer().GetFields()["modelsplit"].GetStructValue().GetFields()["weights"].GetStructValue().GetFields()
	if len(weights) != 20*4 || weights["model-5/v0"].GetNumberValue() != 2500 {
		t.Fatalf("runtime layer holds %d weights, model-5/v0 %v; want 80, 2500", len(weights), weights["model-5/v0"])
	}

	next := cfg.Clone()
	next.Endpoints[5].Variants[0].Weight, next.Endpoints[5].Variants[1].Weight = 40, 10
	if err := s.Apply(next); err != nil {
		t.Fatal(err)
	}
	r := recv()
	if r.GetTypeUrl() != resource.RuntimeType || len(r.GetResources()) != 1 || r.GetSystemVersionInfo() != s.Version(translate.KindEnvoy) ||
		s.Version(translate.KindGRPC) != s.Version(translate.KindEnvoy) {
		t.Fatalf("after a weight change: %s %d resources at version %s; served envoy %s, grpc %s",
			r.GetTypeUrl(), len(r.GetResources()), r.GetSystemVersionInfo(), s.Version(translate.KindEnvoy), s.Version(translate.KindGRPC))
	}
	select {
	case r := <-in:
		t.Errorf("a weight change also sent the Envoy stream %s (%d resources)", r.GetTypeUrl(), len(r.GetResources()))
	case <-time.After(300 * time.Millisecond):
	}
}

// gRPC nodes get no Runtime resource (grpc-go has no runtime: their routes
// carry the weights).
func TestGRPCNodesGetNoRuntime(t *testing.T) {
	s := startServer(t, benchConfig(t, 3, false), nil)
	stream := openADS(t, s.conn)
	stream.send(t, &discovery.DiscoveryRequest{Node: &corev3.Node{Id: "g", UserAgentName: "gRPC Go"}, TypeUrl: resource.RuntimeType})
	for _, r := range stream.collect(300 * time.Millisecond) {
		if len(r.GetResources()) != 0 {
			t.Errorf("a gRPC node got %d Runtime resources", len(r.GetResources()))
		}
	}
	envoy := openADS(t, s.conn)
	envoy.send(t, &discovery.DiscoveryRequest{Node: envoyNode("e"), TypeUrl: resource.RuntimeType, ResourceNames: []string{translate.WeightsRuntimeName}})
	if r := envoy.next(t); len(r.GetResources()) != 1 || r.GetVersionInfo() != s.Version(translate.KindEnvoy) {
		t.Errorf("an Envoy node's Runtime response: %d resources at %s", len(r.GetResources()), r.GetVersionInfo())
	}
}

// An Envoy that asks for listeners before (without) its runtime layer has
// a bootstrap from before the weights moved to RTDS: one warning per
// stream. One that asks for the layer first is not warned about.
func TestWarnsOfAnEnvoyWithoutTheRuntimeLayer(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	s := startServer(t, benchConfig(t, 3, false), zap.New(core))
	old := openADS(t, s.conn)
	old.send(t, &discovery.DiscoveryRequest{Node: envoyNode("old"), TypeUrl: resource.ClusterType})
	old.send(t, &discovery.DiscoveryRequest{Node: envoyNode("old"), TypeUrl: resource.ListenerType})
	old.send(t, &discovery.DiscoveryRequest{Node: envoyNode("old"), TypeUrl: resource.ListenerType})
	current := openADS(t, s.conn)
	current.send(t, &discovery.DiscoveryRequest{Node: envoyNode("new"), TypeUrl: resource.RuntimeType, ResourceNames: []string{translate.WeightsRuntimeName}})
	current.send(t, &discovery.DiscoveryRequest{Node: envoyNode("new"), TypeUrl: resource.ListenerType})
	waitFor(t, "both streams' requests", func() bool { return len(s.ACKs()) == 2 })
	old.collect(200 * time.Millisecond)
	current.collect(200 * time.Millisecond)
	warned := map[string]int{}
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "without the runtime layer") {
			warned[e.ContextMap()["node"].(string)]++
		}
	}
	if warned["old"] != 1 || warned["new"] != 0 {
		t.Errorf("warnings per node %v, want old 1, new 0", warned)
	}
}
