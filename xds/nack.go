package xds

import (
	"context"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// nackGuard stops go-control-plane's NACK loop. A NACK carries the last
// version the client *accepted*, so the snapshot cache sees an out-of-date
// client and re-sends the rejected snapshot at once, thousands of times a
// second (ENVOY.md §0.6). When a client NACKs the version currently served,
// the guard presents the request to the cache as up to date, which parks
// the watch until the next snapshot: the client keeps its last good config
// and gets the next version as soon as there is one.
type nackGuard struct {
	cachev3.Cache
	current func(kind NodeKind, typeURL string) string
	onNack  func(node *corev3.Node, typeURL, version, reason string)

	mu sync.Mutex
	// sent maps (node, type, nonce) → the version of that response, so a
	// NACK (which names the nonce) tells which version was rejected.
	sent map[sentKey]string
}

type sentKey struct{ node, typeURL, nonce string }

func newNackGuard(c cachev3.Cache, current func(NodeKind, string) string, onNack func(*corev3.Node, string, string, string)) *nackGuard {
	return &nackGuard{Cache: c, current: current, onNack: onNack, sent: map[sentKey]string{}}
}

func (g *nackGuard) recordSent(node *corev3.Node, resp *discovery.DiscoveryResponse) {
	g.mu.Lock()
	defer g.mu.Unlock()
	// Bounded: one entry per (node, type) is all a NACK can refer to.
	for k := range g.sent {
		if k.node == node.GetId() && k.typeURL == resp.GetTypeUrl() {
			delete(g.sent, k)
		}
	}
	g.sent[sentKey{node.GetId(), resp.GetTypeUrl(), resp.GetNonce()}] = resp.GetVersionInfo()
}

func (g *nackGuard) forget(node *corev3.Node) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.sent {
		if k.node == node.GetId() {
			delete(g.sent, k)
		}
	}
}

func (g *nackGuard) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	if req.GetErrorDetail() == nil {
		return g.Cache.CreateWatch(req, sub, out)
	}
	g.mu.Lock()
	rejected, known := g.sent[sentKey{req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce()}]
	g.mu.Unlock()
	current := g.current(KindOf(req.GetNode()), req.GetTypeUrl())
	if !known || rejected != current {
		// A newer snapshot exists than the one rejected: let it go out.
		return g.Cache.CreateWatch(req, sub, out)
	}
	parked := proto.Clone(req).(*cachev3.Request)
	parked.VersionInfo = current
	return g.Cache.CreateWatch(parked, sub, out)
}

// callbacks count streams per node kind, record what was sent, and report
// NACKs once per (kind, type, version).
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			s.sawNode(id, req.GetNode())
			if req.GetErrorDetail() != nil {
				version := ""
				s.guard.mu.Lock()
				version = s.guard.sent[sentKey{req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce()}]
				s.guard.mu.Unlock()
				s.onNack(req.GetNode(), req.GetTypeUrl(), version, req.GetErrorDetail().GetMessage())
			} else if s.onACK != nil && req.GetResponseNonce() != "" {
				s.onACK(req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo())
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			s.guard.recordSent(req.GetNode(), resp)
		},
		StreamClosedFunc: func(id int64, node *corev3.Node) {
			s.streamClosed(id)
			s.guard.forget(node)
		},
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			s.sawNode(id, req.GetNode())
			if req.GetErrorDetail() != nil {
				s.onNack(req.GetNode(), req.GetTypeUrl(), "", req.GetErrorDetail().GetMessage())
			}
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.streamClosed(id) },
	}
}

func (s *Server) sawNode(stream int64, node *corev3.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.streams[stream]; ok || node == nil {
		return
	}
	kind := KindOf(node)
	s.streams[stream] = kind
	s.clients[kind]++
	s.metrics.XDSClients.WithLabelValues(string(kind)).Inc()
}

func (s *Server) streamClosed(stream int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kind, ok := s.streams[stream]
	if !ok {
		return
	}
	delete(s.streams, stream)
	s.clients[kind]--
	s.metrics.XDSClients.WithLabelValues(string(kind)).Dec()
}

type nackKey struct {
	kind             NodeKind
	typeURL, version string
}

// onNack counts every NACK and logs the first per (kind, type, version):
// a fleet rejecting one bad snapshot should not flood the log.
func (s *Server) onNack(node *corev3.Node, typeURL, version, reason string) {
	kind := KindOf(node)
	s.metrics.XDSNacks.WithLabelValues(string(kind), typeShort(typeURL)).Inc()
	k := nackKey{kind, typeURL, version}
	s.mu.Lock()
	first := !s.nackLogged[k]
	s.nackLogged[k] = true
	s.mu.Unlock()
	if first {
		s.log.Warn("xDS client rejected a snapshot (NACK); it keeps its last good config",
			zap.String("node", node.GetId()), zap.String("node_kind", string(kind)),
			zap.String("type", typeURL), zap.String("version", version), zap.String("reason", reason))
	}
}
