package server

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelsplit/modelsplit/xds/internal/xdstest"
	"github.com/modelsplit/modelsplit/xds/translate"
)

func listenerNames(t *testing.T, resp *discovery.DiscoveryResponse) []string {
	t.Helper()
	var names []string
	for _, a := range resp.GetResources() {
		var l listenerv3.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		names = append(names, l.GetName())
	}
	return names
}

// Envoy and gRPC nodes get their own resource sets, over ADS and over the
// per-type LDS service; nodes of a kind share one snapshot.
func TestNodeKindsGetTheirResources(t *testing.T) {
	s := startServer(t, loadCase(t, xdstest.Case("grpc.yaml")), nil)
	for _, tc := range []struct {
		node *corev3.Node
		want string
	}{
		{envoyNode("e1"), translate.GatewayListenerName},
		{envoyNode("e2"), translate.GatewayListenerName},
		{&corev3.Node{Id: "g1", UserAgentName: "gRPC Go"}, "triton"},
		{&corev3.Node{Id: "g2", UserAgentName: "gRPC Java"}, "triton"},
		{&corev3.Node{Id: "g3", UserAgentName: "envoy", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			translate.NodeKindMetadataKey: structpb.NewStringValue("grpc")}}}, "triton"},
	} {
		stream := openADS(t, s.conn)
		stream.send(t, &discovery.DiscoveryRequest{Node: tc.node, TypeUrl: resource.ListenerType})
		if got := listenerNames(t, stream.next(t)); len(got) != 1 || got[0] != tc.want {
			t.Errorf("ADS: node %s (%s) got listeners %v, want [%s]", tc.node.GetId(), tc.node.GetUserAgentName(), got, tc.want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lds, err := listenerservice.NewListenerDiscoveryServiceClient(s.conn).StreamListeners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lds.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: "g4", UserAgentName: "gRPC Go"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := lds.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := listenerNames(t, resp); len(got) != 1 || got[0] != "triton" {
		t.Errorf("LDS service: gRPC node got listeners %v, want [triton]", got)
	}
}
