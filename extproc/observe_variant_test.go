package extproc_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc"
	"github.com/modelsplit/modelsplit/extproc/extproctest"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/stats"
)

// An answer whose headers name no variant (a local reply of Envoy's: no
// route, so no route header) counts under the variant the decision put
// in the request; a proxyless gRPC client's served variant (stream
// metadata) counts even when no header names it.
func TestObserveVariantWithoutResponseHeader(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	decided := append([]extproctest.Header{extproctest.H(config.VariantHeader, "b")}, httpRequest...)
	x := extproctest.Exchange{Metadata: envoyMD("face"), Mode: observeMode, Headers: decided,
		ResponseHeaders: []extproctest.Header{extproctest.H(":status", "503")}}
	if err := extproctest.Observe(ctx, h.conn, x); err != nil {
		t.Fatal(err)
	}
	if got, want := readObserved(h.metrics, "face", "b"), one("5xx"); got != want {
		t.Errorf("decided variant b, answer without a variant header: observed %v, want %v", got, want)
	}

	grpcMD := map[string]string{config.ClientMetadataKey: "grpc", config.EndpointMetadataKey: "face", config.ServedVariantMetadataKey: "a"}
	x = extproctest.Exchange{Metadata: grpcMD, Mode: observeMode, Headers: []extproctest.Header{extproctest.H("content-type", "application/grpc")},
		ResponseHeaders: []extproctest.Header{extproctest.H("content-type", "application/grpc")}, ResponseBody: [][]byte{{0}}}
	if err := extproctest.Observe(ctx, h.conn, x); err != nil {
		t.Fatal(err)
	}
	if got, want := readObserved(h.metrics, "face", "a"), one("2xx"); got != want {
		t.Errorf("proxyless call served by a (metadata only): observed %v, want %v", got, want)
	}
	for _, c := range []string{"envoy", "grpc"} {
		if n := testutil.ToFloat64(h.metrics.ObserveStreams.WithLabelValues(c, "observed")); n != 1 {
			t.Errorf("observe_streams_total{%s,observed} = %v, want 1", c, n)
		}
	}
}

// rewardLog is a RewardObserver that keeps what it is told.
type rewardLog struct {
	mu  sync.Mutex
	got []reward
}

type reward struct {
	endpoint, variant  string
	class              stats.Class
	requestID, value   string
	hasValue, unsample bool
}

func (r *rewardLog) RewardHeader(endpoint string) (string, bool) {
	return "x-reward", endpoint == "face"
}

func (r *rewardLog) Observed(endpoint, variant string, class stats.Class, _ time.Duration, requestID, value string, hasValue, unsampled bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, reward{endpoint, variant, class, requestID, value, hasValue, unsampled})
}

// Every answer of an endpoint with a bandit reaches the RewardObserver
// once, with its variant, class, request id, the reward header's value
// and whether the bandit chose the variant; other endpoints' answers do
// not.
func TestObserveTellsTheBanditEachAnswer(t *testing.T) {
	m := metrics.New()
	log := &rewardLog{}
	lis, err := extproc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extproc.NewServer(nil, extproc.Options{Metrics: m, Rewards: log}).Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := func(variant string, more ...extproctest.Header) []extproctest.Header {
		return append([]extproctest.Header{extproctest.H(config.VariantHeader, variant), extproctest.H(config.RequestIDHeader, "r-"+variant)}, more...)
	}
	for _, x := range []extproctest.Exchange{
		{Metadata: envoyMD("face"), Headers: req("a"), ResponseHeaders: response(200, "x-reward", "0.75")},
		{Metadata: envoyMD("face"), Headers: req("b", extproctest.H(config.UnsampledHeader, "1")),
			ResponseHeaders: []extproctest.Header{extproctest.H(":status", "503"), extproctest.H(config.VariantHeader, "b")}},
		{Metadata: envoyMD("anon"), Headers: req("only"), ResponseHeaders: response(200, "x-reward", "1")},
	} {
		x.Mode = observeMode
		if err := extproctest.Observe(ctx, conn, x); err != nil {
			t.Fatal(err)
		}
	}
	want := []reward{
		{"face", "a", stats.Class2xx, "r-a", "0.75", true, false},
		{"face", "b", stats.Class5xx, "r-b", "", false, true},
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.got) != len(want) {
		t.Fatalf("observer told %+v, want %+v", log.got, want)
	}
	for i := range want {
		if log.got[i] != want[i] {
			t.Errorf("answer %d: observer told %+v, want %+v", i, log.got[i], want[i])
		}
	}
}

// A server without a shadow manager (comparison disabled) still observes
// a request that Envoy streams for comparison: marked with a shadow's
// header, or sampled on the server, it captures nothing and counts it.
func TestObserveWithoutShadowsIgnoresCaptureMarks(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, capture := range []string{config.CaptureMarked, config.CaptureSampled} {
		md := envoyMD("face")
		md[config.CaptureMetadataKey] = capture
		marked := append([]extproctest.Header{extproctest.H(config.ShadowHeader+"-s1", "face/s1")}, httpRequest...)
		x := extproctest.Exchange{Metadata: md, Mode: compareMode, Headers: marked, RequestBody: [][]byte{[]byte("q")},
			ResponseHeaders: response(200), ResponseBody: [][]byte{[]byte("r")}}
		if err := extproctest.Observe(ctx, h.conn, x); err != nil {
			t.Fatal(err)
		}
	}
	if got := readObserved(h.metrics, "face", "a"); got.requests != 2 || got.c2xx != 2 {
		t.Errorf("observed %v, want 2 requests of 2xx", got)
	}
}

// Observability-mode bodies and trailers that come before any request
// headers (no client of ours sends them so, but the server takes streams
// from anyone) are ignored: the stream ends cleanly, the server lives on.
func TestObservePhasesBeforeRequestHeadersAreIgnored(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	for _, first := range []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("q")}}},
		{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte("r"), EndOfStream: true}}},
		{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
	} {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), config.EndpointMetadataKey, "face"), 5*time.Second)
		stream, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		first.ObservabilityMode = true
		if err := stream.Send(first); err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("%T first: stream ended with %v, want a clean end", first.GetRequest(), err)
		}
		cancel()
	}
	waitCounter(t, func() float64 {
		return testutil.ToFloat64(h.metrics.ObserveStreams.WithLabelValues("envoy", "incomplete"))
	}, 3)
}

// A request without an endpoint (no metadata names it) or without a
// variant (no decision, no route header) is not counted under an empty
// name: no series is made for it and its stream is not "observed".
func TestObserveNeedsEndpointAndVariant(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	decided := append([]extproctest.Header{extproctest.H(config.VariantHeader, "a")}, httpRequest...)
	for _, x := range []extproctest.Exchange{
		{Metadata: map[string]string{config.ClientMetadataKey: "envoy"}, Headers: decided, ResponseHeaders: response(200)},
		{Metadata: envoyMD("face"), Headers: httpRequest, ResponseHeaders: []extproctest.Header{extproctest.H(":status", "200")}},
	} {
		x.Mode = observeMode
		if err := extproctest.Observe(ctx, h.conn, x); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range [][2]string{{"", "a"}, {"face", ""}} {
		if got := readObserved(h.metrics, ev[0], ev[1]); got != (observed{}) {
			t.Errorf("endpoint %q variant %q counted %v", ev[0], ev[1], got)
		}
	}
	if n := testutil.ToFloat64(h.metrics.ObserveStreams.WithLabelValues("envoy", "observed")); n != 0 {
		t.Errorf("observe_streams_total{envoy,observed} = %v, want 0", n)
	}
}

// A request whose answer never came (the client went away) still counts
// in the stats windows, once, as "no status" under its endpoint and
// variant; an answered one counts once, by its class; one without an
// endpoint or a variant does not count.
func TestObserveUnansweredCountsOnceInTheWindows(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	decided := func(v string) []extproctest.Header {
		return append([]extproctest.Header{extproctest.H(config.VariantHeader, v)}, httpRequest...)
	}
	for _, x := range []extproctest.Exchange{
		{Metadata: envoyMD("face"), Headers: decided("b")},                                      // never answered
		{Metadata: envoyMD("face"), Headers: decided("a"), ResponseHeaders: response(200)},      // answered
		{Metadata: envoyMD("face"), Headers: httpRequest},                                       // no variant
		{Metadata: map[string]string{config.ClientMetadataKey: "envoy"}, Headers: decided("a")}, // no endpoint
	} {
		x.Mode = observeMode
		if err := extproctest.Observe(ctx, h.conn, x); err != nil {
			t.Fatal(err)
		}
	}
	tot := h.metrics.Stats.Totals("face")
	b, a := tot.Variants["b"], tot.Variants["a"]
	if b.Requests != 1 || b.Responses[stats.ClassNone] != 1 || b.Answered() != 0 {
		t.Errorf("unanswered request on b: %d requests, %d without status, want 1 and 1", b.Requests, b.Responses[stats.ClassNone])
	}
	if a.Requests != 1 || a.Responses[stats.Class2xx] != 1 || a.Responses[stats.ClassNone] != 0 {
		t.Errorf("answered request on a: %d requests, %d 2xx, %d without status, want 1, 1, 0", a.Requests, a.Responses[stats.Class2xx], a.Responses[stats.ClassNone])
	}
	if v, ok := tot.Variants[""]; ok && v.Requests != 0 {
		t.Errorf("a request without a variant counted %d", v.Requests)
	}
	if n := len(h.metrics.Stats.Totals("").Variants); n != 0 {
		t.Errorf("a request without an endpoint made %d variant totals", n)
	}
}
