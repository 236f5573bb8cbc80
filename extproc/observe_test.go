package extproc_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	filterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc/extproctest"
	"github.com/modelsplit/modelsplit/metrics"
)

// Processing modes of the observe filter as modelsplit configures Envoy:
// the filter's own (headers, trailers) and the compare-mode override
// (bodies streamed as well).
var (
	observeMode = &filterpb.ProcessingMode{
		RequestHeaderMode: filterpb.ProcessingMode_SEND, ResponseHeaderMode: filterpb.ProcessingMode_SEND,
		RequestTrailerMode: filterpb.ProcessingMode_SKIP, ResponseTrailerMode: filterpb.ProcessingMode_SEND,
	}
	compareMode = &filterpb.ProcessingMode{
		RequestHeaderMode: filterpb.ProcessingMode_SEND, ResponseHeaderMode: filterpb.ProcessingMode_SEND,
		RequestBodyMode: filterpb.ProcessingMode_STREAMED, ResponseBodyMode: filterpb.ProcessingMode_STREAMED,
		RequestTrailerMode: filterpb.ProcessingMode_SKIP, ResponseTrailerMode: filterpb.ProcessingMode_SEND,
	}
	// noTrailersMode is Envoy's default (what the filter had before it
	// asked for trailers).
	noTrailersMode = &filterpb.ProcessingMode{}
)

type observed struct {
	requests, latency    float64
	c2xx, c3xx, c4xx, c5 float64
}

func (o observed) String() string {
	return fmt.Sprintf("requests=%v 2xx=%v 3xx=%v 4xx=%v 5xx=%v latency=%v", o.requests, o.c2xx, o.c3xx, o.c4xx, o.c5, o.latency)
}

// readObserved reads the exported series (gathered from the registry,
// as /metrics serves them) for one endpoint variant.
func readObserved(m *metrics.Metrics, endpoint, variant string) observed {
	var o observed
	mfs, err := m.Registry.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		for _, x := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range x.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["endpoint"] != endpoint || l["variant"] != variant {
				continue
			}
			switch mf.GetName() {
			case "modelsplit_variant_requests_total":
				o.requests = x.GetCounter().GetValue()
			case "modelsplit_variant_responses_total":
				v := x.GetCounter().GetValue()
				switch l["class"] {
				case "2xx":
					o.c2xx = v
				case "3xx":
					o.c3xx = v
				case "4xx":
					o.c4xx = v
				case "5xx":
					o.c5 = v
				}
			case "modelsplit_variant_latency_seconds":
				o.latency = float64(x.GetHistogram().GetSampleCount())
			}
		}
	}
	return o
}

// one is a single request of the given class.
func one(class string) observed {
	o := observed{requests: 1, latency: 1}
	switch class {
	case "2xx":
		o.c2xx = 1
	case "3xx":
		o.c3xx = 1
	case "4xx":
		o.c4xx = 1
	case "5xx":
		o.c5 = 1
	}
	return o
}

var (
	grpcRequest = []extproctest.Header{
		extproctest.H(":method", "POST"), extproctest.H(":path", "/pkg.Svc/Call"),
		extproctest.H("content-type", "application/grpc"), extproctest.H("te", "trailers"),
	}
	httpRequest = []extproctest.Header{extproctest.H(":method", "GET"), extproctest.H(":path", "/face/x")}
)

// response is what Envoy sends as response headers: :status, the
// variant header the route added, and more.
func response(status int, more ...string) []extproctest.Header {
	hs := []extproctest.Header{extproctest.H(":status", fmt.Sprint(status)), extproctest.H(config.VariantHeader, "a")}
	for i := 0; i+1 < len(more); i += 2 {
		hs = append(hs, extproctest.H(more[i], more[i+1]))
	}
	return hs
}

func grpcStatus(code int) []extproctest.Header {
	return []extproctest.Header{extproctest.H("grpc-status", fmt.Sprint(code)), extproctest.H("grpc-message", "m")}
}

// TestObserveClassifiesLikeEnvoy drives the observe path with the
// Envoy-faithful client: every request counts exactly once, in the class
// its status says, gRPC by its grpc-status wherever it comes, and as soon
// as the status is known (while Envoy still holds the stream open) except
// when it never comes.
func TestObserveClassifiesLikeEnvoy(t *testing.T) {
	msg := [][]byte{{0, 0, 0, 0, 2, 8, 1}}
	for _, c := range []struct {
		name string
		x    extproctest.Exchange
		want string
		// early: counted before the stream closes (the status was known);
		// otherwise only at its end.
		early bool
	}{
		{"HTTP 200 headers only", extproctest.Exchange{Headers: httpRequest, ResponseHeaders: response(200)}, "2xx", true},
		{"HTTP 404 with a body (not sent)", extproctest.Exchange{Headers: httpRequest, ResponseHeaders: response(404), ResponseBody: msg}, "4xx", true},
		{"HTTP 503 with a streamed body", extproctest.Exchange{Headers: httpRequest, ResponseHeaders: response(503), ResponseBody: msg, Mode: compareMode}, "5xx", true},
		{"HTTP 301", extproctest.Exchange{Headers: httpRequest, ResponseHeaders: response(301)}, "3xx", true},
		{"HTTP with trailers", extproctest.Exchange{Headers: httpRequest, ResponseHeaders: response(500), ResponseBody: msg,
			ResponseTrailers: []extproctest.Header{extproctest.H("x-checksum", "1")}}, "5xx", true},
		{"HTTP 200 that names a grpc-status in trailers stays HTTP", extproctest.Exchange{Headers: httpRequest, ResponseHeaders: response(200), ResponseBody: msg,
			ResponseTrailers: grpcStatus(13)}, "2xx", true},
		{"gRPC-Web is not gRPC", extproctest.Exchange{Headers: []extproctest.Header{extproctest.H("content-type", "application/grpc-web+proto")},
			ResponseHeaders: response(200, "grpc-status", "5"), ResponseBody: msg}, "2xx", true},

		{"gRPC OK in trailers", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200, "content-type", "application/grpc"),
			ResponseBody: msg, ResponseTrailers: grpcStatus(0)}, "2xx", true},
		{"gRPC NotFound in trailers after the headers", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200),
			ResponseTrailers: grpcStatus(5)}, "4xx", true},
		{"gRPC Unavailable in trailers after a message", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200),
			ResponseBody: msg, ResponseTrailers: grpcStatus(14)}, "5xx", true},
		{"gRPC Internal in trailers after streamed messages", extproctest.Exchange{Headers: grpcRequest, RequestBody: msg, ResponseHeaders: response(200),
			ResponseBody: [][]byte{msg[0], msg[0]}, ResponseTrailers: grpcStatus(13), Mode: compareMode}, "5xx", true},
		{"gRPC InvalidArgument trailers-only", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200, "grpc-status", "3")}, "4xx", true},
		{"gRPC Unavailable trailers-only (Envoy's own local reply)", extproctest.Exchange{Headers: grpcRequest,
			ResponseHeaders: response(200, "grpc-status", "14", "grpc-message", "no healthy upstream")}, "5xx", true},
		{"gRPC trailers-only in compare mode", extproctest.Exchange{Headers: grpcRequest, RequestBody: msg,
			ResponseHeaders: response(200, "grpc-status", "16"), Mode: compareMode}, "4xx", true},
		{"gRPC content-type with a suffix", extproctest.Exchange{Headers: []extproctest.Header{extproctest.H("content-type", "application/grpc+proto")},
			ResponseHeaders: response(200), ResponseTrailers: grpcStatus(7)}, "4xx", true},
		{"gRPC unparsable grpc-status is Unknown", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200),
			ResponseTrailers: []extproctest.Header{extproctest.H("grpc-status", "oops")}}, "5xx", true},
		{"gRPC answer that is plain HTTP 503", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(503)}, "5xx", true},

		// No status ever comes: counted once, when Envoy closes the
		// stream, by the HTTP status (as Envoy's router counts it).
		{"gRPC reset after the headers", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200),
			ResponseBody: msg, ResponseTrailers: grpcStatus(13), Reset: true}, "2xx", false},
		{"gRPC trailers without grpc-status", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200),
			ResponseTrailers: []extproctest.Header{extproctest.H("x-other", "1")}}, "2xx", true},
		{"gRPC on a route that skips trailers", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200),
			ResponseBody: msg, ResponseTrailers: grpcStatus(13), Mode: noTrailersMode}, "2xx", false},
		{"gRPC 200 that ends with data", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200),
			ResponseBody: msg}, "2xx", false},
		{"gRPC 200 that ends with streamed data", extproctest.Exchange{Headers: grpcRequest, ResponseHeaders: response(200),
			ResponseBody: msg, Mode: compareMode}, "2xx", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := start(t, "127.0.0.1:0")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			x := c.x
			x.Metadata = envoyMD("face")
			if x.Mode == nil {
				x.Mode = observeMode
			}
			var before observed
			x.BeforeClose = func() {
				if !c.early {
					// Give the server its messages' worth of time: it
					// must still not count without a status.
					time.Sleep(50 * time.Millisecond)
					before = readObserved(h.metrics, "face", "a")
					return
				}
				deadline := time.Now().Add(5 * time.Second)
				for before = readObserved(h.metrics, "face", "a"); before.requests == 0 && time.Now().Before(deadline); before = readObserved(h.metrics, "face", "a") {
					time.Sleep(2 * time.Millisecond)
				}
			}
			if err := extproctest.Observe(ctx, h.conn, x); err != nil {
				t.Fatal(err)
			}
			got, want := readObserved(h.metrics, "face", "a"), one(c.want)
			if got != want {
				t.Errorf("observed %v, want %v", got, want)
			}
			if c.early && before != want {
				t.Errorf("while the stream was still open: %v, want %v (counted only when the stream closed?)", before, want)
			}
			if !c.early && before.requests != 0 {
				t.Errorf("counted %v before the stream closed, with no status known", before)
			}
			if n := testutil.ToFloat64(h.metrics.ObserveStreams.WithLabelValues("envoy", "observed")); n != 1 {
				t.Errorf("observe_streams_total{envoy,observed} = %v, want 1", n)
			}
		})
	}
}

// TestObserveCountsEachRequestOnce: many exchanges of every shape on one
// server, counted once each; an answer that never came is not counted,
// and nothing is ever replied.
func TestObserveCountsEachRequestOnce(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shapes := []extproctest.Exchange{
		{Headers: httpRequest, ResponseHeaders: response(200), ResponseBody: [][]byte{[]byte("x")}},
		{Headers: httpRequest, ResponseHeaders: response(404)},
		{Headers: grpcRequest, ResponseHeaders: response(200), ResponseBody: [][]byte{{0}}, ResponseTrailers: grpcStatus(0)},
		{Headers: grpcRequest, ResponseHeaders: response(200, "grpc-status", "5")},
		{Headers: grpcRequest, ResponseHeaders: response(200), ResponseTrailers: grpcStatus(14)},
		{Headers: grpcRequest, ResponseHeaders: response(200), Reset: true},
		{Headers: grpcRequest, RequestBody: [][]byte{{1}}, ResponseHeaders: response(200), ResponseBody: [][]byte{{1}, {2}}, ResponseTrailers: grpcStatus(3), Mode: compareMode},
		{Headers: grpcRequest}, // the client went away before any answer
	}
	const rounds = 25
	for i := 0; i < rounds; i++ {
		for _, x := range shapes {
			x.Metadata = envoyMD("face")
			if x.Mode == nil {
				x.Mode = observeMode
			}
			if err := extproctest.Observe(ctx, h.conn, x); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := observed{requests: 7 * rounds, latency: 7 * rounds, c2xx: 3 * rounds, c4xx: 3 * rounds, c5: 1 * rounds}
	if got := readObserved(h.metrics, "face", "a"); got != want {
		t.Errorf("observed %v, want %v", got, want)
	}
	if n := testutil.ToFloat64(h.metrics.ObserveStreams.WithLabelValues("envoy", "incomplete")); n != rounds {
		t.Errorf("observe_streams_total{envoy,incomplete} = %v, want %d (answers that never came)", n, rounds)
	}
	var names []string
	for _, s := range []string{"observed", "incomplete"} {
		names = append(names, fmt.Sprintf("%s=%v", s, testutil.ToFloat64(h.metrics.ObserveStreams.WithLabelValues("envoy", s))))
	}
	t.Logf("observe streams: %s", strings.Join(names, " "))
}

// TestObserveCountsFailovers: an answer from a failover target (Envoy's
// x-modelsplit-failover-from names the variant the request was routed
// to) counts under the variant that answered and as a failover; a
// backend's own copy of the header is removed by Envoy, and a header that
// names the answering variant itself is no failover.
func TestObserveCountsFailovers(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fromB := []extproctest.Header{extproctest.H(":status", "200"), extproctest.H(config.VariantHeader, "a"), extproctest.H(config.FailoverHeader, "b")}
	self := []extproctest.Header{extproctest.H(":status", "200"), extproctest.H(config.VariantHeader, "a"), extproctest.H(config.FailoverHeader, "a")}
	decided := append([]extproctest.Header{extproctest.H(config.VariantHeader, "b")}, httpRequest...)
	for _, x := range []extproctest.Exchange{
		{Headers: decided, ResponseHeaders: fromB},
		{Headers: decided, ResponseHeaders: fromB},
		{Headers: httpRequest, ResponseHeaders: fromB}, // failed open: no decision in the request
		{Headers: httpRequest, ResponseHeaders: self},
		{Headers: httpRequest, ResponseHeaders: response(200)},
	} {
		x.Metadata, x.Mode = envoyMD("face"), observeMode
		if err := extproctest.Observe(ctx, h.conn, x); err != nil {
			t.Fatal(err)
		}
	}
	if got := readObserved(h.metrics, "face", "a"); got.requests != 5 {
		t.Errorf("variant a (answered every request) counted %v", got)
	}
	if got := readObserved(h.metrics, "face", "b"); got.requests != 0 {
		t.Errorf("variant b (answered nothing) counted %v", got)
	}
	if n := testutil.ToFloat64(h.metrics.VariantFailover.WithLabelValues("face", "b", "a")); n != 3 {
		t.Errorf("variant_failovers_total{face,b,a} = %v, want 3", n)
	}
	if n := testutil.CollectAndCount(h.metrics.VariantFailover); n != 1 {
		t.Errorf("%d failover series, want 1", n)
	}
}
