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

// BenchmarkOpenLoop5k sends requests at a fixed 5,000/s for 2s per run
// (arrivals do not wait for answers, as with real traffic) and measures
// latency from the intended send time, so queueing counts. The do-nothing
// server and modelsplit run interleaved, A B A B, for openLoopPairs pairs
// in one process; the reported figures are medians of the pairwise ratios
// (modelsplit / do-nothing) and of each arm's own figures. Each run also
// reports what the generator achieved: the completed rate over the run's
// wall time, and its lag (how late requests left against their schedule).
// A run whose p99 lag exceeds its p50 latency is marked saturated: the
// generator, not the server, shaped its figures; such pairs are left out
// of the medians and counted.
func BenchmarkOpenLoop5k(b *testing.B) {
	const rate, dur = 5000, 2 * time.Second
	conns := servers(b)
	for b.Loop() {
		var runs [2][]openLoopRun
		arms := [2]string{"do-nothing", "modelsplit"}
		for pair := 0; pair < openLoopPairs; pair++ {
			for k, name := range arms {
				client := extprocv3.NewExternalProcessorClient(conns[name])
				ctx := envoyCtx()
				for _, r := range benchUsers { // warm: every user cached
					_ = roundTrip(ctx, client, r)
				}
				r := openLoop(b, ctx, client, rate, dur)
				runs[k] = append(runs[k], r)
				b.Logf("pair %d %-10s p50 %6.0fµs p99 %7.0fµs achieved %5.0f/s lag p99 %6.0fµs saturated=%v",
					pair+1, name, r.p50, r.p99, r.achieved, r.lagP99, r.saturated())
			}
		}
		var p50r, p99r, p50a, p50b, p99a, p99b, ach []float64
		saturated := 0
		for i := range runs[0] {
			a, m := runs[0][i], runs[1][i]
			if a.saturated() || m.saturated() {
				saturated++
				continue
			}
			p50r, p99r = append(p50r, m.p50/a.p50), append(p99r, m.p99/a.p99)
			p50a, p50b = append(p50a, a.p50), append(p50b, m.p50)
			p99a, p99b = append(p99a, a.p99), append(p99b, m.p99)
			ach = append(ach, m.achieved)
		}
		b.ReportMetric(float64(saturated), "saturated-pairs")
		if len(p50r) == 0 {
			b.Logf("every pair was saturated: no figure is reported")
			continue
		}
		b.ReportMetric(median(p50r), "p50-ratio")
		b.ReportMetric(median(p99r), "p99-ratio")
		b.ReportMetric(median(p50a), "floor-p50-µs")
		b.ReportMetric(median(p99a), "floor-p99-µs")
		b.ReportMetric(median(p50b), "p50-µs")
		b.ReportMetric(median(p99b), "p99-µs")
		b.ReportMetric(median(ach), "achieved-req/s")
	}
}

// openLoopPairs is how many A B pairs BenchmarkOpenLoop5k runs.
const openLoopPairs = 5

type openLoopRun struct {
	p50, p99, lagP99 float64 // µs
	achieved         float64 // completed requests per second of wall time
}

func (r openLoopRun) saturated() bool { return r.lagP99 > r.p50 }

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func quantile(ds []time.Duration, p float64) float64 {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[int(p*float64(len(s)-1))]) / float64(time.Microsecond)
}

func openLoop(b *testing.B, ctx context.Context, client extprocv3.ExternalProcessorClient, rate int, dur time.Duration) openLoopRun {
	n := int(float64(rate) * dur.Seconds())
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	lag := make([]time.Duration, n)
	var wg sync.WaitGroup
	var failed sync.Once
	start := time.Now()
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		lag[i] = time.Since(due)
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
	wall := time.Since(start)
	return openLoopRun{p50: quantile(lat, 0.50), p99: quantile(lat, 0.99), lagP99: quantile(lag, 0.99),
		achieved: float64(n) / wall.Seconds()}
}
