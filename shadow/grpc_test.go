package shadow_test

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/shadow"
)

// bytesCodec lets the test server handle messages as raw bytes.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}
func (bytesCodec) Name() string { return "proto" }

// Messages on the wire:
//
//	request  { 1: input (varint), 3: { 1: user (string) } }
//	response { 1: label (string), 2: score (double), 3: { 1: user (string) }, 4: class (varint) }
func grpcRequest(input int, user string) []byte {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(input))
	return appendUser(b, user)
}

func appendUser(b []byte, user string) []byte {
	var u []byte
	u = protowire.AppendTag(u, 1, protowire.BytesType)
	u = protowire.AppendString(u, user)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendBytes(b, u)
}

func grpcResponse(label string, score float64, user string, class uint64) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, label)
	b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(score))
	b = appendUser(b, user)
	if class != 0 { // proto3 leaves defaults out
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, class)
	}
	return b
}

func decodeInput(b []byte) (input int, user string) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		b = b[l:]
		switch {
		case n == 1 && typ == protowire.VarintType:
			v, k := protowire.ConsumeVarint(b)
			input, b = int(v), b[k:]
		case n == 3 && typ == protowire.BytesType:
			v, k := protowire.ConsumeBytes(b)
			_, _, l := protowire.ConsumeTag(v)
			s, _ := protowire.ConsumeString(v[l:])
			user, b = s, b[k:]
		default:
			b = b[protowire.ConsumeFieldValue(n, typ, b):]
		}
	}
	return input, user
}

// shadowModel is the shadow's logic for input i: label "b" where
// i%5 == 0, score i/100 + 0.05 where i%4 == 0, class 0 or 1, and
// codes.Internal where i%25 == 7.
func shadowModel(i int) (label string, score float64, class uint64, code codes.Code) {
	label, score = "a", float64(i)/100
	if i%5 == 0 {
		label = "b"
	}
	if i%4 == 0 {
		score += 0.05
	}
	if i%25 == 7 {
		code = codes.Internal
	}
	return label, score, uint64(i % 2), code
}

func primaryModel(i int, user string) []byte {
	return grpcResponse("a", float64(i)/100, user, uint64(i%2))
}

type grpcBackend struct {
	addr  string
	calls atomic.Int64
	bad   atomic.Int64 // calls that did not look like the replayed request
	srv   *grpc.Server
}

func startGRPC(t *testing.T) *grpcBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &grpcBackend{addr: lis.Addr().String()}
	g.srv = grpc.NewServer(grpc.ForceServerCodecV2(bytesCodec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		g.calls.Add(1)
		method, _ := grpc.MethodFromServerStream(stream)
		md, _ := metadata.FromIncomingContext(stream.Context())
		var req []byte
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		input, user := decodeInput(req)
		if method != "/inference.Model/Predict" || len(md.Get("x-user")) != 1 || md.Get("x-user")[0] != "u1" ||
			len(md.Get("trace-bin")) != 1 || md.Get("trace-bin")[0] != "\x00\x01" || len(md.Get("x-request-id")) != 1 {
			g.bad.Add(1)
			return status.Error(codes.InvalidArgument, "not the replayed request")
		}
		if input == 999 {
			<-stream.Context().Done() // hangs until the client gives up
			return stream.Context().Err()
		}
		label, score, class, code := shadowModel(input)
		if code != codes.OK {
			return status.Errorf(code, "model failed for %s", user)
		}
		return stream.SendMsg(grpcResponse(label, score, user, class))
	}))
	go g.srv.Serve(lis)
	t.Cleanup(g.srv.Stop)
	return g
}

func grpcExchange() shadow.Exchange {
	return shadow.Exchange{Method: "POST", Path: "/inference.Model/Predict", PrimaryStatus: 0, PrimaryLatency: time.Millisecond,
		Header: http.Header{"X-User": {"u1"}, "Trace-Bin": {"AAE="}, "Content-Type": {"application/grpc"}, "Te": {"trailers"}, "Grpc-Timeout": {"1S"}}}
}

func runGRPC(t *testing.T, m *shadow.Manager, mt *metrics.Metrics, n int) shadow.Stats {
	t.Helper()
	before, _ := m.Stats("m", "s")
	for i := 0; i < n; i++ {
		c := m.Begin("m", "s")
		if !c.Request(grpcRequest(i, fmt.Sprintf("user-%d", i))) || !c.Response(primaryModel(i, fmt.Sprintf("user-%d", i))) {
			t.Fatal("capture refused")
		}
		c.Finish(grpcExchange())
	}
	waitGauge(t, mt, "s", 0)
	st, _ := m.Stats("m", "s")
	st.Compared -= before.Compared
	st.Agreed -= before.Agreed
	st.Errors -= before.Errors
	st.Dropped -= before.Dropped
	return st
}

func TestGRPCAgreement(t *testing.T) {
	b1, b2 := startGRPC(t), startGRPC(t)
	const n = 100
	// Inputs 0..99: 4 fail with Internal (i%25 == 7: 7, 32, 57, 82).
	for _, tc := range []struct {
		field     string
		tolerance float64
		agreed    uint64
	}{
		{"1", 0, 76},     // label differs where i%5 == 0: 20 of the 96 answered
		{"2", 0, 72},     // score differs where i%4 == 0: 24 of 96
		{"2", 0.05, 96},  // ... by exactly the tolerance
		{"2", 0.049, 72}, // ... just above it
		{"4", 0, 96},     // class 0 is absent from both answers: agrees
		{"3.1", 0, 96},   // nested user echoed
		{"", 0, 57},      // whole message: label or score differ on 39 (20 + 24 - 5 both)
	} {
		t.Run(fmt.Sprintf("field=%s,tolerance=%v", tc.field, tc.tolerance), func(t *testing.T) {
			mt := metrics.New()
			m := shadow.NewManager(shadow.Options{Metrics: mt})
			defer m.Close()
			m.SetConfig(shadowCfg(t, config.ProtocolGRPC, []string{b1.addr, b2.addr}, config.Compare{Field: tc.field, Tolerance: tc.tolerance, MaxConcurrency: n}))
			st := runGRPC(t, m, mt, n)
			if st.Compared != n || st.Agreed != tc.agreed || st.Errors != 4 {
				t.Fatalf("stats %+v, want %d compared, %d agreed, 4 status errors", st, n, tc.agreed)
			}
			if got := testutil.ToFloat64(mt.ShadowErrors.WithLabelValues("m", "s", "status")); got != 4 {
				t.Errorf("status errors %v, want 4", got)
			}
			if got, want := testutil.ToFloat64(mt.ShadowAgreement.WithLabelValues("m", "s")), float64(tc.agreed)/n; got != want {
				t.Errorf("agreement %v, want %v", got, want)
			}
			samples, _ := m.Samples("m", "s")
			statusSamples := 0
			for _, s := range samples {
				if s.Reason == "status" {
					statusSamples++
					if s.ShadowStatus != int(codes.Internal) || !strings.HasPrefix(s.Error, "Internal: model failed for user-") {
						t.Errorf("status sample %+v", s)
					}
				}
			}
			if statusSamples != 4 || len(samples) != int(n-tc.agreed) {
				t.Errorf("%d samples (%d status), want %d (4)", len(samples), statusSamples, n-tc.agreed)
			}
		})
	}
	if b1.bad.Load()+b2.bad.Load() != 0 {
		t.Errorf("%d replays did not carry the request's method and metadata", b1.bad.Load()+b2.bad.Load())
	}
	if c1, c2 := b1.calls.Load(), b2.calls.Load(); c1 != c2 || c1+c2 != 7*n {
		t.Errorf("round robin: %d and %d calls", c1, c2)
	}
}

func TestGRPCRedactedSamples(t *testing.T) {
	b := startGRPC(t)
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(shadowCfg(t, config.ProtocolGRPC, []string{b.addr}, config.Compare{Field: "1", Redact: []string{"3.1"}}))
	c := m.Begin("m", "s")
	c.Request(grpcRequest(5, "secret-user"))
	c.Response(primaryModel(5, "secret-user"))
	c.Finish(grpcExchange())
	c = m.Begin("m", "s")
	c.Request(grpcRequest(7, "secret-user"))
	c.Response(primaryModel(7, "secret-user"))
	c.Finish(grpcExchange())
	st := waitStats(t, m, func(s shadow.Stats) bool { return s.Compared == 2 })
	if st.Compared != 2 || st.Agreed != 0 {
		t.Fatalf("stats %+v", st)
	}
	samples, _ := m.Samples("m", "s")
	if len(samples) != 2 {
		t.Fatalf("%d samples", len(samples))
	}
	for _, s := range samples {
		if strings.Contains(s.Request+s.Primary+s.Shadow+s.Error, "secret") {
			t.Errorf("redacted field leaked: %+v", s)
		}
		if s.Reason == "field" {
			if want := `{1: "b", 2: 0.05, 3: {1: [redacted]}, 4: 1}`; s.Shadow != want {
				t.Errorf("shadow rendered %s, want %s", s.Shadow, want)
			}
			if want := `{1: 5, 3: {1: [redacted]}}`; s.Request != want {
				t.Errorf("request rendered %s, want %s", s.Request, want)
			}
		}
	}
}

func TestGRPCStreamingUnsupported(t *testing.T) {
	b := startGRPC(t)
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(shadowCfg(t, config.ProtocolGRPC, []string{b.addr}, config.Compare{}))
	c := m.Begin("m", "s")
	if !c.Request(grpcRequest(1, "u")) {
		t.Fatal("first message refused")
	}
	if c.Request(grpcRequest(2, "u")) {
		t.Error("a second request message was accepted for a unary replay")
	}
	c.Finish(grpcExchange()) // a no-op now
	c = m.Begin("m", "s")
	c.Request(grpcRequest(1, "u"))
	c.Response(primaryModel(1, "u"))
	if c.Response(primaryModel(1, "u")) {
		t.Error("a second response message was accepted")
	}
	if got := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "s", "unsupported")); got != 2 {
		t.Errorf("unsupported drops %v, want 2", got)
	}
	if got := testutil.ToFloat64(mt.ShadowBytes.WithLabelValues("m", "s")); got != 0 {
		t.Errorf("bytes held %v after the drops", got)
	}
	if st, _ := m.Stats("m", "s"); st.Dropped != 2 || st.Compared != 0 || b.calls.Load() != 0 {
		t.Errorf("stats %+v, %d calls: a dropped capture was replayed", st, b.calls.Load())
	}
}

func TestGRPCTransportErrorAndTimeout(t *testing.T) {
	lg := zaptest.NewLogger(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	b := startGRPC(t)
	before := runtime.NumGoroutine()
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt, Logger: lg})
	cfg := shadowCfg(t, config.ProtocolGRPC, []string{closed}, config.Compare{Timeout: config.Duration(200 * time.Millisecond)})
	m.SetConfig(cfg)
	if st := runGRPC(t, m, mt, 1); st.Errors != 1 || st.Compared != 0 {
		t.Errorf("closed port: stats %+v, want one transport error", st)
	}
	if got := testutil.ToFloat64(mt.ShadowErrors.WithLabelValues("m", "s", "transport")); got != 1 {
		t.Errorf("transport errors %v", got)
	}

	cfg.Endpoints[0].Shadows[0].Backends = []config.Backend{mustBackend(t, b.addr)}
	m.SetConfig(cfg)
	c := m.Begin("m", "s")
	c.Request(grpcRequest(999, "u")) // the backend hangs on 999
	c.Response(primaryModel(999, "u"))
	c.Finish(grpcExchange())
	if st := waitStats(t, m, func(s shadow.Stats) bool { return s.Dropped == 1 }); st.Dropped != 1 {
		samples, _ := m.Samples("m", "s")
		t.Errorf("hung replay: stats %+v %+v", st, samples)
	}
	if got := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "s", "timeout")); got != 1 {
		t.Errorf("timeout drops %v, want 1", got)
	}
	m.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: %d before the manager, %d after Close", before, n)
	}
}

// frame is msgs as the bytes of a gRPC HTTP/2 stream (what Envoy's
// ext_proc filter streams): each a compressed flag, a 4-byte length, the
// message.
func frame(compressed bool, msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		flag := byte(0)
		if compressed {
			flag = 1
		}
		b = append(b, flag, byte(len(m)>>24), byte(len(m)>>16), byte(len(m)>>8), byte(len(m)))
		b = append(b, m...)
	}
	return b
}

// chunks cuts b into pieces of at most n bytes, the way HTTP/2 DATA
// frames may cut a message (even inside its 5-byte prefix).
func chunks(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// TestGRPCFramedCapture: bodies captured as Envoy streams them (framed,
// cut anywhere) are unframed before the replay and the comparison; a
// second message, a compressed one or a cut-off one is dropped, and an
// error answer with no message is compared on its status.
func TestGRPCFramedCapture(t *testing.T) {
	b := startGRPC(t)
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(shadowCfg(t, config.ProtocolGRPC, []string{b.addr}, config.Compare{Field: "1", MaxConcurrency: 100}))
	capture := func(req, resp []byte, size int, status int) {
		c := m.Begin("m", "s")
		c.Framed()
		for _, ch := range chunks(req, size) {
			if !c.Request(ch) {
				t.Fatal("request chunk refused")
			}
		}
		for _, ch := range chunks(resp, size) {
			if len(ch) > 0 && !c.Response(ch) {
				t.Fatal("response chunk refused")
			}
		}
		x := grpcExchange()
		x.PrimaryStatus = status
		c.Finish(x)
	}
	// Inputs 1..12, cut into 3-byte chunks: label "b" where i%5 == 0
	// (5, 10 disagree), 7 fails with Internal on the shadow.
	for i := 1; i <= 12; i++ {
		capture(frame(false, grpcRequest(i, "u1")), frame(false, primaryModel(i, "u1")), 3, 0)
	}
	// The primary failed with Unavailable and sent no message; the
	// shadow answers: a status disagreement, compared.
	capture(frame(false, grpcRequest(1, "u1")), nil, 4, int(codes.Unavailable))
	st := waitStats(t, m, func(s shadow.Stats) bool { return s.Compared == 13 })
	if st.Compared != 13 || st.Agreed != 9 || st.Dropped != 0 || b.bad.Load() != 0 {
		t.Fatalf("stats %+v (bad replays %d), want 13 compared, 9 agreed (5, 10: label; 7: status; the failed primary: status)", st, b.bad.Load())
	}

	// Dropped before any replay.
	calls := b.calls.Load()
	capture(frame(false, grpcRequest(1, "u1"), grpcRequest(2, "u1")), frame(false, primaryModel(1, "u1")), 7, 0)  // client streaming
	capture(frame(false, grpcRequest(1, "u1")), frame(false, primaryModel(1, "u1"), primaryModel(2, "u1")), 7, 0) // server streaming
	capture(frame(true, grpcRequest(1, "u1")), frame(false, primaryModel(1, "u1")), 7, 0)                         // compressed
	capture(frame(false, grpcRequest(1, "u1"))[:8], frame(false, primaryModel(1, "u1")), 7, 0)                    // cut off
	capture(nil, frame(false, primaryModel(1, "u1")), 7, 0)                                                       // no request message
	if got := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "s", "unsupported")); got != 3 {
		t.Errorf("unsupported drops %v, want 3 (two streaming, one compressed)", got)
	}
	if got := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "s", "incomplete")); got != 2 {
		t.Errorf("incomplete drops %v, want 2", got)
	}
	if got := testutil.ToFloat64(mt.ShadowBytes.WithLabelValues("m", "s")); got != 0 {
		t.Errorf("bytes held %v after the drops", got)
	}
	if b.calls.Load() != calls {
		t.Errorf("%d dropped captures were replayed", b.calls.Load()-calls)
	}
}
