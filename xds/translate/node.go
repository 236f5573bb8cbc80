package translate

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// NodeKindMetadataKey in a node's metadata overrides the detection by user
// agent (e.g. a gRPC client in a language whose agent name we don't know).
const NodeKindMetadataKey = "modelsplit.kind"

// KindOf tells Envoy proxies from proxyless gRPC clients: by node metadata
// modelsplit.kind when present, else by user_agent_name ("envoy" vs
// "gRPC Go", "gRPC C-core", "gRPC Java", ...). Unknown clients are treated
// as Envoy.
func KindOf(node *corev3.Node) NodeKind {
	if v := node.GetMetadata().GetFields()[NodeKindMetadataKey].GetStringValue(); v != "" {
		switch NodeKind(strings.ToLower(v)) {
		case KindGRPC:
			return KindGRPC
		case KindEnvoy:
			return KindEnvoy
		}
	}
	if strings.HasPrefix(strings.ToLower(node.GetUserAgentName()), "grpc") {
		return KindGRPC
	}
	return KindEnvoy
}
