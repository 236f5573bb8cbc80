package extproc_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc"
	"github.com/modelsplit/modelsplit/metrics"
)

// doNothingServer is the baseline: a fake ext_proc server (named as such)
// that answers every request_headers with an empty HeadersResponse. The
// real server is compared with it in the same run, so the figure is what
// the decision adds, not what gRPC on this machine costs.
type doNothingServer struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (doNothingServer) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		if _, err := s.Recv(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := s.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
			RequestHeaders: &extprocv3.HeadersResponse{}}}); err != nil {
			return err
		}
	}
}

func benchConn(b *testing.B, register func(*grpc.Server)) *grpc.ClientConn {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	register(g)
	go g.Serve(lis)
	b.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

func servers(b *testing.B) map[string]*grpc.ClientConn {
	cfg, err := config.Parse("bench.yaml", []byte(testConfig))
	if err != nil {
		b.Fatal(err)
	}
	m := metrics.New()
	engine := cohort.NewEngine(cohort.NewMemoryStore(0), cohort.Options{Metrics: m})
	engine.SetConfig(cfg)
	return map[string]*grpc.ClientConn{
		"do-nothing": benchConn(b, func(g *grpc.Server) { extprocv3.RegisterExternalProcessorServer(g, doNothingServer{}) }),
		"modelsplit": benchConn(b, func(g *grpc.Server) { extproc.NewServer(engine, extproc.Options{Metrics: m}).Register(g) }),
	}
}

var benchUsers = func() []*extprocv3.ProcessingRequest {
	out := make([]*extprocv3.ProcessingRequest, 512)
	for i := range out {
		out[i] = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":path", RawValue: []byte("/face/predict")},
				{Key: "x-user-id", RawValue: []byte(fmt.Sprintf("user-%d", i))},
			}},
			EndOfStream: true,
		}}}
	}
	return out
}()

// roundTrip is what Envoy does per HTTP request: open a stream with its
// metadata, send request_headers, read the reply, close.
func roundTrip(ctx context.Context, client extprocv3.ExternalProcessorClient, req *extprocv3.ProcessingRequest) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := client.Process(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(req); err != nil {
		return err
	}
	if _, err := s.Recv(); err != nil {
		return err
	}
	return s.CloseSend()
}

func envoyCtx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(),
		config.ClientMetadataKey, "envoy", config.EndpointMetadataKey, "face")
}

// BenchmarkRoundTrip: closed loop, one stream per request, warm cache.
func BenchmarkRoundTrip(b *testing.B) {
	for _, name := range []string{"do-nothing", "modelsplit"} {
		b.Run(name, func(b *testing.B) {
			client := extprocv3.NewExternalProcessorClient(servers(b)[name])
			ctx := envoyCtx()
			for _, r := range benchUsers { // warm the assignment cache
				if err := roundTrip(ctx, client, r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if err := roundTrip(ctx, client, benchUsers[i%len(benchUsers)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkOpenLoop5k sends requests at a fixed 5,000/s for 2s per server
// (arrivals do not wait for answers, as with real traffic) and reports the
// latency percentiles from the intended send time, so queueing counts.
func BenchmarkOpenLoop5k(b *testing.B) {
	const rate, dur = 5000, 2 * time.Second
	conns := servers(b)
	p50 := map[string]float64{}
	for _, name := range []string{"do-nothing", "modelsplit"} {
		b.Run(name, func(b *testing.B) {
			client := extprocv3.NewExternalProcessorClient(conns[name])
			ctx := envoyCtx()
			for _, r := range benchUsers {
				_ = roundTrip(ctx, client, r)
			}
			var lat []time.Duration
			for b.Loop() {
				lat = openLoop(b, ctx, client, rate, dur)
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			p50[name] = q(0.50)
			b.ReportMetric(q(0.50), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(float64(len(lat))/dur.Seconds(), "req/s")
			if name == "modelsplit" && p50["do-nothing"] > 0 {
				b.ReportMetric(p50["modelsplit"]/p50["do-nothing"], "p50-ratio")
			}
		})
	}
}

func openLoop(b *testing.B, ctx context.Context, client extprocv3.ExternalProcessorClient, rate int, dur time.Duration) []time.Duration {
	n := int(float64(rate) * dur.Seconds())
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var failed sync.Once
	start := time.Now()
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			if err := roundTrip(ctx, client, benchUsers[i%len(benchUsers)]); err != nil {
				failed.Do(func() { b.Errorf("request failed: %v", err) })
			}
			lat[i] = time.Since(due)
		}(i, due)
	}
	wg.Wait()
	return lat
}
