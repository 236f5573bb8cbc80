package extproc_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc"
	"github.com/modelsplit/modelsplit/extproc/extproctest"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/shadow"
)

type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

// startEchoShadow is a gRPC shadow answering every call with its request.
func startEchoShadow(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	calls := new(atomic.Int64)
	s := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		calls.Add(1)
		var req []byte
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		return stream.SendMsg(req)
	}))
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), calls
}

type observeHarness struct {
	conn    *grpc.ClientConn
	shadows *shadow.Manager
}

// startObserve serves endpoint "m" (gRPC, sticky on x-user-id) with a
// compare shadow "c" on every user at shadowAddr and a mirror shadow "mm"
// on every user.
func startObserve(t *testing.T, shadowAddr string) *observeHarness {
	t.Helper()
	cfg, err := config.Parse("test.yaml", fmt.Appendf(nil, `
endpoints:
  - name: m
    protocol: grpc
    match: {path_prefix: /pkg.Svc/}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
    shadows:
      - {name: c, percent: 100, backends: [%q], compare: {}}
      - {name: mm, percent: 100, backends: ["10.0.0.9:80"]}
`, shadowAddr))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	engine := cohort.NewEngine(cohort.NewMemoryStore(1000), cohort.Options{Metrics: m})
	engine.SetConfig(cfg)
	t.Cleanup(func() { engine.Close() })
	mgr := shadow.NewManager(shadow.Options{Metrics: m})
	mgr.SetConfig(cfg)
	t.Cleanup(mgr.Close)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extproc.NewServer(engine, extproc.Options{Metrics: m, Shadows: mgr}).Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &observeHarness{conn: conn, shadows: mgr}
}

// The decision marks Envoy requests for both kinds of shadow: the mirror's
// cluster_header and the compare route (bodies to the observe filter).
// grpc-go can neither mirror nor re-route, so its requests are not marked.
func TestDecisionMarksShadowsForEnvoyOnly(t *testing.T) {
	h := startObserve(t, "127.0.0.1:1")
	for _, tc := range []struct {
		client string
		want   bool
	}{{"envoy", true}, {"grpc", false}} {
		res, err := extproctest.Do(context.Background(), h.conn, extproctest.Request{
			Metadata: map[string]string{config.ClientMetadataKey: tc.client, config.EndpointMetadataKey: "m"},
			Headers:  []extproctest.Header{extproctest.H("x-user-id", "u1")},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"c", "mm"} {
			v, ok := extproctest.Get(res.RequestHeaders, config.ShadowHeaderFor(s))
			if ok != tc.want || (ok && v != "m/"+s) {
				t.Errorf("%s client: %s = %q (present %v), want present %v with m/%s", tc.client, config.ShadowHeaderFor(s), v, ok, tc.want, s)
			}
		}
	}
}

func hdrs(kv ...string) *extprocv3.HttpHeaders {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.HttpHeaders{Headers: hm}
}

func grpcFrame(msg []byte) []byte {
	return append([]byte{0, byte(len(msg) >> 24), byte(len(msg) >> 16), byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

// observe sends one exchange to the observe filter as Envoy does in
// observability mode (no replies), then ends the stream. capture is the
// route's config.CaptureMetadataKey ("" on routes that stream no bodies).
func observe(t *testing.T, conn *grpc.ClientConn, capture string, msgs ...*extprocv3.ProcessingRequest) {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(context.Background(), config.ClientMetadataKey, "envoy", config.EndpointMetadataKey, "m")
	if capture != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, config.CaptureMetadataKey, capture)
	}
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		m.ObservabilityMode = true
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	_ = stream.CloseSend()
	_, _ = stream.Recv() // the server ends the stream when it sees ours end
}

func reqHeaders(marked bool) *extprocv3.ProcessingRequest {
	kv := []string{":method", "POST", ":path", "/pkg.Svc/Predict", ":authority", "gw", "content-type", "application/grpc",
		"te", "trailers", "x-user-id", "u1", config.VariantHeader, "a"}
	if marked {
		kv = append(kv, config.ShadowHeaderFor("c"), "m/c", config.ShadowHeaderFor("mm"), "m/mm")
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(kv...)}}
}

func body(response bool, b []byte, end bool) *extprocv3.ProcessingRequest {
	hb := &extprocv3.HttpBody{Body: b, EndOfStream: end}
	if response {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: hb}}
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: hb}}
}

func respHeaders(end bool, kv ...string) *extprocv3.ProcessingRequest {
	h := hdrs(kv...)
	h.EndOfStream = end
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: h}}
}

func trailers(kv ...string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{
		ResponseTrailers: &extprocv3.HttpTrailers{Trailers: hdrs(kv...).GetHeaders()}}}
}

func waitShadowStats(t *testing.T, m *shadow.Manager, done func(shadow.Stats) bool) shadow.Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := m.Stats("m", "c")
		if done(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A gRPC call through Envoy, as Envoy streams it to the observe filter on
// a compare route: the raw HTTP/2 body (length-prefixed message, cut
// anywhere), the answer ended by trailers carrying grpc-status. It is
// compared with the message unframed; an unmarked call, or a marked one on
// a route that streams no bodies, is not captured; a trailers-only error
// answer is compared on its grpc-status. On the route of an endpoint
// without the decision (capture "sampled") the server samples unmarked
// calls itself.
func TestObserveGRPCThroughEnvoy(t *testing.T) {
	addr, calls := startEchoShadow(t)
	h := startObserve(t, addr)
	msg := []byte("\x08\x2a") // field 1 = 42
	req, resp := grpcFrame(msg), grpcFrame(msg)

	observe(t, h.conn, config.CaptureMarked,
		reqHeaders(true), body(false, req[:3], false), body(false, req[3:], true),
		respHeaders(false, ":status", "200", "content-type", "application/grpc"),
		body(true, resp[:6], false), body(true, resp[6:], false), // the last DATA frame does not end the stream: trailers do
		trailers("grpc-status", "0"))
	st := waitShadowStats(t, h.shadows, func(s shadow.Stats) bool { return s.Compared+s.Dropped+s.Errors >= 1 })
	if st.Compared != 1 || st.Agreed != 1 || st.Dropped != 0 || st.Errors != 0 || calls.Load() != 1 {
		t.Fatalf("marked call: stats %+v, %d shadow calls; want compared and agreed once", st, calls.Load())
	}

	observe(t, h.conn, config.CaptureMarked,
		reqHeaders(false), body(false, req, true),
		respHeaders(false, ":status", "200", "content-type", "application/grpc"), body(true, resp, false),
		trailers("grpc-status", "0"))
	observe(t, h.conn, "", // a marked call on a route without bodies (Envoy not yet holding the compare routes)
		reqHeaders(true), respHeaders(false, ":status", "200", "content-type", "application/grpc"), trailers("grpc-status", "0"))
	time.Sleep(100 * time.Millisecond)
	if st, _ := h.shadows.Stats("m", "c"); st.Compared != 1 || st.Dropped != 0 || calls.Load() != 1 {
		t.Errorf("an unmarked call, or one on a route without bodies, was captured: stats %+v, %d shadow calls", st, calls.Load())
	}

	// Trailers-only: the primary failed (UNAVAILABLE) without a message;
	// the shadow answers OK: compared, a status disagreement.
	observe(t, h.conn, config.CaptureMarked,
		reqHeaders(true), body(false, req, true),
		respHeaders(true, ":status", "200", "content-type", "application/grpc", "grpc-status", "14"))
	st = waitShadowStats(t, h.shadows, func(s shadow.Stats) bool { return s.Compared >= 2 })
	if st.Compared != 2 || st.Agreed != 1 || st.Dropped != 0 {
		t.Errorf("trailers-only answer: stats %+v, want 2 compared, 1 agreed", st)
	}

	// No trailers (a route that does not send them): never complete.
	observe(t, h.conn, config.CaptureMarked,
		reqHeaders(true), body(false, req, true),
		respHeaders(false, ":status", "200", "content-type", "application/grpc"), body(true, resp, false))
	st = waitShadowStats(t, h.shadows, func(s shadow.Stats) bool { return s.Dropped >= 1 })
	if st.Compared != 2 || st.Dropped != 1 {
		t.Errorf("call without trailers: stats %+v, want it dropped as incomplete", st)
	}

	// decide: false: no marks; the route says to sample (every user here).
	observe(t, h.conn, config.CaptureSampled,
		reqHeaders(false), body(false, req, true),
		respHeaders(false, ":status", "200", "content-type", "application/grpc"), body(true, resp, false),
		trailers("grpc-status", "0"))
	st = waitShadowStats(t, h.shadows, func(s shadow.Stats) bool { return s.Compared >= 3 })
	if st.Compared != 3 || st.Agreed != 2 {
		t.Errorf("sampled route: stats %+v, want the unmarked call compared (3 compared, 2 agreed)", st)
	}
}

// Envoy may end a streamed answer with an empty data frame (end_of_stream
// and nothing else). An empty chunk carries no message: a call whose
// content-type is not gRPC's (so the capture is not framed) answered with
// one message then an empty last chunk is still compared, not dropped as
// a second message.
func TestObserveEmptyLastChunkIsNoMessage(t *testing.T) {
	addr, _ := startEchoShadow(t)
	h := startObserve(t, addr)
	headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(
		":method", "POST", ":path", "/pkg.Svc/Predict", ":authority", "gw", "content-type", "application/octet-stream",
		"x-user-id", "u1", config.VariantHeader, "a", config.ShadowHeaderFor("c"), "m/c")}}
	observe(t, h.conn, config.CaptureMarked, headers, body(false, []byte("q"), true),
		respHeaders(false, ":status", "200"), body(true, []byte("q"), false), body(true, nil, true))
	st := waitShadowStats(t, h.shadows, func(s shadow.Stats) bool { return s.Compared+s.Dropped+s.Errors >= 1 })
	if st.Compared != 1 || st.Dropped != 0 {
		t.Fatalf("shadow stats %+v, want the exchange compared and none dropped", st)
	}
}
