package accesslog_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/modelsplit/modelsplit/accesslog"
	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/xds"
)

// BenchmarkTelemetryPerRequest compares, per request, what modelsplit
// (and the gRPC between it and Envoy) spends on the ways to learn when an
// answer ends, over real loopback gRPC with both ends in this process
// (so ns/op includes the sender's marshalling, as Envoy would pay it):
//
//   - observe-headers: what the observe filter costs today (one stream
//     per request: request headers, response headers); it sees the first
//     byte but, for HTTP, not the end;
//   - observe-streamed-N: the same plus the response body in STREAMED
//     mode, N chunks (an SSE answer of N events): the end is the last
//     chunk, and every chunk is a gRPC message carrying a copy of the body;
//   - access-log: one entry per request in Envoy's batches (as many as
//     fit in xds.AccessLogBufferBytes, each message a batch), on a stream
//     Envoy keeps open: the way modelsplit gets TTFB, duration and tokens.
//
// msgs/req is gRPC messages per request, bytes/req their protobuf size.
func BenchmarkTelemetryPerRequest(b *testing.B) {
	cfg, err := config.Parse("bench.yaml", []byte(testConfig))
	if err != nil {
		b.Fatal(err)
	}
	m := metrics.New()
	engine := cohort.NewEngine(cohort.NewMemoryStore(0), cohort.Options{Metrics: m})
	engine.SetConfig(cfg)
	als := accesslog.NewServer(accesslog.Options{Metrics: m})
	als.SetConfig(cfg)
	cc := serve(b, func(g *grpc.Server) {
		extproc.NewServer(engine, extproc.Options{Metrics: m}).Register(g)
		als.Register(g)
	})

	for _, chunks := range []int{-1, 1, 90} {
		name := "observe-headers"
		if chunks > 0 {
			name = fmt.Sprintf("observe-streamed-%d", chunks)
		}
		b.Run(name, func(b *testing.B) { benchObserve(b, cc, chunks) })
	}
	b.Run("access-log", func(b *testing.B) { benchAccessLog(b, cc) })
}

func serve(b *testing.B, register func(*grpc.Server)) *grpc.ClientConn {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	register(g)
	go g.Serve(lis)
	b.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return cc
}

func hdrs(kv ...string) *extprocv3.HttpHeaders {
	h := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Headers = append(h.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.HttpHeaders{Headers: h}
}

// observeMessages is one observed SSE request as Envoy's observe filter
// sends it; chunks < 0: headers only (today's processing mode).
func observeMessages(chunks int) []*extprocv3.ProcessingRequest {
	msgs := []*extprocv3.ProcessingRequest{
		{ObservabilityMode: true, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(
			":method", "POST", ":path", "/chat/completions", ":authority", "gateway", "content-type", "application/json",
			"x-user-id", "user-42", "x-modelsplit-variant", "a", "x-request-id", "5f0c7c56-1c1e-4a8e-9d3b-4b1d2b0f6a11")}},
		{ObservabilityMode: true, Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdrs(
			":status", "200", "content-type", "text/event-stream", "x-modelsplit-variant", "a")}},
	}
	event := []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" token"}}]}` + "\n\n")
	for i := 0; i < chunks; i++ {
		msgs = append(msgs, &extprocv3.ProcessingRequest{ObservabilityMode: true, Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: event, EndOfStream: i == chunks-1}}})
	}
	return msgs
}

func benchObserve(b *testing.B, cc *grpc.ClientConn, chunks int) {
	client := extprocv3.NewExternalProcessorClient(cc)
	ctx := metadata.AppendToOutgoingContext(context.Background(), config.ClientMetadataKey, "envoy", config.EndpointMetadataKey, "chat")
	msgs := observeMessages(chunks)
	size := 0
	for _, m := range msgs {
		size += proto.Size(m)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := client.Process(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range msgs {
			if err := s.Send(m); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.CloseSend(); err != nil {
			b.Fatal(err)
		}
		// The server answers nothing in observability mode; EOF says it
		// has handled every message.
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			b.Fatalf("observe stream ended with %v", err)
		}
	}
	b.ReportMetric(float64(len(msgs)), "msgs/req")
	b.ReportMetric(float64(size), "bytes/req")
}

// realisticEntry is what Envoy logs for one request through the gateway
// (addresses, timings, route and cluster, status, the tokens header).
func realisticEntry() *accesslogdatav3.HTTPAccessLogEntry {
	e := entry("chat/a", 35*time.Millisecond, 3*time.Second, nil, map[string]string{"x-usage-tokens": "412"})
	c := e.CommonProperties
	c.DownstreamLocalAddress = c.UpstreamRemoteAddress
	c.UpstreamLocalAddress = c.DownstreamRemoteAddress
	c.DownstreamDirectRemoteAddress = c.DownstreamRemoteAddress
	c.TimeToFirstUpstreamTxByte = c.TimeToLastRxByte
	c.TimeToLastUpstreamTxByte = c.TimeToLastRxByte
	c.TimeToFirstDownstreamTxByte = c.TimeToFirstUpstreamRxByte
	c.UpstreamRequestAttemptCount = 1
	c.StreamId = "5f0c7c56-1c1e-4a8e-9d3b-4b1d2b0f6a11"
	c.DownstreamWireBytesSent, c.DownstreamWireBytesReceived = 9123, 412
	c.UpstreamWireBytesSent, c.UpstreamWireBytesReceived = 440, 9050
	e.Request.RequestId = c.StreamId
	e.Request.UserAgent = "python-httpx/0.27.0"
	e.Request.Scheme = "http"
	e.Request.RequestHeadersBytes, e.Request.RequestBodyBytes = 240, 180
	e.Response.ResponseBodyBytes, e.Response.ResponseHeadersBytes = 9000, 120
	e.Response.ResponseCodeDetails = "via_upstream"
	return e
}

func benchAccessLog(b *testing.B, cc *grpc.ClientConn) {
	client := accesslogv3.NewAccessLogServiceClient(cc)
	s, err := client.StreamAccessLogs(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	e := realisticEntry()
	size := proto.Size(e)
	// Envoy flushes once the buffer exceeds its size (or every second,
	// whichever comes first): this is the batch under load.
	batch := xds.AccessLogBufferBytes/size + 1
	msg := &accesslogv3.StreamAccessLogsMessage{
		Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "envoy-1"}, LogName: xds.AccessLogName},
	}
	logs := &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{}
	msg.LogEntries = &accesslogv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: logs}
	sent := 0
	flush := func() {
		if len(logs.LogEntry) == 0 {
			return
		}
		if err := s.Send(msg); err != nil {
			b.Fatal(err)
		}
		sent++
		msg.Identifier = nil
		logs.LogEntry = logs.LogEntry[:0]
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A fresh entry each time, as Envoy builds one per request.
		logs.LogEntry = append(logs.LogEntry, proto.Clone(e).(*accesslogdatav3.HTTPAccessLogEntry))
		if len(logs.LogEntry) == batch {
			flush()
		}
	}
	flush()
	if _, err := s.CloseAndRecv(); err != nil && !errors.Is(err, io.EOF) {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(sent)/float64(b.N), "msgs/req")
	b.ReportMetric(float64(size), "bytes/req")
	b.ReportMetric(float64(batch), "entries/msg")
}
