// Package rls serves gRPC's Route Lookup Service (grpc.lookup.v1) so that
// proxyless gRPC clients get the same sticky variants as Envoy traffic: a
// client's RLS cluster-specifier plugin sends the request's keys (sticky
// header, rule headers, explicit target, and a constant key naming the
// endpoint), and the answer is the variant's cluster, decided by the same
// engine as ext_proc. It also builds that plugin's xDS configuration.
package rls

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/rls/lookuppb"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// Decider decides a request's variant; *cohort.Engine is one.
type Decider interface {
	Decide(ctx context.Context, endpoint string, h cohort.Headers) (cohort.Decision, error)
}

// Options configures a Server.
type Options struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
}

// Server answers RouteLookup with the decided variant's alias cluster.
// Every failure is an error status: the client then uses the endpoint's
// weighted default target, so a lookup problem degrades routing to a
// per-request split and never fails a call.
type Server struct {
	decider Decider
	log     *zap.Logger
	unknown prometheus.Counter
	results [numResults]prometheus.Counter

	// targets caches the answer lists per decided cluster: answers are
	// read-only once built, and building them per lookup would allocate
	// two strings and a slice on the hot path.
	targets sync.Map // cluster (endpoint/variant) → []string
	nTarget int64
	mu      sync.Mutex
}

type result int

const (
	resultOK result = iota
	resultBadRequest
	resultUnknownEndpoint
	resultError
	numResults
)

var resultNames = [numResults]string{"ok", "bad_request", "unknown_endpoint", "error"}

// maxCachedTargets bounds the answer cache; past it (only after very many
// config changes) the cache starts over.
const maxCachedTargets = 4096

// NewServer returns a lookup server deciding with d.
func NewServer(d Decider, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	s := &Server{decider: d, log: opts.Logger, unknown: opts.Metrics.UnknownEndpoint}
	for i := range s.results {
		s.results[i] = opts.Metrics.RLSLookups.WithLabelValues(resultNames[i])
	}
	return s
}

// keyMap lets the engine read the RLS keys as request headers: key
// builders name each key after the header it was extracted from.
type keyMap map[string]string

func (k keyMap) Get(name string) (string, bool) {
	v, ok := k[name]
	return v, ok
}

// RouteLookup implements grpc.lookup.v1.RouteLookupService.
func (s *Server) RouteLookup(ctx context.Context, req *lookuppb.RouteLookupRequest) (*lookuppb.RouteLookupResponse, error) {
	if tt := req.GetTargetType(); tt != "" && tt != "grpc" {
		s.results[resultBadRequest].Inc()
		return nil, status.Errorf(codes.InvalidArgument, "target_type %q is not supported: modelsplit answers gRPC cluster names (target_type \"grpc\")", tt)
	}
	keys := req.GetKeyMap()
	endpoint := keys[translate.EndpointKey]
	if endpoint == "" {
		s.results[resultBadRequest].Inc()
		return nil, status.Errorf(codes.InvalidArgument, "key %q missing: the key builder must add it as a constant key naming the endpoint", translate.EndpointKey)
	}
	d, err := s.decider.Decide(ctx, endpoint, keyMap(keys))
	if err != nil {
		if errors.Is(err, cohort.ErrUnknownEndpoint) {
			s.results[resultUnknownEndpoint].Inc()
			s.unknown.Inc()
			return nil, status.Errorf(codes.NotFound, "endpoint %q is not in the config", endpoint)
		}
		s.results[resultError].Inc()
		s.log.Debug("lookup failed", zap.String("endpoint", endpoint), zap.Error(err))
		return nil, status.Errorf(codes.Unavailable, "deciding for endpoint %q: %v", endpoint, err)
	}
	s.results[resultOK].Inc()
	if d.Source == cohort.SourceRandom {
		// No user key: a per-user answer would be cached by the client for
		// every anonymous call it makes. The weighted cluster splits those
		// per request instead.
		return &lookuppb.RouteLookupResponse{Targets: s.weightedOnly(d.Endpoint)}, nil
	}
	return &lookuppb.RouteLookupResponse{Targets: s.variantTargets(d), HeaderData: d.Variant}, nil
}

// variantTargets is [alias of the variant, weighted cluster]: the client
// tries them in order and skips a target in TRANSIENT_FAILURE, so a variant
// whose backends are all down (or that a new config removed) degrades to
// the weighted split instead of failing calls.
func (s *Server) variantTargets(d cohort.Decision) []string {
	if t, ok := s.targets.Load(d.Cluster); ok {
		return t.([]string)
	}
	return s.store(d.Cluster, []string{translate.AliasCluster(d.Endpoint, d.Variant), translate.WeightedCluster(d.Endpoint)})
}

func (s *Server) weightedOnly(endpoint string) []string {
	key := "\x00" + endpoint // cannot collide with an endpoint/variant key
	if t, ok := s.targets.Load(key); ok {
		return t.([]string)
	}
	return s.store(key, []string{translate.WeightedCluster(endpoint)})
}

func (s *Server) store(key string, t []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nTarget >= maxCachedTargets {
		s.targets.Clear()
		s.nTarget = 0
	}
	if prev, loaded := s.targets.LoadOrStore(key, t); loaded {
		return prev.([]string)
	}
	s.nTarget++
	return t
}

// Register adds the lookup service to g. If hs is not nil (a health server
// already registered on g, e.g. the ext_proc listener's), the lookup
// service is reported SERVING there under ServiceName.
func (s *Server) Register(g grpc.ServiceRegistrar, hs *health.Server) {
	RegisterLookupServer(g, s)
	if hs != nil {
		hs.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
}

// RegisterStandalone adds the lookup service and a new health service to g,
// for a listener that serves nothing else. It returns the health server so
// the caller can report NOT_SERVING while draining.
func (s *Server) RegisterStandalone(g grpc.ServiceRegistrar) *health.Server {
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.Register(g, hs)
	return hs
}
