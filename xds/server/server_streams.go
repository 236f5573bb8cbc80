package server

import (
	"context"
	"maps"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/xds/translate"
)

// streamKey names a stream: go-control-plane numbers state-of-the-world
// and delta streams with separate counters, so the ids alone collide.
type streamKey struct {
	delta bool
	id    int64
}

// streamState is what the callbacks know about one open stream.
type streamState struct {
	// node is the node of the stream's first request: go-control-plane's
	// delta server hands callbacks later requests without it.
	node   *corev3.Node
	nodeID string
	kind   translate.NodeKind
	// sent is the latest response per type URL. go-control-plane ignores
	// requests whose nonce is not the latest, so only it can be ACKed or
	// NACKed.
	sent map[string]sentResponse
	// held is a request marked for the nackGuard whose watch may not have
	// been created yet; dropped from the guard when the stream closes.
	held *discovery.DiscoveryRequest
	// runtime is set once an Envoy stream asked for the runtime layer of
	// weights; noRuntime once it was found asking for listeners first.
	runtime, noRuntime bool
}

type sentResponse struct {
	nonce, version string
	nacked         bool
}

// nodeState is what operators see per node id (see ACKs).
type nodeState struct {
	streams int
	ack     NodeACK
}

// NodeACK is what one connected node has accepted and rejected.
type NodeACK struct {
	Kind translate.NodeKind
	// Acked maps a type URL to the last version the node accepted.
	Acked map[string]string
	// Nacked maps a type URL to the reason of the node's rejection of the
	// latest version it was sent, until it accepts one of that type.
	Nacked map[string]string
}

// ACKs reports, per connected node id, the versions it accepted and its
// open rejections. Nodes sharing an id are merged.
func (s *Server) ACKs() map[string]NodeACK {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]NodeACK, len(s.nodes))
	for id, n := range s.nodes {
		out[id] = NodeACK{Kind: n.ack.Kind, Acked: maps.Clone(n.ack.Acked), Nacked: maps.Clone(n.ack.Nacked)}
	}
	return out
}

// Clients is the number of open xDS streams from nodes of a kind.
func (s *Server) Clients(kind translate.NodeKind) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients[kind]
}

func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			s.onRequest(streamKey{false, id}, req)
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			s.onResponse(streamKey{false, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) { s.onClosed(streamKey{false, id}) },
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			s.onDeltaRequest(streamKey{true, id}, req)
			return nil
		},
		StreamDeltaResponseFunc: func(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
			s.onResponse(streamKey{true, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.onClosed(streamKey{true, id}) },
	}
}

// onRequest handles a state-of-the-world request. It answers the latest
// response of its type when the nonces match: an ACK names that version, a
// NACK carries error_detail and the version the client still holds. From a
// NACK until the next ACK the guard is told that the client holds the
// rejected version, so the rejected snapshot is not sent again — neither
// right after the NACK nor when the client changes its subscription.
func (s *Server) onRequest(key streamKey, req *discovery.DiscoveryRequest) {
	typeURL, holding, reason := req.GetTypeUrl(), req.GetVersionInfo(), req.GetErrorDetail().GetMessage()
	s.mu.Lock()
	st := s.stream(key, req.GetNode())
	noRuntime := noRuntimeLayer(st, typeURL)
	last, answered := st.sent[typeURL]
	answered = answered && req.GetResponseNonce() == last.nonce
	a := answerNone
	switch {
	case req.GetErrorDetail() != nil:
		a = answerNACK
	case answered && holding == last.version:
		a = answerACK
	}
	if answered {
		last.nacked = a == answerNACK || (last.nacked && a != answerACK)
		st.sent[typeURL] = last
		s.recordAnswer(st, typeURL, holding, reason, a)
		if last.nacked && holding != last.version {
			s.guard.hold(req, last.version)
			st.held = req
		}
	}
	s.mu.Unlock()
	if !answered {
		last.version = ""
	}
	if noRuntime {
		s.warnNoRuntime(req.GetNode())
	}
	s.report(req.GetNode(), st.kind, typeURL, last.version, reason, a)
}

// onDeltaRequest handles a delta request. A delta ACK or NACK names no
// version: it is the one sent with the nonce.
func (s *Server) onDeltaRequest(key streamKey, req *discovery.DeltaDiscoveryRequest) {
	typeURL, reason := req.GetTypeUrl(), req.GetErrorDetail().GetMessage()
	s.mu.Lock()
	st := s.stream(key, req.GetNode())
	noRuntime := noRuntimeLayer(st, typeURL)
	last, answered := st.sent[typeURL]
	answered = answered && req.GetResponseNonce() == last.nonce
	a := answerNone
	switch {
	case req.GetErrorDetail() != nil:
		a = answerNACK
	case answered:
		a = answerACK
	}
	if answered {
		s.recordAnswer(st, typeURL, last.version, reason, a)
	} else {
		last.version = ""
	}
	s.mu.Unlock()
	if noRuntime {
		s.warnNoRuntime(st.node)
	}
	s.report(st.node, st.kind, typeURL, last.version, reason, a)
}

// noRuntimeLayer reports, once per stream, an Envoy stream that asks for
// listeners without having asked for the runtime layer of weights. An
// Envoy bootstrapped by this modelsplit asks for that layer first and
// loads nothing else until it has it (docs/envoy-notes.md §6.4); one whose
// bootstrap has no such layer (made by an earlier modelsplit) reads no
// weights: its fallback routes split evenly over every variant. Callers
// hold s.mu.
func noRuntimeLayer(st *streamState, typeURL string) bool {
	switch {
	case st.kind != translate.KindEnvoy:
	case typeURL == resource.RuntimeType:
		st.runtime = true
	case typeURL == resource.ListenerType && !st.runtime && !st.noRuntime:
		st.noRuntime = true
		return true
	}
	return false
}

func (s *Server) warnNoRuntime(node *corev3.Node) {
	s.log.Warn("Envoy asked for listeners without the runtime layer of weights: its bootstrap has no RTDS layer "+
		translate.WeightsRuntimeName+", so its fallback routes ignore the weights and split evenly over every variant; "+
		"restart it with a bootstrap from `modelsplit bootstrap`",
		zap.String("node", node.GetId()))
}

type answer int

const (
	answerNone answer = iota // a new subscription, or a stale nonce
	answerACK
	answerNACK
)

// report counts and logs a NACK, or tells OnACK of an ACK, outside the
// lock. A NACK with a stale nonce still counts (version unknown): the
// client did reject something.
func (s *Server) report(node *corev3.Node, kind translate.NodeKind, typeURL, version, reason string, a answer) {
	switch {
	case a == answerNACK:
		s.onNack(node, kind, typeURL, version, reason)
	case a == answerACK && s.onACK != nil:
		s.onACK(node, typeURL, version)
	}
}

// recordAnswer updates the node's ACK state. Callers hold s.mu.
func (s *Server) recordAnswer(st *streamState, typeURL, version, reason string, a answer) {
	n := s.nodes[st.nodeID]
	switch a {
	case answerNACK:
		n.ack.Nacked[typeURL] = reason
	case answerACK:
		delete(n.ack.Nacked, typeURL)
		n.ack.Acked[typeURL] = version
	}
}

func (s *Server) onResponse(key streamKey, typeURL, nonce, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.streams[key]; ok {
		st.sent[typeURL] = sentResponse{nonce: nonce, version: version}
	}
}

// stream returns the stream's state, creating it (and counting the client)
// on its first request. go-control-plane has filled in the node by then on
// every request. Callers hold s.mu.
func (s *Server) stream(key streamKey, node *corev3.Node) *streamState {
	if st, ok := s.streams[key]; ok {
		return st
	}
	st := &streamState{node: node, nodeID: node.GetId(), kind: translate.KindOf(node), sent: map[string]sentResponse{}}
	s.streams[key] = st
	s.clients[st.kind]++
	s.metrics.XDSClients.WithLabelValues(string(st.kind)).Inc()
	n, ok := s.nodes[st.nodeID]
	if !ok {
		n = &nodeState{ack: NodeACK{Kind: st.kind, Acked: map[string]string{}, Nacked: map[string]string{}}}
		s.nodes[st.nodeID] = n
	}
	n.streams++
	return st
}

func (s *Server) onClosed(key streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[key]
	if !ok {
		return
	}
	delete(s.streams, key)
	if st.held != nil {
		s.guard.holds.Delete(st.held)
	}
	s.clients[st.kind]--
	s.metrics.XDSClients.WithLabelValues(string(st.kind)).Dec()
	if n := s.nodes[st.nodeID]; n != nil {
		if n.streams--; n.streams == 0 {
			delete(s.nodes, st.nodeID)
		}
	}
}
