package accesslog_test

import (
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/accesslog"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
)

const testConfig = `
endpoints:
  - name: chat
    match: {path_prefix: /chat}
    tokens_header: x-usage-tokens
    variants:
      - {name: a, weight: 50, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 50, backends: ["10.0.0.2:80"]}
  - name: quiet
    match: {path_prefix: /quiet}
    observe: false
    variants: [{name: a, weight: 1, backends: ["10.0.0.3:80"]}]
`

// start serves an access log server with testConfig and returns a client
// stream to it, as Envoy opens one.
func start(t testing.TB) (*accesslog.Server, *metrics.Metrics, accesslogv3.AccessLogService_StreamAccessLogsClient) {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	s := accesslog.NewServer(accesslog.Options{Metrics: m})
	s.SetConfig(cfg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	stream, err := accesslogv3.NewAccessLogServiceClient(cc).StreamAccessLogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s, m, stream
}

// entry is one request as Envoy's HTTP gRPC access log reports it.
func entry(cluster string, ttfb, last time.Duration, headers, trailers map[string]string) *accesslogdatav3.HTTPAccessLogEntry {
	c := &accesslogdatav3.AccessLogCommon{
		UpstreamCluster:            cluster,
		RouteName:                  cluster,
		AccessLogType:              accesslogdatav3.AccessLogType_DownstreamEnd,
		TimeToLastRxByte:           durationpb.New(100 * time.Microsecond),
		TimeToLastDownstreamTxByte: durationpb.New(last),
		Duration:                   durationpb.New(last + time.Millisecond),
		DownstreamRemoteAddress:    &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}},
		UpstreamRemoteAddress:      &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 80}}}},
	}
	if ttfb > 0 {
		c.TimeToFirstUpstreamRxByte = durationpb.New(ttfb)
		c.TimeToLastUpstreamRxByte = durationpb.New(last)
	}
	return &accesslogdatav3.HTTPAccessLogEntry{
		CommonProperties: c,
		ProtocolVersion:  accesslogdatav3.HTTPAccessLogEntry_HTTP11,
		Request:          &accesslogdatav3.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_POST, Path: "/chat/completions", Authority: "gateway"},
		Response:         &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200), ResponseHeaders: headers, ResponseTrailers: trailers},
	}
}

func send(t testing.TB, s accesslogv3.AccessLogService_StreamAccessLogsClient, first bool, entries ...*accesslogdatav3.HTTPAccessLogEntry) {
	t.Helper()
	msg := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}}}
	if first {
		msg.Identifier = &accesslogv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "envoy-1"}, LogName: "modelsplit"}
	}
	if err := s.Send(msg); err != nil {
		t.Fatal(err)
	}
}

// histogram returns a histogram series' count and sum.
func histogram(t testing.TB, m *metrics.Metrics, name string, labels map[string]string) (uint64, float64) {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			if matches(s, labels) {
				return s.GetHistogram().GetSampleCount(), s.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0
}

func counter(t testing.TB, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	fams, _ := m.Registry.Gather()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			if matches(s, labels) {
				return s.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func matches(s *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, l := range s.GetLabel() {
		if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(labels)
}

// waitFor polls until ok (the server handles messages asynchronously).
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Each final entry for an observed variant is one TTFB, one duration and,
// when reported, one token sample for that variant; everything else is
// counted by why it was dropped.
func TestEntriesBecomeVariantSamples(t *testing.T) {
	_, m, stream := start(t)
	a := map[string]string{"endpoint": "chat", "variant": "a"}
	b := map[string]string{"endpoint": "chat", "variant": "b"}
	send(t, stream, true,
		entry("chat/a", 20*time.Millisecond, 3*time.Second, nil, map[string]string{"x-usage-tokens": "120"}), // streamed: count in trailers
		entry("chat/a", 30*time.Millisecond, 40*time.Millisecond, map[string]string{"x-usage-tokens": "7"}, nil),
		entry("chat/a", 0, 2*time.Second, nil, nil), // a 504: the variant never answered
		entry("chat/b", 10*time.Millisecond, 50*time.Millisecond, map[string]string{"x-usage-tokens": "many"}, nil),
		// A failover: routed to chat/a, answered by b.
		entry("chat/a", 5*time.Millisecond, 20*time.Millisecond, map[string]string{config.VariantHeader: "b"}, nil),
	)
	intermediate := entry("chat/b", time.Millisecond, time.Second, nil, nil)
	intermediate.CommonProperties.AccessLogType = accesslogdatav3.AccessLogType_DownstreamPeriodic
	send(t, stream, false,
		entry("", 0, time.Millisecond, nil, nil),                  // a 404: no route, no cluster
		entry("quiet/a", time.Millisecond, time.Second, nil, nil), // observe: false
		entry("chat/zz", time.Millisecond, time.Second, nil, nil), // not a variant of chat
		entry("other/a", time.Millisecond, time.Second, nil, nil), // not an endpoint
		intermediate,
	)
	waitFor(t, "10 entries", func() bool {
		var n float64
		for _, r := range []string{"recorded", "no_cluster", "unobserved", "unknown_variant", "unknown_endpoint", "intermediate"} {
			n += counter(t, m, "modelsplit_access_log_entries_total", map[string]string{"result": r})
		}
		return n == 10
	})
	for r, want := range map[string]float64{"recorded": 5, "no_cluster": 1, "unobserved": 1, "unknown_variant": 1, "unknown_endpoint": 1, "intermediate": 1} {
		if got := counter(t, m, "modelsplit_access_log_entries_total", map[string]string{"result": r}); got != want {
			t.Errorf("entries %s = %v, want %v", r, got, want)
		}
	}
	if got := counter(t, m, "modelsplit_access_log_messages_total", nil); got != 2 {
		t.Errorf("messages = %v, want 2", got)
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		count  uint64
		sum    float64
	}{
		{"modelsplit_variant_time_to_first_byte_seconds", a, 2, 0.05},
		{"modelsplit_variant_duration_seconds", a, 3, 5.04},
		{"modelsplit_variant_response_tokens", a, 2, 127},
		{"modelsplit_variant_time_to_first_byte_seconds", b, 2, 0.015},
		{"modelsplit_variant_duration_seconds", b, 2, 0.07},
		{"modelsplit_variant_response_tokens", b, 0, 0}, // "many" is not a count
	} {
		count, sum := histogram(t, m, tc.name, tc.labels)
		if count != tc.count || sum < tc.sum-1e-9 || sum > tc.sum+1e-9 {
			t.Errorf("%s%v: count %d sum %v, want %d %v", tc.name, tc.labels, count, sum, tc.count, tc.sum)
		}
	}
	if count, _ := histogram(t, m, "modelsplit_variant_duration_seconds", map[string]string{"endpoint": "quiet"}); count != 0 {
		t.Errorf("unobserved endpoint has %d duration samples", count)
	}
}

// An entry with no byte sent downstream (the client went away first)
// still counts its duration, until the request ended.
func TestDurationWithoutDownstreamBytes(t *testing.T) {
	_, m, stream := start(t)
	e := entry("chat/a", 0, 0, nil, nil)
	e.CommonProperties.TimeToLastDownstreamTxByte = nil
	e.CommonProperties.Duration = durationpb.New(1500 * time.Millisecond)
	send(t, stream, true, e)
	labels := map[string]string{"endpoint": "chat", "variant": "a"}
	waitFor(t, "a duration sample", func() bool { c, _ := histogram(t, m, "modelsplit_variant_duration_seconds", labels); return c == 1 })
	if _, sum := histogram(t, m, "modelsplit_variant_duration_seconds", labels); sum != 1.5 {
		t.Errorf("duration %v, want 1.5", sum)
	}
}

// A reload that removes a variant stops recording it; one that turns
// observe off stops recording the endpoint.
func TestSetConfigFollowsReloads(t *testing.T) {
	s, m, stream := start(t)
	cfg, err := config.Parse("t2.yaml", []byte(`
endpoints:
  - name: chat
    match: {path_prefix: /chat}
    observe: false
    variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	s.SetConfig(cfg)
	send(t, stream, true, entry("chat/a", time.Millisecond, time.Second, nil, nil), entry("chat/b", time.Millisecond, time.Second, nil, nil))
	waitFor(t, "2 entries", func() bool {
		return counter(t, m, "modelsplit_access_log_entries_total", map[string]string{"result": "unobserved"})+
			counter(t, m, "modelsplit_access_log_entries_total", map[string]string{"result": "unknown_variant"}) == 2
	})
	if c := counter(t, m, "modelsplit_access_log_entries_total", map[string]string{"result": "recorded"}); c != 0 {
		t.Errorf("recorded %v entries after observe was turned off", c)
	}
}

// Envoy never closes its access log stream, so a graceful stop of the
// gRPC server would wait for it until its grace ran out. Close ends the
// open streams: the stop completes, and the client sees its stream end.
func TestCloseEndsOpenStreams(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	s := accesslog.NewServer(accesslog.Options{Metrics: metrics.New()})
	s.SetConfig(cfg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go g.Serve(lis)
	defer g.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := accesslogv3.NewAccessLogServiceClient(cc).StreamAccessLogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	send(t, stream, true, entry("m/a", time.Millisecond, 2*time.Millisecond, nil, nil))
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with Envoy's stream still open: the test proves nothing")
	case <-time.After(300 * time.Millisecond):
	}
	s.Close()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop still waiting 5s after Close: the access log stream was not ended")
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Errorf("the client's stream ended with %v, want a clean end", err)
	}
}
