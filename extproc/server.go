package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/shadow"
	"github.com/modelsplit/modelsplit/stats"
)

// Decider picks a variant for a request. *cohort.Engine implements it.
type Decider interface {
	Decide(ctx context.Context, endpoint string, h cohort.Headers) (cohort.Decision, error)
}

// Options configures a Server.
type Options struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// Shadows receives compare-mode exchanges from the observe filter;
	// nil disables comparison (observation still counts).
	Shadows *shadow.Manager
	// Sampler picks compare-mode shadows; defaults to the Decider when it
	// implements ShadowSampler.
	Sampler ShadowSampler
	// Limits bounds the streams (config.ExtProc); zero fields take the
	// config defaults. SetLimits changes them later.
	Limits config.ExtProc
	// Rewards, when set, is told every answer of an endpoint with a
	// bandit (the bandit's rewards).
	Rewards RewardObserver
}

// RewardObserver takes the answers of endpoints that have a bandit.
type RewardObserver interface {
	// RewardHeader reports whether endpoint's answers carry rewards and
	// the response header to read one from ("" for none).
	RewardHeader(endpoint string) (header string, wanted bool)
	// Observed is one answer: its variant, status class, latency, the
	// request id, the reward header's value (when present), and whether
	// the bandit did not choose the variant (a target header or a rule).
	Observed(endpoint, variant string, class stats.Class, latency time.Duration, requestID, reward string, hasReward, unsampled bool)
}

// Server implements envoy.service.ext_proc.v3.ExternalProcessor.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
	decider Decider
	log     *zap.Logger
	health  *health.Server
	streams streamCounters
	unknown func()

	metrics *metrics.Metrics
	series  seriesCache
	sampler ShadowSampler
	shadows *shadow.Manager
	rewards RewardObserver

	open       atomic.Int64 // streams in Process
	maxStreams atomic.Int64
	firstMsg   atomic.Int64 // nanoseconds
	idle       atomic.Int64 // nanoseconds
}

// NewServer returns a server deciding with d.
func NewServer(d Decider, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	s := &Server{decider: d, log: opts.Logger, health: health.NewServer(), metrics: opts.Metrics,
		series: seriesCache{m: opts.Metrics}, sampler: opts.Sampler, shadows: opts.Shadows, rewards: opts.Rewards}
	if s.sampler == nil {
		s.sampler, _ = d.(ShadowSampler)
	}
	s.streams = newStreamCounters(opts.Metrics)
	s.unknown = opts.Metrics.UnknownEndpoint.Inc
	s.SetLimits(opts.Limits)
	return s
}

// SetLimits applies the extproc section of a (re)loaded config to new
// streams and to the timers of open ones from their next message on.
// Zero fields take the defaults.
func (s *Server) SetLimits(x config.ExtProc) {
	if x.MaxStreams <= 0 {
		x.MaxStreams = config.DefaultExtProcMaxStreams
	}
	if x.FirstMessageTimeout <= 0 {
		x.FirstMessageTimeout = config.DefaultExtProcFirstMessageTimeout
	}
	if x.IdleTimeout <= 0 {
		x.IdleTimeout = config.DefaultTimeout + config.ExtProcIdleMargin
	}
	s.maxStreams.Store(int64(x.MaxStreams))
	s.firstMsg.Store(int64(x.FirstMessageTimeout))
	s.idle.Store(int64(x.IdleTimeout))
}

// OpenStreams is the number of ext_proc streams being served.
func (s *Server) OpenStreams() int64 { return s.open.Load() }

// errTooManyStreams refuses a stream past extproc.max_streams. Envoy's
// decide filter (failure_mode_allow) then fails open to the weighted
// route; the observe filter never waits.
var errTooManyStreams = status.Error(codes.ResourceExhausted, "modelsplit: too many open ext_proc streams (extproc.max_streams)")

// errNothingSent ends a stream that sent no message within
// extproc.first_message_timeout.
var errNothingSent = status.Error(codes.DeadlineExceeded, "modelsplit: no message within extproc.first_message_timeout")

// received is one Recv's outcome.
type received struct {
	req *extprocv3.ProcessingRequest
	err error
}

// Register adds the ext_proc and gRPC health services to g.
func (s *Server) Register(g *grpc.Server) {
	extprocv3.RegisterExternalProcessorServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus("envoy.service.ext_proc.v3.ExternalProcessor", healthpb.HealthCheckResponse_SERVING)
}

// Listen opens a listener for "host:port" or "unix:///path". A stale socket
// file left by a previous run is removed first.
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if path == "" {
			return nil, fmt.Errorf("unix socket address %q has no path", addr)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(path)
		}
		return net.Listen("unix", path)
	}
	return net.Listen("tcp", addr)
}

// clientKind is who opened the stream; they read different HeaderValue
// fields (docs/envoy-notes.md §1.4).
type clientKind uint8

const (
	clientEnvoy clientKind = iota
	clientGRPC
)

func (c clientKind) String() string {
	if c == clientGRPC {
		return "grpc"
	}
	return "envoy"
}

// errMalformed ends a stream whose messages break the protocol.
var errMalformed = errors.New("malformed")

// Process handles one stream, which Envoy opens per HTTP request. A
// receiving goroutine hands it each message, so that a stream silent past
// its timeout (extproc.first_message_timeout before the first message,
// extproc.idle_timeout after) is ended rather than held.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := stream.Context()
	st := streamState{server: s, ctx: ctx}
	st.readMetadata(ctx)
	if s.open.Add(1) > s.maxStreams.Load() {
		s.open.Add(-1)
		s.streams.done(st.client, "refused")
		return errTooManyStreams
	}
	s.metrics.ExtProcOpenStreams.Inc()
	defer func() {
		s.open.Add(-1)
		s.metrics.ExtProcOpenStreams.Dec()
	}()
	msgs := make(chan received)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			req, err := stream.Recv()
			select {
			case msgs <- received{req, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(time.Duration(s.firstMsg.Load()))
	defer timer.Stop()
	first := true
	for {
		var req *extprocv3.ProcessingRequest
		var err error
		select {
		case r := <-msgs:
			req, err = r.req, r.err
		case <-timer.C:
			return s.idleEnd(&st, first)
		}
		if err != nil {
			if st.observing {
				s.metrics.ObserveStreams.WithLabelValues(st.client.String(), st.observeEnd()).Inc()
				return nil
			}
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				s.streams.done(st.client, resultOf(st))
				return nil
			}
			s.streams.done(st.client, "error")
			return err
		}
		first = false
		timer.Reset(time.Duration(s.idle.Load()))
		resp, err := st.handle(req)
		if err != nil {
			if st.observing {
				st.observeEnd()
				s.metrics.ObserveStreams.WithLabelValues(st.client.String(), "malformed").Inc()
				return status.Error(codes.InvalidArgument, err.Error())
			}
			s.streams.done(st.client, "malformed")
			s.log.Debug("ending malformed ext_proc stream", zap.Error(err))
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if resp == nil {
			continue // observability mode: Envoy expects no reply
		}
		if err := stream.Send(resp); err != nil {
			s.streams.done(st.client, "error")
			return err
		}
	}
}

// idleEnd ends a stream past its timeout, counted with result "idle". A
// stream that sent nothing gets DEADLINE_EXCEEDED; one silent after its
// messages ends with OK, as a finished stream does (Envoy expects nothing
// more on it by then: the idle timeout outlasts every request).
func (s *Server) idleEnd(st *streamState, nothingSent bool) error {
	if st.observing {
		st.observeEnd()
		s.metrics.ObserveStreams.WithLabelValues(st.client.String(), "idle").Inc()
	} else {
		s.streams.done(st.client, "idle")
	}
	if nothingSent {
		return errNothingSent
	}
	return nil
}

func resultOf(st streamState) string {
	if st.passthrough {
		return "passthrough"
	}
	return "ok"
}

// streamState is what one request's stream remembers between messages.
type streamState struct {
	server   *Server
	ctx      context.Context
	endpoint string
	client   clientKind

	sawRequestHeaders bool
	passthrough       bool
	setCookie         string // minted id cookie, added on the response phase

	// Observe-filter streams (observability mode).
	observing     bool
	servedVariant string // from stream metadata (proxyless gRPC overrides)
	capture       string // from stream metadata: config.CaptureMarked, CaptureSampled or ""
	obs           *observation
	observeResult string
}

func (st *streamState) readMetadata(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(config.EndpointMetadataKey); len(v) > 0 {
		st.endpoint = v[0]
	}
	if v := md.Get(config.ClientMetadataKey); len(v) > 0 && v[0] == "grpc" {
		st.client = clientGRPC
	}
	if v := md.Get(config.ServedVariantMetadataKey); len(v) > 0 {
		st.servedVariant = v[0]
	}
	if v := md.Get(config.CaptureMetadataKey); len(v) > 0 {
		st.capture = v[0]
	}
}

// handle answers one message. It returns (nil, nil) when no reply is due
// and an error wrapping errMalformed for protocol violations.
func (st *streamState) handle(req *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	observe := req.GetObservabilityMode()
	if observe {
		st.observing = true
	}
	switch r := req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		if st.sawRequestHeaders {
			return nil, fmt.Errorf("%w: request_headers sent twice on one stream", errMalformed)
		}
		st.sawRequestHeaders = true
		if observe {
			st.observeRequestHeaders(r.RequestHeaders, req.GetAttributes())
			return nil, nil
		}
		return st.requestHeaders(r.RequestHeaders), nil
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		if !st.sawRequestHeaders {
			return nil, fmt.Errorf("%w: response_headers before request_headers", errMalformed)
		}
		if observe {
			st.observeResponseHeaders(r.ResponseHeaders)
			return nil, nil
		}
		return st.responseHeaders(), nil
	case *extprocv3.ProcessingRequest_RequestBody:
		if observe {
			st.observeRequestBody(r.RequestBody)
			return nil, nil
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}, nil
	case *extprocv3.ProcessingRequest_ResponseBody:
		if observe {
			st.observeResponseBody(r.ResponseBody)
			return nil, nil
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}, nil
	case *extprocv3.ProcessingRequest_RequestTrailers:
		if observe {
			return nil, nil
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}, nil
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		if observe {
			st.observeResponseTrailers(r.ResponseTrailers)
			return nil, nil
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}, nil
	case nil:
		return nil, fmt.Errorf("%w: message carries no request", errMalformed)
	default:
		return nil, fmt.Errorf("%w: unsupported message %T", errMalformed, r)
	}
}

func emptyRequestHeaders() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
}

// requestHeaders decides and returns the routing header mutation. Any
// failure to decide passes the request through unchanged: Envoy's fallback
// route then splits by weight.
func (st *streamState) requestHeaders(h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if st.endpoint == "" {
		st.passthrough = true
		st.server.unknown()
		return emptyRequestHeaders()
	}
	d, err := st.server.decider.Decide(st.ctx, st.endpoint, headerView{h.GetHeaders().GetHeaders()})
	if err != nil {
		st.passthrough = true
		if errors.Is(err, cohort.ErrUnknownEndpoint) {
			st.server.unknown()
		} else {
			st.server.log.Debug("decision failed; passing through", zap.String("endpoint", st.endpoint), zap.Error(err))
		}
		return emptyRequestHeaders()
	}
	set := []*corev3.HeaderValueOption{
		st.header(config.VariantHeader, d.Variant, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
	}
	if d.Unsampled { // the observe filter leaves its reward out of the bandit
		set = append(set, st.header(config.UnsampledHeader, "1", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
	}
	if st.client == clientEnvoy { // grpc-go has no mirrors, and cannot re-route
		// Each sampled shadow's mirror policy reads its own header
		// (cluster_header), so a user sampled into a shadow is mirrored on
		// every request of the session. Requests sampled for a
		// compare-mode shadow are marked the same way: the mark selects
		// the route that streams bodies to the observe filter (other
		// requests send it headers only), and tells the observe filter
		// which shadows to capture for.
		var compare cohort.ShadowSet
		if st.server.sampler != nil && st.server.shadows != nil {
			compare = st.server.sampler.CompareShadows(st.endpoint, headerView{h.GetHeaders().GetHeaders()})
		}
		if !d.Mirror.Empty() || !compare.Empty() {
			mark := func(_, header, cluster string) {
				set = append(set, st.header(header, cluster, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
			}
			d.Mirror.Each(mark)
			compare.Each(mark)
		}
	}
	resp := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
		Response: &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: set},
			// The route was chosen before we ran; clearing the cache makes
			// Envoy re-match with the header we just set (docs/envoy-notes.md §1.3).
			ClearRouteCache: true,
		},
	}}}
	if d.SetCookie != "" {
		// Only this user's first request pays for a response phase.
		st.setCookie = d.SetCookie
		resp.ModeOverride = &filterpb.ProcessingMode{ResponseHeaderMode: filterpb.ProcessingMode_SEND}
	}
	return resp
}

func (st *streamState) responseHeaders() *extprocv3.ProcessingResponse {
	hr := &extprocv3.HeadersResponse{}
	if st.setCookie != "" {
		hr.Response = &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			st.appendHeader("set-cookie", st.setCookie),
		}}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}}
}

// header builds a mutation the calling client understands: Envoy reads
// raw_value and rejects a header with both fields set; grpc-go reads value.
func (st *streamState) header(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	hv := &corev3.HeaderValue{Key: key}
	if st.client == clientGRPC {
		hv.Value = value
	} else {
		hv.RawValue = []byte(value)
	}
	return &corev3.HeaderValueOption{Header: hv, AppendAction: action}
}

// appendHeader adds a header without replacing existing ones (the backend
// may set cookies of its own). The zero append_action is ambiguous — Envoy
// overwrites when the deprecated append is unset, grpc-go appends — so the
// explicit append: true says it for both.
func (st *streamState) appendHeader(key, value string) *corev3.HeaderValueOption {
	o := st.header(key, value, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	o.Append = wrapperspb.Bool(true)
	return o
}

// headerView lets the engine read request headers in place.
type headerView struct{ hs []*corev3.HeaderValue }

// Get returns the first header named name (lower-case, as HTTP/2 and Envoy
// deliver them). raw_value wins over value, as Envoy fills raw_value.
func (v headerView) Get(name string) (string, bool) {
	for _, h := range v.hs {
		if h.GetKey() != name {
			continue
		}
		if raw := h.GetRawValue(); len(raw) > 0 {
			return string(raw), true
		}
		return h.GetValue(), true
	}
	return "", false
}
