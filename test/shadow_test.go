package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/modelsplit/modelsplit/api"
)

// modelBackend is a gRPC backend standing in for a model: it labels each input
// (SimpleRequest.response_size) and names itself in the hostname. A
// shadow model answers a different label for inputs where differs(n).
type modelBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name    string
	addr    string
	delay   time.Duration
	differs func(n int32) bool
	mu      sync.Mutex
	calls   int
}

func startModel(t testing.TB, name string, delay time.Duration, differs func(int32) bool) *modelBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &modelBackend{name: name, addr: lis.Addr().String(), delay: delay, differs: differs}
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, m)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return m
}

func label(n int32) string { return fmt.Sprintf("class-%d", n%7) }

func (m *modelBackend) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	m.mu.Lock()
	m.calls++
	m.mu.Unlock()
	if m.delay > 0 {
		select {
		case <-time.After(m.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l := label(req.GetResponseSize())
	if m.differs != nil && m.differs(req.GetResponseSize()) {
		l = "other-" + l
	}
	return &testgrpc.SimpleResponse{Username: l, Hostname: m.name}, nil
}

func (m *modelBackend) callCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// shadowConfig: endpoint echo split over two primary models, with a
// compare-mode shadow on every user, compared on field 2 (username, the
// label); field 6 (hostname) is redacted in samples.
func shadowConfig(p ports, a, b, c *modelBackend, percent int) string {
	return p.listenYAML() + fmt.Sprintf(`endpoints:
  - name: echo
    protocol: grpc
    match: {path_prefix: /grpc.testing.TestService/}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 50, backends: ["%s"]}
      - {name: b, weight: 50, backends: ["%s"]}
    shadows:
      - name: c
        percent: %d
        backends: ["%s"]
        compare: {field: "2", redact: ["6"], timeout: 5s, max_concurrency: 256, samples: 50}
`, a.addr, b.addr, percent, c.addr)
}

// TestShadowCompareEndToEnd: real grpc-go clients call through xDS with
// the observe filter in gRPC body mode; modelsplit replays every sampled
// call to a shadow that answers differently for a known 3 inputs in 10,
// and the measured agreement over 5,000 requests matches the truth. No
// shadow answer reaches a client.
func TestShadowCompareEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, b := startModel(t, "a", 0, nil), startModel(t, "b", 0, nil)
	c := startModel(t, "shadow-host-secret", 0, func(n int32) bool { return n%10 < 3 })
	p := newPorts(t)
	srv := startServe(t, tempConfig(t, shadowConfig(p, a, b, c, 100)), p)
	client := xdsClient(t, "echo")
	ackedRoute(t, "echo", "", 15*time.Second)

	const n = 5000
	leaked := 0
	var firstErr error
	for i := 0; i < n; i++ {
		cctx := metadata.AppendToOutgoingContext(ctx, "x-user-id", fmt.Sprintf("user-%d", i%500))
		resp, err := client.UnaryCall(cctx, &testgrpc.SimpleRequest{ResponseSize: int32(i)}, grpc.WaitForReady(true))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if resp.GetHostname() == c.name || resp.GetUsername() != label(int32(i)) {
			leaked++
		}
	}
	if firstErr != nil {
		t.Fatalf("calls failed: %v", firstErr)
	}
	if leaked != 0 {
		t.Errorf("%d answers came from the shadow or carried its label", leaked)
	}

	// Wait for the replays to finish, then read the results.
	var st api.EndpointStatus
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		getJSON(t, "http://"+srv.admin+"/v1/endpoints/echo", "", &st)
		if s := st.Shadows[0]; s.Compared+s.Dropped+s.Errors >= n {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	s := st.Shadows[0]
	truth := 0.7 // inputs 0..4999: n%10 < 3 disagree
	t.Logf("shadow c: compared %d, agreed %d, errors %d, dropped %d; shadow served %d calls", s.Compared, s.Agreed, s.Errors, s.Dropped, c.callCount())
	if s.Compared < n*98/100 {
		t.Fatalf("only %d of %d requests compared (dropped %d, errors %d)", s.Compared, n, s.Dropped, s.Errors)
	}
	got := float64(s.Agreed) / float64(s.Compared)
	t.Logf("measured agreement %.4f, truth %.2f", got, truth)
	if math.Abs(got-truth) > 0.02 {
		t.Errorf("agreement %.4f, want %.2f ± 0.02", got, truth)
	}
	fams := scrape(t, srv.admin)
	agree, _ := series(fams, "modelsplit_shadow_comparisons_total", map[string]string{"endpoint": "echo", "shadow": "c", "result": "agree"})
	disagree, _ := series(fams, "modelsplit_shadow_comparisons_total", map[string]string{"endpoint": "echo", "shadow": "c", "result": "disagree"})
	ratio, _ := series(fams, "modelsplit_shadow_agreement_ratio", map[string]string{"endpoint": "echo", "shadow": "c"})
	diffs, _ := series(fams, "modelsplit_shadow_latency_difference_seconds", map[string]string{"endpoint": "echo", "shadow": "c"})
	if agree != float64(s.Agreed) || agree+disagree != float64(s.Compared) || math.Abs(ratio-got) > 1e-9 || diffs != float64(s.Compared) {
		t.Errorf("metrics: agree %v disagree %v ratio %v latency samples %v; API: %+v", agree, disagree, ratio, diffs, s)
	}

	// Disagreement samples: through the CLI, with hostnames redacted.
	out := mustCLI(t, srv.admin, "shadow", "disagreements", "echo", "c", "--json")
	var d api.Disagreements
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Samples) != 50 {
		t.Errorf("%d samples, want the 50 configured", len(d.Samples))
	}
	for _, smp := range d.Samples {
		if smp.Reason != "field" || !strings.Contains(smp.Shadow, "other-class-") || !strings.Contains(smp.Primary, "[redacted]") {
			t.Errorf("sample %+v", smp)
			break
		}
	}
	if strings.Contains(out, "shadow-host-secret") {
		t.Error("a redacted field (hostname) appears in the samples")
	}
	table := mustCLI(t, srv.admin, "shadow", "disagreements", "echo", "c")
	if !strings.Contains(table, "REQUEST ID") || !strings.Contains(table, "field") {
		t.Errorf("disagreements table:\n%s", table)
	}

	// Pause: no more replays; resume: they come back.
	mustCLI(t, srv.admin, "shadow", "pause", "echo", "c")
	before := c.callCount()
	for i := 0; i < 200; i++ {
		cctx := metadata.AppendToOutgoingContext(ctx, "x-user-id", "paused-user")
		if _, err := client.UnaryCall(cctx, &testgrpc.SimpleRequest{ResponseSize: int32(i)}, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if got := c.callCount() - before; got != 0 {
		t.Errorf("paused shadow still received %d replays", got)
	}
	mustCLI(t, srv.admin, "shadow", "resume", "echo", "c")
}

// BenchmarkShadowPrimaryLatency: what a compare shadow 500 ms slower than
// the primary costs a proxyless grpc-go client's calls, at 100% and 10%
// sampling. One modelsplit (at the production log level), one client, one
// warm-up: blocks of COMPARE_BLOCK (1,000) calls at 1,000/s alternate with
// the shadow paused (A: the client streams no messages to the observe
// filter, nothing is replayed) and resumed (B), A B A B for COMPARE_PAIRS
// (8) pairs; reported are the medians of the pairwise p50 and p99 ratios
// (B/A), of consecutive A blocks (A/A, the noise), and the CPU per call
// of modelsplit and of this process (client and model servers) in A and B.
func BenchmarkShadowPrimaryLatency(b *testing.B) {
	primary := startModel(b, "a", 0, nil)
	other := startModel(b, "b", 0, nil)
	slow := startModel(b, "slow-shadow", 500*time.Millisecond, nil)
	for _, percent := range []int{100, 10} {
		b.Run(fmt.Sprintf("sampled-%d", percent), func(b *testing.B) {
			p := newPorts(b)
			srv := startServe(b, tempConfig(b, shadowConfig(p, primary, other, slow, percent)), p, "-log-level", "info")
			defer srv.stop()
			client := xdsClient(b, "echo")
			ackedRoute(b, "echo", "", 15*time.Second)
			setPaused := func(paused bool) {
				action := "resume"
				if paused {
					action = "pause"
				}
				if code, msg := sendTB(b, "POST", "http://"+srv.admin+"/v1/endpoints/echo/shadows/c/"+action); code != 200 {
					b.Fatalf("%s: %d %s", action, code, msg)
				}
				time.Sleep(500 * time.Millisecond) // the client's new observe config (body mode) is ACKed in ~60 ms
			}
			pairs, n := benchInt(b, "COMPARE_PAIRS", 8), benchInt(b, "COMPARE_BLOCK", 1000)
			pids := []int{srv.cmd.Process.Pid, os.Getpid()}
			var cpuA, cpuB [2][]float64
			block := func(paused bool) []time.Duration {
				setPaused(paused)
				var before [2]time.Duration
				for i, pid := range pids {
					before[i] = procCPU(pid)
				}
				lat := make([]time.Duration, 0, n)
				for i := 0; i < n; i++ {
					ctx := metadata.AppendToOutgoingContext(context.Background(), "x-user-id", fmt.Sprintf("user-%d", i%2000))
					start := time.Now()
					if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: int32(i)}, grpc.WaitForReady(true)); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(start))
					time.Sleep(time.Until(start.Add(time.Millisecond)))
				}
				for i, pid := range pids {
					perCall := float64(cpuDelta(before[i], procCPU(pid))) / float64(n) / float64(time.Microsecond)
					if paused {
						cpuA[i] = append(cpuA[i], perCall)
					} else {
						cpuB[i] = append(cpuB[i], perCall)
					}
				}
				return lat
			}
			block(false)
			block(true)
			cpuA, cpuB = [2][]float64{}, [2][]float64{}
			b.ResetTimer()
			var r abRatios
			for i := 0; i < b.N; i++ {
				for pair := 0; pair < pairs; pair++ {
					a := block(true)
					r.add(a, block(false))
				}
			}
			b.StopTimer()
			r.report(b)
			for i, name := range []string{"modelsplit", "client+backends"} {
				b.ReportMetric(median(cpuB[i])-median(cpuA[i]), "cpu-µs/call-added-"+name)
				b.Logf("grpc-go, sampled %d%%: %s CPU per call: paused %.0f µs, comparing %.0f µs (median of blocks)", percent, name, median(cpuA[i]), median(cpuB[i]))
			}
			b.Logf("grpc-go, sampled %d%%: %s", percent, &r)
		})
	}
}

func sendTB(b testing.TB, method, url string) (int, string) {
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
