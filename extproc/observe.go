package extproc

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/shadow"
	"github.com/modelsplit/modelsplit/stats"
)

// The observe filter runs in observability mode: Envoy (and grpc-go) send
// request headers, response headers, trailers and, for compare-mode
// shadows, the bodies, and never wait for an answer. From them the
// server counts requests, status classes and latency per variant, and
// hands sampled exchanges to the shadow comparer.

// ShadowSampler picks the compare-mode shadows that sample a request
// (*cohort.Engine implements it).
type ShadowSampler interface {
	CompareShadows(endpoint string, h cohort.Headers) cohort.ShadowSet
}

// attributesKey is where Envoy and grpc-go put request attributes.
const attributesKey = "envoy.filters.http.ext_proc"

// observation is one observed request.
type observation struct {
	start   time.Time
	variant string // served variant, once known
	// failoverFrom is the variant the request was routed to when another
	// one answered (Envoy's x-modelsplit-failover-from).
	failoverFrom string
	method       string
	path         string
	authority    string
	requestID    string
	header       http.Header // replayable request headers (captures only)
	captures     []namedCapture

	// grpc: a gRPC call, classed by its grpc-status, which comes in the
	// trailers (or in the headers of a trailers-only answer), not by
	// :status (200 for any gRPC answer).
	grpc       bool
	httpStatus int // :status of the response headers
	hasHTTP    bool
	code       int // grpc-status
	hasCode    bool
	latency    time.Duration // request headers → response headers
	responded  bool          // response headers seen
	recorded   bool          // metrics written
	finished   bool          // captures handed over

	// A bandit's endpoint: the reward header to read, its value, and
	// whether the bandit did not choose the variant.
	bandit       bool
	rewardHeader string
	reward       string
	hasReward    bool
	unsampled    bool
}

type namedCapture struct {
	shadow string
	c      *shadow.Capture
}

// seriesCache resolves the per-variant stats handles and failover
// counters without allocating on a hit.
type seriesCache struct {
	m         *metrics.Metrics
	mu        sync.RWMutex
	by        map[string]map[string]*stats.VariantRecorder // endpoint → variant → handle
	failovers map[[3]string]prometheus.Counter             // endpoint, routed-to, served
}

// failover resolves a failover counter, within the same bound as the
// variant series (its names come off the wire too).
func (c *seriesCache) failover(endpoint, from, served string) prometheus.Counter {
	k := [3]string{endpoint, from, served}
	c.mu.RLock()
	f := c.failovers[k]
	c.mu.RUnlock()
	if f != nil {
		return f
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f = c.failovers[k]; f != nil {
		return f
	}
	if len(c.failovers) >= maxObservedSeries {
		return nil
	}
	if c.failovers == nil {
		c.failovers = map[[3]string]prometheus.Counter{}
	}
	f = c.m.VariantFailover.WithLabelValues(endpoint, from, served)
	c.failovers[k] = f
	return f
}

// maxObservedSeries bounds the label sets created from names that come
// off the wire (response headers): a misbehaving backend that invents
// variant names cannot grow the registry without bound.
const maxObservedSeries = 4096

func (c *seriesCache) get(endpoint, variant string) *stats.VariantRecorder {
	c.mu.RLock()
	s := c.by[endpoint][variant]
	c.mu.RUnlock()
	if s != nil {
		return s
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by == nil {
		c.by = map[string]map[string]*stats.VariantRecorder{}
	}
	if s = c.by[endpoint][variant]; s != nil {
		return s
	}
	n := 0
	for _, vs := range c.by {
		n += len(vs)
	}
	if n >= maxObservedSeries {
		return nil
	}
	s = c.m.Stats.Variant(endpoint, variant)
	if c.by[endpoint] == nil {
		c.by[endpoint] = map[string]*stats.VariantRecorder{}
	}
	c.by[endpoint][variant] = s
	return s
}

// statusClass maps an HTTP status to its class; oddities count as 5xx
// when >= 500, else 2xx.
func statusClass(code int) stats.Class {
	switch {
	case code >= 500:
		return stats.Class5xx
	case code >= 400:
		return stats.Class4xx
	case code >= 300:
		return stats.Class3xx
	case code >= 200:
		return stats.Class2xx
	case code >= 100:
		return stats.Class1xx
	default:
		return stats.Class2xx
	}
}

// grpcClass maps a gRPC status code to an HTTP class the way
// grpc-gateway maps codes to statuses: caller mistakes are 4xx, server
// trouble 5xx.
func grpcClass(code int) stats.Class {
	switch codes.Code(code) {
	case codes.OK:
		return stats.Class2xx
	case codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.ResourceExhausted, codes.FailedPrecondition, codes.OutOfRange, codes.Unauthenticated:
		return stats.Class4xx
	default:
		return stats.Class5xx
	}
}

// isGRPC reports a gRPC content-type, as Envoy tells gRPC requests apart
// (application/grpc, application/grpc+proto, application/grpc;...;
// gRPC-Web is not: its status travels in the body).
func isGRPC(contentType string) bool {
	rest, ok := strings.CutPrefix(contentType, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// observeRequestHeaders starts an observation.
func (st *streamState) observeRequestHeaders(h *extprocv3.HttpHeaders, attrs map[string]*structpb.Struct) {
	o := &observation{start: time.Now()}
	st.obs = o
	hv := headerView{h.GetHeaders().GetHeaders()}
	if st.client == clientGRPC {
		o.grpc = true
	} else if ct, ok := hv.Get("content-type"); ok {
		o.grpc = isGRPC(ct)
	}
	if st.servedVariant != "" {
		o.variant = st.servedVariant
	} else if v, ok := hv.Get(config.VariantHeader); ok {
		o.variant = v
	}
	if r := st.server.rewards; r != nil && st.endpoint != "" {
		if hdr, ok := r.RewardHeader(st.endpoint); ok {
			o.bandit, o.rewardHeader = true, hdr
			o.requestID, _ = hv.Get(config.RequestIDHeader)
			_, o.unsampled = hv.Get(config.UnsampledHeader)
		}
	}
	if st.endpoint == "" || st.server.shadows == nil {
		return
	}
	begin := func(name, _, _ string) {
		if c := st.server.shadows.Begin(st.endpoint, name); c != nil {
			o.captures = append(o.captures, namedCapture{shadow: name, c: c})
		}
	}
	switch {
	case st.client == clientGRPC:
		// grpc-go streams every call's messages (GRPC body mode): sample.
		if st.server.sampler != nil {
			st.server.sampler.CompareShadows(st.endpoint, hv).Each(begin)
		}
	case st.capture == config.CaptureMarked:
		// Envoy, on a route that matched a compare shadow's mark: the
		// decision marked the request with x-modelsplit-shadow-<s> for
		// each compare shadow that samples it (clients' copies are
		// stripped), and the route streams the bodies.
		for _, kv := range h.GetHeaders().GetHeaders() {
			if name, ok := strings.CutPrefix(kv.GetKey(), config.ShadowHeader+"-"); ok {
				begin(name, "", "") // nil for mirror shadows: not compared
			}
		}
	case st.capture == config.CaptureSampled:
		// Envoy, on the route of an endpoint without the decision: every
		// request's bodies are streamed; sample here.
		if st.server.sampler != nil {
			st.server.sampler.CompareShadows(st.endpoint, hv).Each(begin)
		}
	default:
		// Envoy, on a route that streams no bodies: nothing to compare.
	}
	if st.client == clientEnvoy && o.grpc {
		for _, c := range o.captures {
			c.c.Framed() // Envoy streams the raw HTTP/2 bytes
		}
	}
	if len(o.captures) == 0 {
		return
	}
	o.header = http.Header{}
	for _, kv := range h.GetHeaders().GetHeaders() {
		k, val := kv.GetKey(), headerValue(kv)
		switch {
		case k == ":method":
			o.method = val
		case k == ":path":
			o.path = val
		case k == ":authority":
			o.authority = val
		case k == config.RequestIDHeader:
			o.requestID = val
			o.header.Add(k, val)
		case strings.HasPrefix(k, ":"), hopByHop(k), strings.HasPrefix(k, "x-modelsplit-"), strings.HasPrefix(k, "x-envoy-"):
		default:
			o.header.Add(k, val)
		}
	}
	if o.method == "" {
		o.method = http.MethodPost // gRPC clients send no :method
	}
	// grpc-go sends no pseudo-headers; the filter asks it for the method
	// path and authority as request attributes instead.
	if a := attrs[attributesKey].GetFields(); a != nil {
		if o.path == "" {
			o.path = a["request.path"].GetStringValue()
		}
		if o.authority == "" {
			o.authority = a["request.host"].GetStringValue()
		}
	}
}

func hopByHop(k string) bool {
	switch k {
	case "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "content-length", "host":
		return true
	}
	return false
}

func (st *streamState) observeRequestBody(b *extprocv3.HttpBody) {
	o := st.obs
	if o == nil || len(o.captures) == 0 {
		return
	}
	if len(b.GetBody()) == 0 {
		return // end of stream without a message, or an empty chunk
	}
	o.captures = keepCaptures(o.captures, func(c *shadow.Capture) bool { return c.Request(b.GetBody()) })
}

func (st *streamState) observeResponseHeaders(h *extprocv3.HttpHeaders) {
	o := st.obs
	if o == nil {
		return
	}
	if !o.responded {
		o.responded, o.latency = true, time.Since(o.start)
	}
	hv := headerView{h.GetHeaders().GetHeaders()}
	if v, ok := hv.Get(config.VariantHeader); ok && st.servedVariant == "" {
		o.variant = v // the variant of the host that answered (route header)
	}
	if o.rewardHeader != "" {
		o.reward, o.hasReward = hv.Get(o.rewardHeader)
	}
	if v, ok := hv.Get(config.FailoverHeader); ok && st.servedVariant == "" {
		o.failoverFrom = v
	}
	if st.client == clientGRPC {
		// grpc-go's filter sends response headers when the answer starts,
		// and trailers only when the caller reads past the last message,
		// which a unary call never does; and its trailers never carry
		// grpc-status (grpc-go strips it). So: headers that end the
		// stream are a trailers-only answer, an error (its code when
		// present, else Unknown); other headers mean the call succeeded.
		if h.GetEndOfStream() {
			o.code, o.hasCode = int(codes.Unknown), true
			if s, ok := hv.Get("grpc-status"); ok {
				o.setCode(s)
			}
			st.observeDone()
			return
		}
		o.code, o.hasCode = int(codes.OK), true
		st.record()
		if len(o.captures) == 0 {
			o.finished = true
		}
		return
	}
	if s, ok := hv.Get(":status"); ok {
		if n, err := strconv.Atoi(s); err == nil {
			o.httpStatus, o.hasHTTP = n, true
		}
	}
	if o.grpc {
		// Envoy: a trailers-only answer carries grpc-status here; any
		// other gRPC answer is counted when its trailers (or the end of
		// the stream) say how it ended.
		if s, ok := hv.Get("grpc-status"); ok {
			o.setCode(s)
			st.record()
		}
	} else {
		st.record() // HTTP: the status is known now
	}
	if h.GetEndOfStream() {
		st.observeDone()
	}
}

// setCode takes a grpc-status value; one that does not parse is Unknown,
// as gRPC clients read it.
func (o *observation) setCode(s string) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		n = int(codes.Unknown)
	}
	o.code, o.hasCode = n, true
}

func (st *streamState) observeResponseBody(b *extprocv3.HttpBody) {
	o := st.obs
	if o == nil {
		return
	}
	if len(o.captures) > 0 && len(b.GetBody()) > 0 {
		o.captures = keepCaptures(o.captures, func(c *shadow.Capture) bool { return c.Response(b.GetBody()) })
	}
	// HTTP: the last chunk ends the answer. gRPC through Envoy: the
	// trailers end it. Proxyless gRPC: compare mode handles unary calls,
	// whose one response message is the whole answer.
	if b.GetEndOfStream() || st.client == clientGRPC {
		st.observeDone()
	}
}

// observeResponseTrailers: the answer is over. From Envoy, the trailers
// of a gRPC answer carry its status; other answers seldom have trailers,
// and their status was counted at the headers.
func (st *streamState) observeResponseTrailers(t *extprocv3.HttpTrailers) {
	o := st.obs
	if o == nil {
		return
	}
	if s, ok := (headerView{t.GetTrailers().GetHeaders()}).Get("grpc-status"); ok && o.grpc && !o.hasCode {
		o.setCode(s)
	}
	st.observeDone()
}

// observeDone: the response is complete.
func (st *streamState) observeDone() {
	st.record()
	o := st.obs
	if o.finished {
		return
	}
	o.finished = true
	if len(o.captures) == 0 {
		return
	}
	status, ok := o.primaryStatus()
	if !ok {
		for _, c := range o.captures {
			c.c.Abort(shadow.DropIncomplete)
		}
		o.captures = nil
		return
	}
	x := shadow.Exchange{
		RequestID: o.requestID, Method: o.method, Path: o.path, Authority: o.authority,
		Header: o.header, PrimaryStatus: status, PrimaryLatency: time.Since(o.start),
	}
	for _, c := range o.captures {
		c.c.Finish(x)
	}
	o.captures = nil
}

// primaryStatus is what a shadow compares with: the gRPC code of a gRPC
// call (unknown without one), else the HTTP status.
func (o *observation) primaryStatus() (int, bool) {
	if o.grpc {
		return o.code, o.hasCode
	}
	return o.httpStatus, o.hasHTTP
}

// class is the status class: a gRPC call's by its code; one whose status
// never came (no trailers: the stream was reset after the headers, or
// the route sends no trailers) by its HTTP status, as Envoy's router
// counts it.
func (o *observation) class() stats.Class {
	if o.hasCode {
		return grpcClass(o.code)
	}
	return statusClass(o.httpStatus)
}

// record counts the request once, when its status is known: into the
// stats windows, which also export the Prometheus series.
func (st *streamState) record() {
	o := st.obs
	if o.recorded || !o.responded || !o.hasCode && !o.hasHTTP {
		return
	}
	o.recorded = true
	if o.variant == "" || st.endpoint == "" {
		st.observeResult = "no_variant"
		return
	}
	s := st.server.series.get(st.endpoint, o.variant)
	if s == nil {
		st.observeResult = "too_many_series"
		return
	}
	s.Request(o.class(), o.latency)
	if o.bandit {
		st.server.rewards.Observed(st.endpoint, o.variant, o.class(), o.latency, o.requestID, o.reward, o.hasReward, o.unsampled)
	}
	if o.failoverFrom != "" && o.failoverFrom != o.variant {
		if c := st.server.series.failover(st.endpoint, o.failoverFrom, o.variant); c != nil {
			c.Inc()
		}
	}
	st.observeResult = "observed"
}

// observeEnd runs when the stream ends: a response never seen means the
// client went away (or Envoy closed the stream after its deferred-close
// timeout); captures are dropped, counted as incomplete.
func (st *streamState) observeEnd() string {
	o := st.obs
	if o == nil {
		return "incomplete"
	}
	// An answer that started but never said how it ended (a gRPC call
	// without trailers) still counts, once, by what is known.
	st.record()
	if !o.recorded && o.variant != "" && st.endpoint != "" {
		// No status ever came (reset, or the client left): the windows
		// count it as ClassNone; Prometheus' series leave it out, as
		// they always did.
		if s := st.server.series.get(st.endpoint, o.variant); s != nil {
			s.Request(stats.ClassNone, 0)
		}
	}
	if !o.finished {
		for _, c := range o.captures {
			c.c.Abort("incomplete")
		}
		o.captures = nil
	}
	if st.observeResult == "" {
		if st.endpoint == "" {
			return "unknown_endpoint"
		}
		return "incomplete"
	}
	return st.observeResult
}

func keepCaptures(cs []namedCapture, ok func(*shadow.Capture) bool) []namedCapture {
	out := cs[:0]
	for _, c := range cs {
		if ok(c.c) {
			out = append(out, c) // a capture over budget dropped itself
		}
	}
	return out
}

// headerValue reads a HeaderValue the way Envoy fills it.
func headerValue(h *corev3.HeaderValue) string {
	if raw := h.GetRawValue(); len(raw) > 0 {
		return string(raw)
	}
	return h.GetValue()
}
