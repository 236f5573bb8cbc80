package xds

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
)

// ServerOptions configures a Server.
type ServerOptions struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// OnACK, when set, is called for every state-of-the-world ACK: a client
	// accepted version of typeURL. Benchmarks measure propagation with it.
	OnACK func(node *corev3.Node, typeURL, version string)
}

// Server serves the snapshots over ADS (state of the world and delta) and
// the per-type discovery services.
type Server struct {
	log     *zap.Logger
	metrics *metrics.Metrics
	onACK   func(node *corev3.Node, typeURL, version string)
	caches  map[NodeKind]cachev3.SnapshotCache
	guard   *nackGuard
	xds     serverv3.Server

	bootID  string
	counter atomic.Uint64

	mu       sync.Mutex
	versions map[NodeKind]string
	streams  map[int64]NodeKind // open streams whose node we have seen
	clients  map[NodeKind]int
	// nackLogged bounds NACK logging to once per (kind, type, version).
	nackLogged map[nackKey]bool
}

// NewServer returns a server with no snapshot yet; Apply sets one.
func NewServer(ctx context.Context, opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	s := &Server{
		log: opts.Logger, metrics: opts.Metrics, onACK: opts.OnACK,
		// Versions must never repeat across restarts: a reconnecting client
		// that already holds a version is sent nothing for it.
		bootID:   strconv.FormatInt(time.Now().UnixNano(), 36),
		versions: map[NodeKind]string{}, streams: map[int64]NodeKind{}, clients: map[NodeKind]int{},
		nackLogged: map[nackKey]bool{},
	}
	sl := opts.Logger.Named("cache").Sugar()
	s.caches = map[NodeKind]cachev3.SnapshotCache{
		// Envoy subscribes to everything: ADS ordering is worth having.
		KindEnvoy: cachev3.NewSnapshotCache(true, kindHash{}, sl),
		// grpc-go subscribes to a subset of CDS/EDS, which an ads=true
		// cache never answers (ENVOY.md §7.1).
		KindGRPC: cachev3.NewSnapshotCache(false, kindHash{}, sl),
	}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return string(KindOf(r.GetNode())) },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return string(KindOf(r.GetNode())) },
		Caches:        map[string]cachev3.Cache{string(KindEnvoy): s.caches[KindEnvoy], string(KindGRPC): s.caches[KindGRPC]},
	}
	s.guard = newNackGuard(mux, s.currentVersion, s.onNack)
	s.xds = serverv3.NewServer(ctx, s.guard, s.callbacks())
	return s
}

// Register adds ADS and the per-type discovery services to g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
}

// Apply builds and checks the resources for every node kind and, only if
// all are valid, serves them under a new version. Otherwise the last good
// snapshots stay in place and the error names the problems.
func (s *Server) Apply(cfg *config.Config) error {
	built := map[NodeKind]Resources{}
	for _, kind := range Kinds {
		res, err := Build(cfg, kind)
		if err == nil {
			err = Check(res)
		}
		if err != nil {
			s.metrics.XDSSnapshotRefused.Inc()
			s.log.Warn("refusing config: resources failed validation; still serving the last good snapshot",
				zap.String("node_kind", string(kind)), zap.Error(err))
			return fmt.Errorf("resources for %s nodes: %w", kind, err)
		}
		built[kind] = res
	}
	version := s.bootID + "-" + strconv.FormatUint(s.counter.Add(1), 10)
	for _, kind := range Kinds {
		snap, err := cachev3.NewSnapshot(version, built[kind])
		if err != nil {
			return fmt.Errorf("snapshot for %s nodes: %w", kind, err)
		}
		if err := s.caches[kind].SetSnapshot(context.Background(), string(kind), snap); err != nil {
			return fmt.Errorf("set snapshot for %s nodes: %w", kind, err)
		}
		s.mu.Lock()
		if old := s.versions[kind]; old != "" {
			s.metrics.XDSSnapshotVersion.DeleteLabelValues(string(kind), old)
		}
		s.versions[kind] = version
		s.mu.Unlock()
		s.metrics.XDSSnapshotVersion.WithLabelValues(string(kind), version).Set(1)
	}
	s.log.Info("serving snapshot", zap.String("version", version), zap.Int("endpoints", len(cfg.Endpoints)))
	return nil
}

// Version is the snapshot version served to a node kind ("" before Apply).
func (s *Server) Version(kind NodeKind) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.versions[kind]
}

// Ready reports whether a snapshot is being served.
func (s *Server) Ready() bool { return s.Version(KindEnvoy) != "" }

// Clients is the number of open xDS streams from nodes of a kind.
func (s *Server) Clients(kind NodeKind) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients[kind]
}

func (s *Server) currentVersion(kind NodeKind, typeURL string) string {
	snap, err := s.caches[kind].GetSnapshot(string(kind))
	if err != nil {
		return ""
	}
	return snap.GetVersion(typeURL)
}
