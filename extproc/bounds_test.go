package extproc_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc"
	"github.com/modelsplit/modelsplit/metrics"
)

// holdEnv makes the test binary a client that opens streams and holds
// them (TestHoldStreamsHelper), so the server's goroutines can be counted
// in a process of their own while the client stays connected.
const holdEnv = "MODELSPLIT_HOLD_STREAMS"

// TestHoldStreamsHelper is not a test: run with holdEnv=addr,silent,decided
// it opens that many streams sending nothing and that many that get their
// decision and stay open, prints "held" and waits to be killed.
func TestHoldStreamsHelper(t *testing.T) {
	spec := os.Getenv(holdEnv)
	if spec == "" {
		t.Skip("helper process only")
	}
	parts := strings.Split(spec, ",")
	silent, _ := strconv.Atoi(parts[1])
	decided, _ := strconv.Atoi(parts[2])
	conn, err := grpc.NewClient(parts[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	ctx := metadata.NewOutgoingContext(context.Background(), metadata.New(envoyMD("face")))
	client := extprocv3.NewExternalProcessorClient(conn)
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused, got := 0, 0
	for i := 0; i < silent+decided; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			stream, err := client.Process(ctx)
			if err != nil {
				return
			}
			if i >= silent {
				_ = stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
					Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-user-id", RawValue: []byte(fmt.Sprint("held-", i))}}}}}})
				_, err := stream.Recv()
				mu.Lock()
				if status.Code(err) == codes.ResourceExhausted {
					refused++
				} else if err == nil {
					got++
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	fmt.Printf("held decided=%d refused=%d\n", got, refused)
	select {} // hold every stream until killed
}

// processGoroutines counts goroutines running the server's Process.
func processGoroutines() int {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "extproc.(*Server).Process(")
}

// 10,000 streams from a client that stays connected: half send nothing,
// half get their decision and stay open. Past extproc.max_streams (8,000)
// streams are refused with RESOURCE_EXHAUSTED and counted; the silent
// ones end at first_message_timeout, the decided ones at idle_timeout,
// counted as idle; the server's goroutines return to where they were.
func TestIdleAndExcessStreamsAreBounded(t *testing.T) {
	cfg, err := config.Parse("test.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	engine := cohort.NewEngine(cohort.NewMemoryStore(20000), cohort.Options{Metrics: m})
	engine.SetConfig(cfg)
	t.Cleanup(func() { engine.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := extproc.NewServer(engine, extproc.Options{Metrics: m,
		Limits: config.ExtProc{MaxStreams: 8000, FirstMessageTimeout: config.Duration(10 * time.Second), IdleTimeout: config.Duration(12 * time.Second)}})
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	time.Sleep(100 * time.Millisecond)
	runtime.GC()
	baseline := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse

	cmd := exec.Command(os.Args[0], "-test.run=^TestHoldStreamsHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), holdEnv+"="+lis.Addr().String()+",5000,5000")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	held := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "held") || strings.HasPrefix(sc.Text(), "error") {
				held <- sc.Text()
				return
			}
		}
		held <- "client exited"
	}()
	select {
	case line := <-held:
		t.Logf("client: %s", line)
	case <-time.After(60 * time.Second):
		t.Fatal("client did not open its streams within 60s")
	}
	// Some silent streams may already have timed out; read the peak.
	peakOpen, peakG := srv.OpenStreams(), runtime.NumGoroutine()
	runtime.ReadMemStats(&ms)
	t.Logf("open streams %d, goroutines %d (baseline %d), in Process %d, heap in use %.1f MB (before %.1f MB)",
		peakOpen, peakG, baseline, processGoroutines(), float64(ms.HeapInuse)/1e6, float64(heapBefore)/1e6)
	refused := testutil.ToFloat64(m.ExtProcStreams.WithLabelValues("envoy", "refused"))
	if refused != 2000 {
		t.Errorf("refused %v streams past max_streams 8000 of 10,000, want 2000", refused)
	}
	if peakOpen > 8000 {
		t.Errorf("%d streams open, max_streams 8000", peakOpen)
	}

	// Every held stream ends by a timeout while the client stays.
	deadline := time.Now().Add(30 * time.Second)
	for srv.OpenStreams() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	idle := testutil.ToFloat64(m.ExtProcStreams.WithLabelValues("envoy", "idle"))
	var after int
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		runtime.GC()
		if after = runtime.NumGoroutine(); after <= baseline+5 || time.Now().After(end) {
			break
		}
	}
	runtime.ReadMemStats(&ms)
	t.Logf("after the timeouts: open %d, idle-closed %v, goroutines %d (baseline %d), in Process %d, heap in use %.1f MB",
		srv.OpenStreams(), idle, after, baseline, processGoroutines(), float64(ms.HeapInuse)/1e6)
	if srv.OpenStreams() != 0 || idle != 8000 {
		t.Errorf("open %d, idle-closed %v after the timeouts; want 0 and 8000", srv.OpenStreams(), idle)
	}
	if after > baseline+5 {
		t.Errorf("goroutines %d after every stream timed out, baseline %d", after, baseline)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the client left before the end (%v): the streams may have ended with it, not by the timeouts", err)
	}
}
