package translate

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// NodeKind is the kind of xDS client. Envoy and proxyless gRPC clients get
// different resources: grpc-go needs an api_listener, google_grpc ext_proc,
// EDS localities, and cannot be steered by ext_proc header mutations.
type NodeKind string

const (
	KindEnvoy NodeKind = "envoy"
	KindGRPC  NodeKind = "grpc"
)

// Kinds lists every node kind, in the order snapshots are built.
var Kinds = []NodeKind{KindEnvoy, KindGRPC}

// Resources is the complete set of xDS resources for one node kind, keyed by
// type URL (resource.ClusterType, resource.ListenerType, ...).
type Resources map[resource.Type][]types.Resource
