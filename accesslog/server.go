package accesslog

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
)

// Options configures a Server.
type Options struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
}

// Server implements envoy.service.accesslog.v3.AccessLogService for the
// gateway's access log (xds.AccessLogName).
type Server struct {
	accesslogv3.UnimplementedAccessLogServiceServer
	log     *zap.Logger
	metrics *metrics.Metrics
	results resultCounters
	// clusters maps a variant's cluster name (<endpoint>/<variant>) of an
	// observed endpoint to its series; replaced whole on SetConfig.
	clusters atomic.Pointer[map[string]*variantSeries]

	done      chan struct{} // closed by Close: open streams end
	closeOnce sync.Once
}

// variantSeries are one variant's series and what the entries need to
// know of its endpoint, resolved once per config.
type variantSeries struct {
	ttfb, duration, tokens prometheus.Observer
	tokensHeader           string
}

// Entry results (modelsplit_access_log_entries_total{result}).
const (
	resultRecorded        = "recorded"
	resultNoCluster       = "no_cluster"
	resultUnknownEndpoint = "unknown_endpoint"
	resultUnknownVariant  = "unknown_variant"
	resultUnobserved      = "unobserved"
	resultIntermediate    = "intermediate"
)

type resultCounters struct {
	recorded, noCluster, unknownEndpoint, unknownVariant, unobserved, intermediate prometheus.Counter
}

// NewServer returns a server with no config: every entry is an unknown
// endpoint until SetConfig.
func NewServer(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	r := opts.Metrics.AccessLogEntries
	s := &Server{log: opts.Logger, metrics: opts.Metrics, done: make(chan struct{}), results: resultCounters{
		recorded:        r.WithLabelValues(resultRecorded),
		noCluster:       r.WithLabelValues(resultNoCluster),
		unknownEndpoint: r.WithLabelValues(resultUnknownEndpoint),
		unknownVariant:  r.WithLabelValues(resultUnknownVariant),
		unobserved:      r.WithLabelValues(resultUnobserved),
		intermediate:    r.WithLabelValues(resultIntermediate),
	}}
	empty := map[string]*variantSeries{}
	s.clusters.Store(&empty)
	return s
}

// Register adds the access log service to g.
func (s *Server) Register(g *grpc.Server) { accesslogv3.RegisterAccessLogServiceServer(g, s) }

// SetConfig takes the config in force: which endpoints are observed,
// their variants and token headers. Entries for a variant or endpoint
// the config does not name are counted and dropped, so the series stay
// those of the config.
func (s *Server) SetConfig(cfg *config.Config) {
	m := map[string]*variantSeries{}
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		for _, v := range e.Variants {
			name := config.ClusterName(e.Name, v.Name)
			if !e.Observed() {
				m[name] = nil // known, not recorded
				continue
			}
			m[name] = &variantSeries{
				ttfb:         s.metrics.VariantTTFB.WithLabelValues(e.Name, v.Name),
				duration:     s.metrics.VariantDuration.WithLabelValues(e.Name, v.Name),
				tokens:       s.metrics.VariantTokens.WithLabelValues(e.Name, v.Name),
				tokensHeader: e.TokensHeader,
			}
		}
		m[e.Name] = nil // the endpoint itself: tells unknown variants from unknown endpoints
	}
	s.clusters.Store(&m)
}

// StreamAccessLogs reads one Envoy worker's stream of batches until Envoy
// closes it. Envoy expects no answer.
func (s *Server) StreamAccessLogs(stream accesslogv3.AccessLogService_StreamAccessLogsServer) error {
	type received struct {
		msg *accesslogv3.StreamAccessLogsMessage
		err error
	}
	// Recv runs apart so that Close can end the stream: Envoy keeps it open
	// for good, and a graceful stop would otherwise wait its whole grace
	// period for it. Envoy reconnects (to this process after a restart).
	next := make(chan received)
	go func() {
		for {
			msg, err := stream.Recv()
			select {
			case next <- received{msg, err}:
			case <-stream.Context().Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var r received
		select {
		case <-s.done:
			return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
		case r = <-next:
		}
		msg, err := r.msg, r.err
		if err != nil {
			if errors.Is(err, io.EOF) {
				return stream.SendAndClose(&accesslogv3.StreamAccessLogsResponse{})
			}
			if status.Code(err) == codes.Canceled || stream.Context().Err() != nil {
				return nil
			}
			return err
		}
		s.metrics.AccessLogMessages.Inc()
		if id := msg.GetIdentifier(); id != nil {
			s.log.Debug("access log stream", zap.String("log_name", id.GetLogName()), zap.String("node", id.GetNode().GetId()))
		}
		for _, e := range msg.GetHttpLogs().GetLogEntry() {
			s.record(e)
		}
	}
}

// Close ends every open access log stream (Envoy's are open for good),
// so a graceful stop does not wait for them. Call it before stopping the
// gRPC server.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.done) }) }

// record turns one request's entry into its variant's samples: time to
// the first upstream byte (absent when the variant never answered),
// time to the last byte sent downstream (or, when none was sent, until
// the request ended), and the reported tokens when present.
func (s *Server) record(e *accesslogdatav3.HTTPAccessLogEntry) {
	c := e.GetCommonProperties()
	switch c.GetAccessLogType() {
	case accesslogdatav3.AccessLogType_NotSet, accesslogdatav3.AccessLogType_DownstreamEnd:
	default:
		s.results.intermediate.Inc()
		return
	}
	cluster := c.GetUpstreamCluster()
	endpoint, _, ok := strings.Cut(cluster, "/")
	if !ok {
		s.results.noCluster.Inc()
		return
	}
	clusters := *s.clusters.Load()
	// After a failover the upstream cluster is the variant the request was
	// routed to; x-modelsplit-variant names the one that answered.
	if served := e.GetResponse().GetResponseHeaders()[config.VariantHeader]; served != "" {
		if _, ok := clusters[config.ClusterName(endpoint, served)]; ok {
			cluster = config.ClusterName(endpoint, served)
		}
	}
	v, known := clusters[cluster]
	switch {
	case v != nil:
	case known:
		s.results.unobserved.Inc()
		return
	default:
		if _, ok := clusters[endpoint]; ok {
			s.results.unknownVariant.Inc()
		} else {
			s.results.unknownEndpoint.Inc()
		}
		return
	}
	if d, ok := seconds(c.GetTimeToFirstUpstreamRxByte()); ok {
		v.ttfb.Observe(d)
	}
	if d, ok := seconds(c.GetTimeToLastDownstreamTxByte()); ok {
		v.duration.Observe(d)
	} else if d, ok := seconds(c.GetDuration()); ok {
		v.duration.Observe(d)
	}
	if n, ok := tokens(e.GetResponse(), v.tokensHeader); ok {
		v.tokens.Observe(float64(n))
	}
	s.results.recorded.Inc()
}

func seconds(d *durationpb.Duration) (float64, bool) {
	if d == nil {
		return 0, false
	}
	return float64(d.GetSeconds()) + float64(d.GetNanos())/float64(time.Second), true
}

// tokens reads the count from the response trailers (a streamed answer
// can only tell it at the end), else the headers. A value that is not a
// whole number is ignored.
func tokens(r *accesslogdatav3.HTTPResponseProperties, header string) (uint64, bool) {
	if header == "" {
		return 0, false
	}
	v, ok := r.GetResponseTrailers()[header]
	if !ok {
		v, ok = r.GetResponseHeaders()[header]
	}
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	return n, err == nil
}
