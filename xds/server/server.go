package server

import (
	"context"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	runtimeservice "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// DefaultDebounce is the debounce modelsplit serve uses: a file edit and a
// few API calls landing within it reach clients as one version, and it is
// at most what it adds to a change's propagation (BenchmarkDebounceDelay).
const DefaultDebounce = 10 * time.Millisecond

// ServerOptions configures a Server.
type ServerOptions struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// OnACK, when set, is called for every ACK (state of the world and
	// delta): a client accepted version of typeURL. Benchmarks measure
	// propagation with it. It runs on the stream's goroutine: keep it short.
	OnACK func(node *corev3.Node, typeURL, version string)
	// Debounce, when above zero, gathers the changes applied within that
	// long after a first one into one version: a burst of edits and API
	// calls costs clients one update, and the first change of the burst
	// reaches them at most Debounce later. Apply still builds and checks
	// each config at once and returns its verdict. Zero serves each Apply
	// before it returns.
	Debounce time.Duration
	// OnServe, when set, is called with each version as it is served (after
	// the debounce), on the goroutine that serves it. Benchmarks use it.
	OnServe func(version string)
}

// Server serves the snapshots over ADS (state of the world and delta) and
// the per-type discovery services. All nodes of a kind share one snapshot.
type Server struct {
	log      *zap.Logger
	metrics  *metrics.Metrics
	onACK    func(node *corev3.Node, typeURL, version string)
	caches   map[translate.NodeKind]*encodedCache
	guard    *nackGuard
	xds      serverv3.Server
	versions *versions
	debounce time.Duration
	onServe  func(version string)

	// applyMu serializes Apply and serving, so versions reach the caches in
	// order. It guards the fields below.
	applyMu    sync.Mutex
	translator *translate.Translator
	// dirty gathers the changes applied but not yet served; timer serves
	// them when the debounce ends.
	dirty Changes
	timer *time.Timer

	mu      sync.Mutex
	served  map[translate.NodeKind]string
	streams map[streamKey]*streamState
	nodes   map[string]*nodeState // by node id, while it has open streams
	clients map[translate.NodeKind]int
	// nackLogged bounds NACK logging to once per (kind, type, version).
	nackLogged map[nackKey]bool
}

// NewServer returns a server with no snapshot yet; Apply sets one. Streams
// end when ctx is done.
func NewServer(ctx context.Context, opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	s := &Server{
		log: opts.Logger, metrics: opts.Metrics, onACK: opts.OnACK,
		versions: newVersions(time.Now()),
		served:   map[translate.NodeKind]string{}, streams: map[streamKey]*streamState{},
		nodes: map[string]*nodeState{}, clients: map[translate.NodeKind]int{},
		nackLogged: map[nackKey]bool{},
	}
	s.debounce, s.onServe = opts.Debounce, opts.OnServe
	s.translator = translate.NewTranslator()
	s.caches = map[translate.NodeKind]*encodedCache{}
	caches := map[string]cachev3.Cache{}
	for _, kind := range translate.Kinds {
		s.caches[kind] = newEncodedCache()
		caches[string(kind)] = s.caches[kind]
	}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return string(translate.KindOf(r.GetNode())) },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return string(translate.KindOf(r.GetNode())) },
		Caches:        caches,
	}
	s.guard = &nackGuard{Cache: mux}
	s.xds = serverv3.NewServer(ctx, s.guard, s.callbacks(),
		sotw.WithLogger(quietLogger{opts.Logger.Named("ads").Sugar()}))
	return s
}

// Register adds ADS and the per-type discovery services to g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	runtimeservice.RegisterRuntimeDiscoveryServiceServer(g, s.xds)
}

func (s *Server) setServed(kind translate.NodeKind, version string) {
	s.mu.Lock()
	old := s.served[kind]
	s.served[kind] = version
	// NACKs of superseded versions are history; this keeps the log-once
	// set from growing with every update.
	clear(s.nackLogged)
	s.mu.Unlock()
	if old != "" {
		s.metrics.XDSSnapshotVersion.DeleteLabelValues(string(kind), old)
	}
	s.metrics.XDSSnapshotVersion.WithLabelValues(string(kind), version).Set(1)
}

// Version is the snapshot version served to a node kind ("" before the
// first successful Apply). Changes still in the debounce are served first,
// so what a caller applied is what it reads.
func (s *Server) Version(kind translate.NodeKind) string {
	s.Flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[kind]
}

// Ready reports whether every node kind is being served a snapshot.
func (s *Server) Ready() bool {
	s.Flush()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kind := range translate.Kinds {
		if s.served[kind] == "" {
			return false
		}
	}
	return true
}
