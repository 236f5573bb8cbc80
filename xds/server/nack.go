package server

import (
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/modelsplit/modelsplit/xds/translate"
)

// nackGuard stops go-control-plane's NACK loop (docs/envoy-notes.md §3.1). A
// state-of-the-world NACK carries the last version the client *accepted*,
// so the snapshot cache sees an out-of-date client and re-sends the
// rejected snapshot at once, thousands of times a second. For a request the
// stream callbacks marked (its stream's latest response of that type was
// NACKed), the guard shows the cache a client that holds the rejected
// version: the watch parks until a different version exists, the client
// keeps its last good config, and the next snapshot reaches it at once.
//
// Delta streams need no guard: the delta server records what it sent as
// the client's state when it sends it, so a NACK triggers no re-send.
type nackGuard struct {
	cachev3.Cache
	// holds maps a request (by pointer, between its OnStreamRequest
	// callback and the CreateWatch that follows on the same goroutine) to
	// the version the cache should take the client to hold.
	holds sync.Map // *cachev3.Request → string
}

// hold marks req as coming from a client that holds version.
func (g *nackGuard) hold(req *cachev3.Request, version string) { g.holds.Store(req, version) }

func (g *nackGuard) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	if v, ok := g.holds.LoadAndDelete(req); ok {
		parked := proto.Clone(req).(*cachev3.Request)
		parked.VersionInfo = v.(string)
		req = parked
	}
	return g.Cache.CreateWatch(req, sub, out)
}

type nackKey struct {
	kind             translate.NodeKind
	typeURL, version string
}

// onNack counts every NACK and logs the first per (kind, type, version):
// a fleet rejecting one bad snapshot must not flood the log.
func (s *Server) onNack(node *corev3.Node, kind translate.NodeKind, typeURL, version, reason string) {
	s.metrics.XDSNacks.WithLabelValues(string(kind), translate.TypeShort(typeURL)).Inc()
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
