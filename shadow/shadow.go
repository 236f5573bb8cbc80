// Package shadow compares a shadow variant's answers with the primary's.
// The observe filter (package extproc) captures a sampled request and the
// primary's answer; the Manager replays the request to the shadow's
// backends off the request path, compares the two answers and records the
// result in metrics and a bounded ring of disagreement samples. Budgets
// (replays in flight, bytes held, a timeout) bound what it may use: past
// them an exchange is dropped and counted, and nothing ever waits.
package shadow

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/stats"
)

// Options configures a Manager.
type Options struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
}

// Exchange is what the observe filter knows of a sampled request, besides
// the bodies the Capture holds.
type Exchange struct {
	RequestID string      // x-request-id, or "" (one is generated)
	Method    string      // HTTP method; gRPC: POST
	Path      string      // :path (gRPC: /pkg.Service/Method)
	Authority string      // :authority
	Header    http.Header // request headers to replay (no pseudo, hop-by-hop or x-modelsplit-* headers)
	// PrimaryStatus is the HTTP status, or the gRPC status code (0 = OK).
	PrimaryStatus  int
	PrimaryLatency time.Duration
}

// Stats are one shadow's results since it was configured.
type Stats struct {
	Compared, Agreed, Errors, Dropped uint64
}

// Manager runs comparisons for every compare-mode shadow.
type Manager struct {
	log     *zap.Logger
	metrics *metrics.Metrics
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.RWMutex
	shadows map[string]*target // endpoint + "\x00" + shadow
	closed  bool
}

// NewManager returns a Manager with no shadows; SetConfig adds them.
func NewManager(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{log: opts.Logger, metrics: opts.Metrics, ctx: ctx, cancel: cancel, shadows: map[string]*target{}}
}

func key(endpoint, shadow string) string { return endpoint + "\x00" + shadow }

// target is one compare-mode shadow.
type target struct {
	log            *zap.Logger
	endpoint, name string
	fingerprint    string // config it was built from; unchanged → kept
	cfg            config.Compare
	grpc           bool
	cmp            *comparer
	paused         atomic.Bool
	backends       []string
	next           atomic.Uint32
	httpClient     *http.Client
	connsMu        sync.Mutex
	conns          map[string]*grpc.ClientConn

	ctx    context.Context // cancelled when the shadow is removed
	cancel context.CancelFunc

	bytes    atomic.Int64
	inFlight atomic.Int64
	resultMu sync.Mutex // compared, agreed and the agreement gauge
	compared atomic.Uint64
	agreed   atomic.Uint64
	errs     atomic.Uint64
	dropped  atomic.Uint64

	samplesMu sync.Mutex
	samples   []api.Sample // ring
	sampleAt  int          // next slot
	sampleN   int

	agree, disagree           prometheus.Counter
	agreement                 prometheus.Gauge
	results                   *stats.ShadowRecorder // per-window compared / agreed
	latencyDiff               prometheus.Observer
	errTransport, errStatus   prometheus.Counter
	drops                     map[string]prometheus.Counter
	droppedVec                *prometheus.CounterVec // reasons outside dropReasons
	inFlightGauge, bytesGauge prometheus.Gauge
}

// Drop reasons (the shadow_dropped_total reason label).
const (
	DropConcurrency = "concurrency"
	DropBytes       = "bytes"
	DropTimeout     = "timeout"
	DropIncomplete  = "incomplete"
	DropUnsupported = "unsupported"
	DropPaused      = "paused"
)

var dropReasons = []string{DropConcurrency, DropBytes, DropTimeout, DropIncomplete, DropUnsupported, DropPaused}

// SetConfig builds the compare-mode shadows of cfg. Shadows whose config
// did not change (pausing is not a change) keep their results, samples
// and connections; a changed one keeps its results and samples but gets
// new connections, and its replays in flight are cancelled (counted as
// "incomplete"); removed ones are closed and their replays cancelled.
// Safe to call concurrently with everything else.
func (m *Manager) SetConfig(cfg *config.Config) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	next := map[string]*target{}
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		for j := range e.Shadows {
			s := &e.Shadows[j]
			if s.Compare == nil {
				continue
			}
			k := key(e.Name, s.Name)
			fp := fingerprint(e, s)
			if old, ok := m.shadows[k]; ok && old.fingerprint == fp {
				old.paused.Store(s.Paused)
				next[k] = old
				continue
			}
			t, err := m.newTarget(e, s, fp)
			if err != nil {
				m.log.Error("compare shadow not started", zap.String("endpoint", e.Name), zap.String("shadow", s.Name), zap.Error(err))
				continue
			}
			if old, ok := m.shadows[k]; ok {
				t.inherit(old) // a budget change keeps the history
			}
			next[k] = t
		}
	}
	for k, old := range m.shadows {
		if next[k] != old {
			old.close()
		}
	}
	m.shadows = next
}

func fingerprint(e *config.Endpoint, s *config.Shadow) string {
	return fmt.Sprintf("%s|%v|%+v|%v|%s", e.ShadowProtocol(s), s.Backends, *s.Compare, s.Compare.Redact, s.Compare.Field)
}

// withDefaults fills budgets a config that skipped ApplyDefaults left at
// zero: a zero budget would drop every exchange.
func withDefaults(c config.Compare) config.Compare {
	if c.Timeout <= 0 {
		c.Timeout = config.DefaultCompareTimeout
	}
	if c.MaxConcurrency <= 0 {
		c.MaxConcurrency = config.DefaultCompareConcurrency
	}
	if c.MaxBytesInFlight <= 0 {
		c.MaxBytesInFlight = config.DefaultCompareBytes
	}
	if c.Samples <= 0 {
		c.Samples = config.DefaultCompareSamples
	}
	return c
}

func (m *Manager) newTarget(e *config.Endpoint, s *config.Shadow, fp string) (*target, error) {
	grpcShadow := e.ShadowProtocol(s) == config.ProtocolGRPC
	cmp, err := newComparer(s.Compare, grpcShadow)
	if err != nil {
		return nil, err
	}
	if len(s.Backends) == 0 {
		return nil, errors.New("the shadow has no backends")
	}
	cc := withDefaults(*s.Compare)
	ctx, cancel := context.WithCancel(m.ctx)
	t := &target{log: m.log.With(zap.String("endpoint", e.Name), zap.String("shadow", s.Name)),
		endpoint: e.Name, name: s.Name, fingerprint: fp, cfg: cc, grpc: grpcShadow, cmp: cmp,
		ctx: ctx, cancel: cancel, conns: map[string]*grpc.ClientConn{},
		samples: make([]api.Sample, cc.Samples)}
	t.paused.Store(s.Paused)
	for _, b := range s.Backends {
		t.backends = append(t.backends, b.String())
	}
	if !grpcShadow {
		tr := &http.Transport{MaxIdleConnsPerHost: max(cc.MaxConcurrency, 2), IdleConnTimeout: time.Minute}
		if e.ShadowProtocol(s) == config.ProtocolHTTP2 {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			tr.Protocols = &p
		}
		t.httpClient = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	mt := m.metrics
	t.agree = mt.ShadowComparisons.WithLabelValues(e.Name, s.Name, "agree")
	t.disagree = mt.ShadowComparisons.WithLabelValues(e.Name, s.Name, "disagree")
	t.agreement = mt.ShadowAgreement.WithLabelValues(e.Name, s.Name)
	t.results = mt.Stats.Shadow(e.Name, s.Name)
	t.latencyDiff = mt.ShadowLatencyDiff.WithLabelValues(e.Name, s.Name)
	t.errTransport = mt.ShadowErrors.WithLabelValues(e.Name, s.Name, "transport")
	t.errStatus = mt.ShadowErrors.WithLabelValues(e.Name, s.Name, "status")
	t.inFlightGauge = mt.ShadowInFlight.WithLabelValues(e.Name, s.Name)
	t.bytesGauge = mt.ShadowBytes.WithLabelValues(e.Name, s.Name)
	t.drops = map[string]prometheus.Counter{}
	t.droppedVec = mt.ShadowDropped
	for _, r := range dropReasons {
		t.drops[r] = mt.ShadowDropped.WithLabelValues(e.Name, s.Name, r)
	}
	return t, nil
}

// inherit carries results over from the target this one replaces.
func (t *target) inherit(old *target) {
	t.compared.Store(old.compared.Load())
	t.agreed.Store(old.agreed.Load())
	t.errs.Store(old.errs.Load())
	t.dropped.Store(old.dropped.Load())
	old.samplesMu.Lock()
	recent := old.recent() // newest first: add oldest first
	old.samplesMu.Unlock()
	for i := len(recent) - 1; i >= 0; i-- {
		t.addSampleLocked(recent[i])
	}
}

func (t *target) close() {
	t.cancel()
	t.connsMu.Lock()
	for _, c := range t.conns {
		_ = c.Close()
	}
	t.conns = map[string]*grpc.ClientConn{}
	t.connsMu.Unlock()
	if t.httpClient != nil {
		t.httpClient.CloseIdleConnections()
	}
}

func (m *Manager) target(endpoint, shadow string) *target {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.shadows[key(endpoint, shadow)]
}

func (t *target) drop(reason string) {
	t.dropped.Add(1)
	if c, ok := t.drops[reason]; ok {
		c.Inc()
		return
	}
	t.droppedVec.WithLabelValues(t.endpoint, t.name, reason).Inc() // a caller's own reason
}

// reserve takes n bytes from the shadow's budget; false (and nothing
// taken) when they do not fit.
func (t *target) reserve(n int64) bool {
	if n == 0 {
		return true
	}
	if t.bytes.Add(n) > t.cfg.MaxBytesInFlight {
		t.bytes.Add(-n)
		return false
	}
	t.bytesGauge.Add(float64(n))
	return true
}

func (t *target) unreserve(n int64) {
	if n > 0 {
		t.bytes.Add(-n)
		t.bytesGauge.Sub(float64(n))
	}
}

// Begin starts capturing one sampled exchange; nil when the shadow is not
// in compare mode, or is paused (counted).
func (m *Manager) Begin(endpoint, shadow string) *Capture {
	t := m.target(endpoint, shadow)
	if t == nil {
		return nil
	}
	if t.paused.Load() {
		t.drop(DropPaused)
		return nil
	}
	return &Capture{m: m, t: t}
}

// Capture holds one exchange's bodies against its shadow's byte budget.
// One request's observe stream uses it: it is not safe for concurrent use.
type Capture struct {
	m          *Manager
	t          *target
	req, resp  []byte
	held       int64
	reqN, resN int // messages seen (gRPC)
	framed     bool
	done       bool
}

// Framed says a gRPC shadow's bodies arrive as the bytes of the HTTP/2
// stream (length-prefixed messages, cut anywhere), as Envoy streams them to
// ext_proc, rather than one whole message per chunk as grpc-go's GRPC body
// mode sends them. Finish then takes the one message out of each body; a
// body holding more than one message (a streaming call) or a compressed
// one is dropped as unsupported, a cut-off one as incomplete.
func (c *Capture) Framed() {
	if c != nil {
		c.framed = true
	}
}

func (c *Capture) reserve(n int) bool {
	if c.done {
		return false
	}
	if !c.t.reserve(int64(n)) {
		c.Abort(DropBytes)
		return false
	}
	c.held += int64(n)
	return true
}

// Request appends a request body chunk (gRPC: one message). False means
// the capture was dropped (over the byte budget, or a streaming call).
func (c *Capture) Request(chunk []byte) bool {
	if c == nil || c.done {
		return false
	}
	if c.t.grpc && !c.framed {
		if c.reqN++; c.reqN > 1 {
			c.Abort(DropUnsupported) // client streaming: one call, many messages
			return false
		}
	}
	if !c.reserve(len(chunk)) {
		return false
	}
	c.req = append(c.req, chunk...)
	return true
}

// Response appends a response body chunk (gRPC: one message).
func (c *Capture) Response(chunk []byte) bool {
	if c == nil || c.done {
		return false
	}
	if c.t.grpc && !c.framed {
		if c.resN++; c.resN > 1 {
			c.Abort(DropUnsupported)
			return false
		}
	}
	if !c.reserve(len(chunk)) {
		return false
	}
	c.resp = append(c.resp, chunk...)
	return true
}

func (c *Capture) release() {
	c.t.unreserve(c.held)
	c.held = 0
	c.req, c.resp = nil, nil
}

// Abort drops the capture, counted under reason (DropIncomplete,
// DropUnsupported, ...), and releases its bytes. Later calls are no-ops.
func (c *Capture) Abort(reason string) {
	if c == nil || c.done {
		return
	}
	c.done = true
	c.release()
	c.t.drop(reason)
}

// Finish hands the exchange over for replay and comparison. It never
// blocks: past the shadow's concurrency budget the exchange is dropped.
func (c *Capture) Finish(x Exchange) {
	if c == nil || c.done {
		return
	}
	t := c.t
	if c.framed && t.grpc {
		req, reason := unframe(c.req, false)
		resp, respReason := unframe(c.resp, true)
		if reason == "" {
			reason = respReason
		}
		if reason != "" {
			c.Abort(reason)
			return
		}
		c.req, c.resp = req, resp
	}
	if t.inFlight.Add(1) > int64(t.cfg.MaxConcurrency) {
		t.inFlight.Add(-1)
		c.Abort(DropConcurrency)
		return
	}
	c.done = true
	t.inFlightGauge.Inc()
	if !c.m.track() {
		t.inFlight.Add(-1)
		t.inFlightGauge.Dec()
		c.done = false
		c.Abort(DropIncomplete) // the manager is closing
		return
	}
	go func() {
		defer c.m.wg.Done()
		defer func() {
			c.release()
			t.inFlight.Add(-1)
			t.inFlightGauge.Dec()
		}()
		t.replay(x, c.req, c.resp)
	}()
}

// unframe returns the one gRPC message in b, a stream's bytes: a 1-byte
// compressed flag, a 4-byte big-endian length, the message. A body with
// no message is allowed only where empty is (an answer that is an error
// status). The message shares b's memory.
func unframe(b []byte, emptyOK bool) ([]byte, string) {
	if len(b) == 0 {
		if emptyOK {
			return nil, ""
		}
		return nil, DropIncomplete
	}
	if len(b) < 5 {
		return nil, DropIncomplete
	}
	if b[0] != 0 {
		return nil, DropUnsupported // compressed (grpc-encoding): not replayed
	}
	n := uint64(b[1])<<24 | uint64(b[2])<<16 | uint64(b[3])<<8 | uint64(b[4])
	switch rest := uint64(len(b) - 5); {
	case rest < n:
		return nil, DropIncomplete
	case rest > n:
		return nil, DropUnsupported // more than one message: a streaming call
	}
	return b[5:], ""
}

// track registers a replay goroutine unless the manager is closed.
func (m *Manager) track() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	return true
}

// errOverBudget: the shadow's answer did not fit the byte budget.
var errOverBudget = errors.New("shadow answer over max_bytes_in_flight")

// answer is what the shadow replied.
type answer struct {
	status int    // HTTP status, or gRPC code
	body   []byte // held against the byte budget until released
	errMsg string // gRPC status message of a non-OK answer
}

// replay sends the request to the shadow and compares the answers.
func (t *target) replay(x Exchange, reqBody, primary []byte) {
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.Timeout.D())
	defer cancel()
	if x.RequestID == "" {
		x.RequestID = newRequestID()
	}
	start := time.Now()
	var (
		a   answer
		err error
	)
	if t.grpc {
		a, err = t.replayGRPC(ctx, x, reqBody)
	} else {
		a, err = t.replayHTTP(ctx, x, reqBody)
	}
	defer t.unreserve(int64(len(a.body)))
	latency := time.Since(start)
	if err != nil {
		switch {
		case errors.Is(err, errOverBudget):
			t.drop(DropBytes)
		case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded) && t.ctx.Err() == nil:
			t.drop(DropTimeout)
		case ctx.Err() != nil:
			t.drop(DropIncomplete) // the shadow was removed, or the manager closed
		default:
			t.errs.Add(1)
			t.errTransport.Inc()
			t.log.Debug("shadow replay failed", zap.String("request_id", x.RequestID), zap.Error(err))
			return
		}
		t.log.Debug("shadow replay dropped", zap.String("request_id", x.RequestID), zap.Error(err))
		return
	}
	reason := t.cmp.compare(x.PrimaryStatus, primary, a.status, a.body)
	if reason == reasonStatus && shadowFailed(t.grpc, x.PrimaryStatus, a.status) {
		t.errs.Add(1)
		t.errStatus.Inc()
	}
	if reason != "" {
		t.addSample(x, reason, a, latency, reqBody, primary)
	}
	// Counters and the ratio change together, so the gauge always ends
	// at agreed/compared whatever order replays finish in.
	t.resultMu.Lock()
	n := t.compared.Add(1)
	agreed := t.agreed.Load()
	if reason == "" {
		agreed = t.agreed.Add(1)
		t.agree.Inc()
	} else {
		t.disagree.Inc()
	}
	t.agreement.Set(float64(agreed) / float64(n))
	t.resultMu.Unlock()
	t.results.Compared(reason == "")
	t.latencyDiff.Observe((latency - x.PrimaryLatency).Seconds())
	// Checked first: the fields would be built (and escape) on every
	// replay even with debug logging off.
	if ce := t.log.Check(zap.DebugLevel, "shadow compared"); ce != nil {
		ce.Write(zap.String("request_id", x.RequestID), zap.Bool("agree", reason == ""),
			zap.String("reason", reason), zap.Int("primary_status", x.PrimaryStatus), zap.Int("shadow_status", a.status),
			zap.Duration("shadow_latency", latency))
	}
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "modelsplit-" + hex.EncodeToString(b[:])
}

// shadowFailed: the shadow answered an error status where the primary
// succeeded (gRPC: OK; HTTP: not a 5xx).
func shadowFailed(grpcShadow bool, primary, shadow int) bool {
	if grpcShadow {
		return primary == 0 && shadow != 0
	}
	return primary < 500 && shadow >= 500
}

func (t *target) pick() string {
	return t.backends[int(t.next.Add(1)-1)%len(t.backends)]
}

// readChunks holds the buffers replies are read through: 32 KiB each, one
// per replay in flight, reused rather than allocated per replay (at 500
// replays/s a fresh one each time was 16 MB/s of garbage).
var readChunks = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (t *target) replayHTTP(ctx context.Context, x Exchange, body []byte) (answer, error) {
	method := x.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+t.pick()+x.Path, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	if x.Header != nil {
		req.Header = x.Header.Clone() // the Exchange is shared by every shadow of the request
	}
	if req.Header.Get(config.RequestIDHeader) == "" {
		req.Header.Set(config.RequestIDHeader, x.RequestID)
	}
	if x.Authority != "" {
		req.Host = x.Authority
	}
	resp, err := t.httpClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	// The answer is held against the shadow's byte budget as it is read.
	a := answer{status: resp.StatusCode}
	if resp.ContentLength > t.cfg.MaxBytesInFlight {
		return answer{}, errOverBudget
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	chunkp := readChunks.Get().(*[]byte)
	defer readChunks.Put(chunkp)
	chunk := *chunkp
	for {
		n, err := resp.Body.Read(chunk)
		if n > 0 {
			if !t.reserve(int64(n)) {
				t.unreserve(int64(buf.Len()))
				return answer{}, errOverBudget
			}
			buf.Write(chunk[:n])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.unreserve(int64(buf.Len()))
			return answer{}, err
		}
	}
	a.body = buf.Bytes()
	return a, nil
}

func (t *target) conn(backend string) (*grpc.ClientConn, error) {
	t.connsMu.Lock()
	defer t.connsMu.Unlock()
	if c, ok := t.conns[backend]; ok {
		return c, nil
	}
	if t.ctx.Err() != nil {
		return nil, t.ctx.Err() // closed: do not leave a connection behind
	}
	c, err := grpc.NewClient("passthrough:///"+backend, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	t.conns[backend] = c
	return c, nil
}

// outgoingMD turns the replayed request's headers into gRPC metadata.
func outgoingMD(h http.Header, requestID string) metadata.MD {
	md := metadata.MD{}
	for k, vs := range h {
		k = strings.ToLower(k)
		switch {
		case k == "content-type", k == "te", k == "user-agent", k == "host", k == "content-length", k == "connection",
			strings.HasPrefix(k, "grpc-"), strings.HasPrefix(k, ":"):
			continue
		}
		if strings.HasSuffix(k, "-bin") {
			// Binary headers travel base64 encoded; grpc-go encodes them
			// again, so hand it the raw bytes.
			for _, v := range vs {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					b, err = base64.RawStdEncoding.DecodeString(v)
				}
				if err == nil {
					md[k] = append(md[k], string(b))
				}
			}
			continue
		}
		md[k] = append(md[k], vs...)
	}
	if len(md[config.RequestIDHeader]) == 0 {
		md[config.RequestIDHeader] = []string{requestID}
	}
	return md
}

func (t *target) replayGRPC(ctx context.Context, x Exchange, body []byte) (answer, error) {
	conn, err := t.conn(t.pick())
	if err != nil {
		return answer{}, err
	}
	ctx = metadata.NewOutgoingContext(ctx, outgoingMD(x.Header, x.RequestID))
	var out []byte
	limit := int(min(t.cfg.MaxBytesInFlight, math.MaxInt32))
	err = conn.Invoke(ctx, x.Path, body, &out, grpc.ForceCodecV2(rawCodec{}), grpc.WaitForReady(false), grpc.MaxCallRecvMsgSize(limit))
	st := status.Convert(err)
	switch {
	case err == nil:
		if !t.reserve(int64(len(out))) {
			return answer{}, errOverBudget
		}
		return answer{status: 0, body: out}, nil
	case ctx.Err() != nil:
		return answer{}, ctx.Err()
	case st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "larger than max"):
		return answer{}, errOverBudget // grpc-go refused the answer locally
	case st.Code() == codes.DeadlineExceeded:
		// The deadline travels in grpc-timeout: the shadow's side can
		// report it a moment before ours fires.
		return answer{}, context.DeadlineExceeded
	case st.Code() == codes.Unavailable:
		return answer{}, err // no answer: a transport error, not a comparison
	default:
		return answer{status: int(st.Code()), errMsg: st.Message()}, nil
	}
}

// rawCodec passes serialized messages through: replays need no protobuf
// types. Its name is "proto" so servers see application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*p = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

func (t *target) addSample(x Exchange, reason string, a answer, latency time.Duration, req, primary []byte) {
	s := api.Sample{
		Time: time.Now().UTC(), RequestID: x.RequestID, Method: x.Method, Path: x.Path, Reason: reason,
		PrimaryStatus: x.PrimaryStatus, ShadowStatus: a.status,
		PrimaryLatency: x.PrimaryLatency.Seconds(), ShadowLatency: latency.Seconds(),
		Request: t.cmp.render(req), Primary: t.cmp.render(primary), Shadow: t.cmp.render(a.body),
	}
	if t.grpc && a.status != 0 {
		// A status message may echo the request: with redaction
		// configured only the code is shown.
		s.Error = codes.Code(a.status).String()
		if !t.cmp.redacts() && a.errMsg != "" {
			s.Error += ": " + truncate(a.errMsg, 512)
		}
	}
	t.samplesMu.Lock()
	t.addSampleLocked(s)
	t.samplesMu.Unlock()
}

func (t *target) addSampleLocked(s api.Sample) {
	t.samples[t.sampleAt] = s
	t.sampleAt = (t.sampleAt + 1) % len(t.samples)
	t.sampleN = min(t.sampleN+1, len(t.samples))
}

// recent returns the samples newest first; callers hold samplesMu.
func (t *target) recent() []api.Sample {
	out := make([]api.Sample, 0, t.sampleN)
	for i := 1; i <= t.sampleN; i++ {
		out = append(out, t.samples[(t.sampleAt-i+len(t.samples))%len(t.samples)])
	}
	return out
}

// Samples returns the recent disagreements, newest first, configured
// fields redacted. ok is false for a shadow not in compare mode.
func (m *Manager) Samples(endpoint, shadow string) ([]api.Sample, bool) {
	t := m.target(endpoint, shadow)
	if t == nil {
		return nil, false
	}
	t.samplesMu.Lock()
	defer t.samplesMu.Unlock()
	return t.recent(), true
}

// Stats returns a shadow's results; ok is false when it is not in
// compare mode.
func (m *Manager) Stats(endpoint, shadow string) (Stats, bool) {
	t := m.target(endpoint, shadow)
	if t == nil {
		return Stats{}, false
	}
	return Stats{Compared: t.compared.Load(), Agreed: t.agreed.Load(), Errors: t.errs.Load(), Dropped: t.dropped.Load()}, true
}

// Close cancels replays in flight and waits for them.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	for _, t := range m.shadows {
		t.close()
	}
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	// A replay cancelled above may hand its connection back to the pool
	// after t.close() emptied it: close those too, now that none runs.
	m.mu.Lock()
	for _, t := range m.shadows {
		if t.httpClient != nil {
			t.httpClient.CloseIdleConnections()
		}
	}
	m.mu.Unlock()
}
