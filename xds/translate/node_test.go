package translate

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestKindOf(t *testing.T) {
	md := func(k string) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{NodeKindMetadataKey: structpb.NewStringValue(k)}}
	}
	for _, tc := range []struct {
		node *corev3.Node
		want NodeKind
	}{
		{&corev3.Node{UserAgentName: "envoy"}, KindEnvoy},
		{&corev3.Node{UserAgentName: "gRPC Go"}, KindGRPC},
		{&corev3.Node{UserAgentName: "gRPC C-core"}, KindGRPC},
		{&corev3.Node{UserAgentName: "gRPC Java"}, KindGRPC},
		{&corev3.Node{UserAgentName: "gRPC Python"}, KindGRPC},
		{&corev3.Node{UserAgentName: "something"}, KindEnvoy},
		{&corev3.Node{}, KindEnvoy},
		{nil, KindEnvoy},
		{&corev3.Node{UserAgentName: "envoy", Metadata: md("grpc")}, KindGRPC},
		{&corev3.Node{UserAgentName: "gRPC Go", Metadata: md("ENVOY")}, KindEnvoy},
		{&corev3.Node{UserAgentName: "gRPC Go", Metadata: md("envoy")}, KindEnvoy},
		{&corev3.Node{UserAgentName: "gRPC Go", Metadata: md("bogus")}, KindGRPC},
		{&corev3.Node{UserAgentName: "envoy", Metadata: md("")}, KindEnvoy},
	} {
		if got := KindOf(tc.node); got != tc.want {
			t.Errorf("KindOf(%v) = %s, want %s", tc.node, got, tc.want)
		}
	}
}
