package extproc_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/cohort/picktest"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc"
	"github.com/modelsplit/modelsplit/extproc/extproctest"
	"github.com/modelsplit/modelsplit/metrics"
)

const testConfig = `
endpoints:
  - name: face
    match: {path_prefix: /face}
    sticky: {header: x-user-id}
    allow_target: true
    variants:
      - {name: a, weight: 50, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 50, backends: ["10.0.0.2:80"]}
    rules:
      - {header: x-region, equals: eu, variant: b}
  - name: anon
    match: {path_prefix: /anon}
    sticky: {cookie: uid, mint_cookie: true, ttl: 24h}
    variants:
      - {name: only, weight: 1, backends: ["10.0.0.3:80"]}
`

type harness struct {
	conn    *grpc.ClientConn
	metrics *metrics.Metrics
	engine  *cohort.Engine
}

// start runs the real server with the real engine (memory store) on a real
// listener (TCP on 127.0.0.1:0, or a unix socket path).
func start(t *testing.T, addr string) *harness {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	engine := cohort.NewEngine(cohort.NewMemoryStore(1000), cohort.Options{Metrics: m})
	engine.SetConfig(cfg)
	t.Cleanup(func() { engine.Close() })
	lis, err := extproc.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extproc.NewServer(engine, extproc.Options{Metrics: m}).Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	target := lis.Addr().String()
	if lis.Addr().Network() == "unix" {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &harness{conn: conn, metrics: m, engine: engine}
}

func envoyMD(endpoint string) map[string]string {
	return map[string]string{config.ClientMetadataKey: "envoy", config.EndpointMetadataKey: endpoint}
}

func TestEnvoyClientGetsRawValueAndRouteCacheClear(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx := context.Background()
	seen := map[string]string{}
	for _, user := range []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"} {
		for i := 0; i < 3; i++ {
			res, err := extproctest.Do(ctx, h.conn, extproctest.Request{
				Metadata: envoyMD("face"),
				Headers:  []extproctest.Header{extproctest.H(":path", "/face/x"), extproctest.H("x-user-id", user)},
			})
			if err != nil {
				t.Fatal(err)
			}
			v, ok := extproctest.Get(res.RequestHeaders, config.VariantHeader)
			if !ok || (v != "a" && v != "b") {
				t.Fatalf("user %s: variant header %q (%v), headers %v", user, v, ok, res.RequestHeaders)
			}
			if !res.RouteCacheCleared {
				t.Errorf("route cache not cleared: Envoy would keep the fallback route")
			}
			if prev, ok := seen[user]; ok && prev != v {
				t.Errorf("user %s moved from %s to %s", user, prev, v)
			}
			seen[user] = v
		}
	}
	// The server sees each stream end just after the client returns.
	waitCounter(t, func() float64 { return testutil.ToFloat64(h.metrics.ExtProcStreams.WithLabelValues("envoy", "ok")) }, 24)
}

// A client-sent x-modelsplit-variant must never decide; the rule does.
func TestClientCannotPickVariant(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	res, err := extproctest.Do(context.Background(), h.conn, extproctest.Request{
		Metadata: envoyMD("face"),
		Headers:  []extproctest.Header{extproctest.H("x-user-id", "u1"), extproctest.H("x-region", "eu"), extproctest.H(config.VariantHeader, "a")},
	})
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, hd := range res.RequestHeaders {
		if hd.Key == config.VariantHeader {
			values = append(values, hd.Value)
		}
	}
	if len(values) != 1 || values[0] != "b" {
		t.Fatalf("variant headers after mutation = %v, want exactly [b] (rule x-region=eu, overwrite)", values)
	}
}

func TestExplicitTarget(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	for _, want := range []string{"a", "b"} {
		res, err := extproctest.Do(context.Background(), h.conn, extproctest.Request{
			Metadata: envoyMD("face"),
			Headers:  []extproctest.Header{extproctest.H("x-user-id", "u1"), extproctest.H(config.TargetHeader, want)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := extproctest.Get(res.RequestHeaders, config.VariantHeader); v != want {
			t.Errorf("target %s: got variant %q", want, v)
		}
	}
}

// grpc-go reads HeaderValue.value; the server must fill value, not
// raw_value, when the stream says the client is grpc.
// grpc-go sends request headers in `value`, not `raw_value`: the decision
// must read them there. A rule header and an explicit target carried only
// in `value` must decide (a reader that saw them as empty would hash the
// user instead), and the answer itself goes back in `value`.
func TestGRPCClientGetsValue(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	decideWith := func(hs ...*corev3.HeaderValue) *corev3.HeaderValueOption {
		t.Helper()
		ctx := metadata.AppendToOutgoingContext(context.Background(), config.ClientMetadataKey, "grpc", config.EndpointMetadataKey, "face")
		stream, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: hs},
		}}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		set := resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()
		if len(set) != 1 {
			t.Fatalf("set headers = %v", set)
		}
		return set[0]
	}
	// Users the hash puts on a, so only a rule or target read from `value`
	// can move them to b.
	var onA []string
	for i := 0; len(onA) < 20; i++ {
		u := fmt.Sprintf("value-user-%d", i)
		if picktest.Variant("", u, []string{"a", "b"}, []int{50, 50}) == "a" {
			onA = append(onA, u)
		}
	}
	for _, u := range onA {
		got := decideWith(&corev3.HeaderValue{Key: "x-user-id", Value: u})
		hv := got.GetHeader()
		if hv.GetKey() != config.VariantHeader || hv.GetValue() != "a" || len(hv.GetRawValue()) != 0 {
			t.Fatalf("user %s (hash → a): mutation %v, want value a and raw_value empty", u, hv)
		}
		if got.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("append action = %v", got.GetAppendAction())
		}
		if v := decideWith(&corev3.HeaderValue{Key: "x-user-id", Value: u}, &corev3.HeaderValue{Key: "x-region", Value: "eu"}).GetHeader().GetValue(); v != "b" {
			t.Errorf("user %s with x-region: eu in value: got %q, the rule says b", u, v)
		}
		if v := decideWith(&corev3.HeaderValue{Key: "x-user-id", Value: u}, &corev3.HeaderValue{Key: config.TargetHeader, Value: "b"}).GetHeader().GetValue(); v != "b" {
			t.Errorf("user %s targeting b in value: got %q", u, v)
		}
	}
}

func TestUnknownEndpointPassesThrough(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	for _, md := range []map[string]string{envoyMD("nope"), {config.ClientMetadataKey: "envoy"}} {
		res, err := extproctest.Do(context.Background(), h.conn, extproctest.Request{
			Metadata: md, Headers: []extproctest.Header{extproctest.H("x-user-id", "u1")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := extproctest.Get(res.RequestHeaders, config.VariantHeader); ok || res.RouteCacheCleared {
			t.Errorf("metadata %v: request was mutated: %+v", md, res)
		}
	}
	if got := testutil.ToFloat64(h.metrics.UnknownEndpoint); got != 2 {
		t.Errorf("unknown_endpoint_total = %v, want 2", got)
	}
}

func TestMintedCookieOnResponsePhase(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	res, err := extproctest.Do(context.Background(), h.conn, extproctest.Request{
		Metadata:        envoyMD("anon"),
		Headers:         []extproctest.Header{extproctest.H(":path", "/anon")},
		ResponseHeaders: []extproctest.Header{extproctest.H(":status", "200"), extproctest.H("set-cookie", "backend=1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.ResponsePhase {
		t.Fatal("no response phase requested for an anonymous user with mint_cookie")
	}
	var cookies []string
	for _, hd := range res.ResponseHeaders {
		if hd.Key == "set-cookie" {
			cookies = append(cookies, hd.Value)
		}
	}
	if len(cookies) != 2 || !strings.HasPrefix(cookies[1], "uid=") {
		t.Fatalf("set-cookie headers = %v, want the backend's and a minted uid", cookies)
	}
	// The minted id is sticky: a request carrying it gets no new cookie.
	id := strings.SplitN(strings.TrimPrefix(cookies[1], "uid="), ";", 2)[0]
	again, err := extproctest.Do(context.Background(), h.conn, extproctest.Request{
		Metadata: envoyMD("anon"),
		Headers:  []extproctest.Header{extproctest.H("cookie", "uid="+id)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if again.ResponsePhase {
		t.Error("a user with an id cookie was sent through the response phase again")
	}
}

func TestUnixSocketAndHealth(t *testing.T) {
	h := start(t, "unix://"+filepath.Join(t.TempDir(), "extproc.sock"))
	resp, err := healthpb.NewHealthClient(h.conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", resp, err)
	}
	res, err := extproctest.Do(context.Background(), h.conn, extproctest.Request{
		Metadata: envoyMD("face"), Headers: []extproctest.Header{extproctest.H("x-user-id", "u1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := extproctest.Get(res.RequestHeaders, config.VariantHeader); !ok {
		t.Error("no variant over the unix socket")
	}
}

// Protocol violations end the stream with InvalidArgument, never a panic or
// a hang, and leave no goroutine behind.
func TestMalformedStreams(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	reqHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}}
	respHeaders := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}}
	cases := map[string][]*extprocv3.ProcessingRequest{
		"empty message":              {{}},
		"response before request":    {respHeaders},
		"request headers twice":      {reqHeaders, reqHeaders},
		"request headers then empty": {reqHeaders, {}},
	}
	// Warm the connection first so its transport goroutines are in the
	// baseline.
	if _, err := healthpb.NewHealthClient(h.conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for name, msgs := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), config.EndpointMetadataKey, "face"), 5*time.Second)
			defer cancel()
			stream, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var last error
			for _, m := range msgs {
				if err := stream.Send(m); err != nil {
					break
				}
				if _, last = stream.Recv(); last != nil {
					break
				}
			}
			if status.Code(last) != codes.InvalidArgument {
				t.Fatalf("stream ended with %v, want InvalidArgument", last)
			}
		})
	}
	waitCounter(t, func() float64 {
		return testutil.ToFloat64(h.metrics.ExtProcStreams.WithLabelValues("envoy", "malformed"))
	}, float64(len(cases)))
	// Streams end asynchronously; allow them to settle.
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Errorf("goroutines grew from %d to %d after malformed streams", before, n)
	}
}

// A client that goes away mid-stream is a clean end, not an error.
func TestClientCancelIsClean(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), config.EndpointMetadataKey, "face"))
	stream, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}})
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(3 * time.Second)
	for testutil.ToFloat64(h.metrics.ExtProcStreams.WithLabelValues("envoy", "ok")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("cancelled stream not counted as ok; error count = %v",
				testutil.ToFloat64(h.metrics.ExtProcStreams.WithLabelValues("envoy", "error")))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitCounter(t *testing.T, get func() float64, want float64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for get() != want {
		if time.Now().After(deadline) {
			t.Fatalf("counter = %v, want %v", get(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
