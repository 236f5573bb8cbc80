package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v3statuspb "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds/csds"

	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and filters
)

// serveProc is a running `modelsplit serve` subprocess.
type serveProc struct {
	t       testing.TB
	cmd     *exec.Cmd
	cfgPath string
	admin   string
	mu      sync.Mutex
	logs    bytes.Buffer
	exited  chan struct{}
}

// ports is a fixed set of listen ports for one test, reused across restarts.
type ports struct{ xds, extproc, admin int }

func newPorts(t testing.TB) ports {
	t.Helper()
	xds, err := strconv.Atoi(os.Getenv(envXDSPort))
	if err != nil {
		t.Fatalf("%s not set: run through TestMain", envXDSPort)
	}
	p := ports{xds: xds}
	for _, q := range []*int{&p.extproc, &p.admin} {
		if *q, err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p ports) listenYAML() string {
	return fmt.Sprintf("listen: {xds: \"127.0.0.1:%d\", extproc: \"127.0.0.1:%d\", admin: \"127.0.0.1:%d\"}\n", p.xds, p.extproc, p.admin)
}

// startServe runs the binary on cfgPath and waits until /readyz answers 200.
func startServe(t testing.TB, cfgPath string, p ports, extraArgs ...string) *serveProc {
	t.Helper()
	bin := os.Getenv(envBinary)
	if bin == "" {
		t.Fatalf("%s not set: run through TestMain", envBinary)
	}
	s := &serveProc{t: t, cfgPath: cfgPath, admin: fmt.Sprintf("127.0.0.1:%d", p.admin), exited: make(chan struct{})}
	s.cmd = exec.Command(bin, append([]string{"serve", "-config", cfgPath, "-log-format", "json", "-log-level", "debug"}, extraArgs...)...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			s.logs.Write(sc.Bytes())
			s.logs.WriteByte('\n')
			s.mu.Unlock()
		}
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("modelsplit serve logs:\n%s", s.Logs())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-s.exited:
			t.Fatalf("modelsplit serve exited early:\n%s", s.Logs())
		default:
		}
		if code, _ := httpGet("http://" + s.admin + "/readyz"); code == http.StatusOK {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("modelsplit serve not ready after 15s:\n%s", s.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a graceful exit (SIGKILL after 10s).
func (s *serveProc) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a test may have paused it
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("modelsplit serve did not stop within 10s of SIGTERM")
	}
}

func (s *serveProc) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// waitLog waits for a log line containing every substring.
func (s *serveProc) waitLog(timeout time.Duration, subs ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(s.Logs(), "\n") {
			all := true
			for _, sub := range subs {
				all = all && strings.Contains(line, sub)
			}
			if all {
				return line
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("no log line with %q within %v:\n%s", subs, timeout, s.Logs())
	return ""
}

// metric returns the value of one Prometheus series from /metrics (series is
// the full name with labels as printed, e.g. `x_total{result="ok"}`).
func (s *serveProc) metric(series string) (float64, bool) {
	_, body := httpGet("http://" + s.admin + "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// writeFile writes a config atomically (rename), as editors and ConfigMap
// updates do, so the watcher never reads half a file.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// backend is a real gRPC server standing in for one model variant. It answers
// grpc.testing.TestService/UnaryCall with its name and records the
// x-modelsplit-variant header it received.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
	addr string
	mu   sync.Mutex
	seen map[string]int // x-modelsplit-variant value → count ("" when absent)
}

func startBackend(t testing.TB, name string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: lis.Addr().String(), seen: map[string]int{}}
	g := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(g, b)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return b
}

func (b *backend) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := strings.Join(md.Get("x-modelsplit-variant"), ",")
	b.mu.Lock()
	b.seen[v]++
	b.mu.Unlock()
	return &testgrpc.SimpleResponse{Hostname: b.name}, nil
}

func (b *backend) variantHeaders() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]int, len(b.seen))
	for k, v := range b.seen {
		out[k] = v
	}
	return out
}

// xdsClient dials xds:///<endpoint> through the process's default xDS
// client (bootstrap from GRPC_XDS_BOOTSTRAP_CONFIG, set by TestMain).
func xdsClient(t testing.TB, endpoint string) testgrpc.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("xds:///"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	cc.Connect() // resolve now, so the xDS client subscribes before the first call
	return testgrpc.NewTestServiceClient(cc)
}

// callResult counts which backend answered each call.
type callResult struct {
	byBackend map[string]int
	failed    int
	firstErr  error
}

func (r callResult) share(name string) float64 {
	total := 0
	for _, n := range r.byBackend {
		total += n
	}
	if total == 0 {
		return 0
	}
	return float64(r.byBackend[name]) / float64(total)
}

// callN makes n unary calls with `parallel` concurrent callers.
func callN(ctx context.Context, c testgrpc.TestServiceClient, n, parallel int, md ...string) callResult {
	var mu sync.Mutex
	res := callResult{byBackend: map[string]int{}}
	var wg sync.WaitGroup
	next := make(chan int)
	go func() {
		defer close(next)
		for i := 0; i < n; i++ {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if len(md) > 0 {
					cctx = metadata.AppendToOutgoingContext(cctx, md...)
				}
				resp, err := c.UnaryCall(cctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
				cancel()
				mu.Lock()
				if err != nil {
					res.failed++
					if res.firstErr == nil {
						res.firstErr = err
					}
				} else {
					res.byBackend[resp.GetHostname()]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}

// ackedRoute waits until the client's own xDS state (CSDS) shows the route
// configuration `name` ACKed, with a version different from `notVersion`,
// and returns that version.
func ackedRoute(t testing.TB, name, notVersion string, timeout time.Duration) string {
	t.Helper()
	srv, err := csds.NewClientStatusDiscoveryServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		resp, err := srv.FetchClientStatus(context.Background(), &v3statuspb.ClientStatusRequest{})
		if err == nil {
			for _, cfg := range resp.GetConfig() {
				for _, g := range cfg.GetGenericXdsConfigs() {
					if !strings.HasSuffix(g.GetTypeUrl(), "RouteConfiguration") || g.GetName() != name {
						continue
					}
					last = fmt.Sprintf("%s version %q status %v", g.GetName(), g.GetVersionInfo(), g.GetClientStatus())
					if g.GetClientStatus().String() == "ACKED" && g.GetVersionInfo() != notVersion {
						return g.GetVersionInfo()
					}
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("route %q not ACKed with a version other than %q within %v (last seen: %s)", name, notVersion, timeout, last)
	return ""
}

func tempConfig(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "modelsplit.yaml")
	writeFile(t, path, content)
	return path
}
