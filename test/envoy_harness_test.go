package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/modelsplit/modelsplit/internal/envoybin"
)

// envoyBinary returns the Envoy the end-to-end tests run: found like `make
// run` finds it (ENVOY_BIN, then .tools/bin/envoy from `make test-deps`,
// then PATH). In CI a missing Envoy fails the test; elsewhere it skips and
// says how to get one.
func envoyBinary(t testing.TB) string {
	t.Helper()
	p, err := envoybin.Find("")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("real Envoy required in CI: %v", err)
		}
		t.Skipf("skipping real-Envoy test: %v", err)
	}
	return p
}

// envoyProc is a real Envoy started from `modelsplit bootstrap`.
type envoyProc struct {
	t       testing.TB
	bin     string
	boot    string // bootstrap file
	admin   int    // Envoy admin port on 127.0.0.1
	args    []string
	logPath string
	unready bool // start waits for the admin API only, not /ready

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// envoyOptions configures startEnvoy.
type envoyOptions struct {
	NodeID        string   // default "e2e-envoy"
	XDS           string   // modelsplit's xDS address (required)
	BootstrapArgs []string // extra `modelsplit bootstrap` flags
	Concurrency   int      // worker threads (default 1: 2 cores are shared with everything else)
	Args          []string // extra Envoy command-line arguments
	// Unready: wait only until the admin API answers, not until Envoy is
	// ready (an Envoy that cannot reach xDS never is).
	Unready bool
}

// startEnvoy writes a bootstrap with `modelsplit bootstrap`, starts Envoy
// and waits until its admin API is up. It does not wait for listeners:
// use waitListener or waitRouted for that.
func startEnvoy(t testing.TB, o envoyOptions) *envoyProc {
	t.Helper()
	bin := envoyBinary(t)
	if o.NodeID == "" {
		o.NodeID = "e2e-envoy"
	}
	if o.Concurrency == 0 {
		o.Concurrency = 1
	}
	admin, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"bootstrap", "-node-id", o.NodeID, "-xds", o.XDS, "-admin-port", strconv.Itoa(admin)}, o.BootstrapArgs...)
	out, err := exec.Command(os.Getenv(envBinary), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("modelsplit %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	dir := t.TempDir()
	e := &envoyProc{t: t, bin: bin, admin: admin, boot: filepath.Join(dir, "envoy.yaml"), logPath: filepath.Join(dir, "envoy.log"), unready: o.Unready}
	if err := os.WriteFile(e.boot, out, 0o644); err != nil {
		t.Fatal(err)
	}
	e.args = []string{"-c", e.boot, "--disable-hot-restart", "--log-level", "warn",
		"--concurrency", strconv.Itoa(o.Concurrency), "--drain-time-s", "1"}
	e.args = append(e.args, o.Args...)
	e.start()
	t.Cleanup(func() {
		e.kill()
		if t.Failed() {
			b, _ := os.ReadFile(e.logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("envoy logs (tail):\n%s", b)
		}
	})
	return e
}

func (e *envoyProc) start() {
	e.t.Helper()
	logs, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(e.bin, e.args...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logs.Close(); close(exited) }()
	e.mu.Lock()
	e.cmd, e.exited = cmd, exited
	e.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(e.logPath)
			e.t.Fatalf("envoy exited at start:\n%s", b)
		default:
		}
		if code, _ := httpGet(e.adminURL("/ready")); code == http.StatusOK || (e.unready && code != 0) {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(e.logPath)
			e.t.Fatalf("envoy admin not ready within 20s:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill stops Envoy at once (SIGKILL): what a crash looks like to modelsplit.
func (e *envoyProc) kill() {
	e.mu.Lock()
	cmd, exited := e.cmd, e.exited
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// restart kills Envoy and starts it again from the same bootstrap.
func (e *envoyProc) restart() {
	e.t.Helper()
	e.kill()
	e.start()
}

// pid is the running Envoy's process id.
func (e *envoyProc) pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmd.Process.Pid
}

func (e *envoyProc) adminURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", e.admin, path)
}

func (e *envoyProc) logs() string {
	b, _ := os.ReadFile(e.logPath)
	return string(b)
}

// stats returns Envoy's counters and gauges (histograms are left out).
func (e *envoyProc) stats() map[string]uint64 {
	e.t.Helper()
	code, body := httpGet(e.adminURL("/stats?usedonly"))
	if code != http.StatusOK {
		e.t.Fatalf("envoy /stats: %d %s", code, body)
	}
	out := map[string]uint64{}
	for _, line := range strings.Split(body, "\n") {
		name, val, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// statText is one of Envoy's text readouts (e.g.
// cluster_manager.cds.version_text), "" when absent.
func (e *envoyProc) statText(name string) string {
	e.t.Helper()
	_, body := httpGet(e.adminURL("/stats?filter=" + regexp.QuoteMeta(name)))
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return ""
}

// stat is one counter or gauge (0 when Envoy has not used it).
func (e *envoyProc) stat(name string) uint64 { return e.stats()[name] }

// configDump returns /config_dump decoded as generic JSON.
func (e *envoyProc) configDump() map[string]any {
	e.t.Helper()
	code, body := httpGet(e.adminURL("/config_dump"))
	if code != http.StatusOK {
		e.t.Fatalf("envoy /config_dump: %d", code)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		e.t.Fatalf("envoy /config_dump: %v", err)
	}
	return v
}

// runtime returns Envoy's runtime keys and their final values (/runtime:
// the RTDS layer of weights, overridden by the admin layer).
func (e *envoyProc) runtime() map[string]string {
	e.t.Helper()
	code, body := httpGet(e.adminURL("/runtime"))
	if code != http.StatusOK {
		e.t.Fatalf("envoy /runtime: %d %s", code, body)
	}
	var v struct {
		Entries map[string]struct {
			FinalValue string `json:"final_value"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		e.t.Fatalf("envoy /runtime: %v", err)
	}
	out := make(map[string]string, len(v.Entries))
	for k, x := range v.Entries {
		out[k] = x.FinalValue
	}
	return out
}

// xdsVersions returns the version_info Envoy holds per dynamic resource
// kind ("listeners", "routes", "clusters") and for each resource by name.
func (e *envoyProc) xdsVersions() map[string]string {
	dump := e.configDump()
	out := map[string]string{}
	configs, _ := dump["configs"].([]any)
	for _, c := range configs {
		m, _ := c.(map[string]any)
		typ, _ := m["@type"].(string)
		switch {
		case strings.HasSuffix(typ, "ListenersConfigDump"):
			out["listeners"], _ = m["version_info"].(string)
			for _, l := range asList(m["dynamic_listeners"]) {
				name, _ := l["name"].(string)
				if active, ok := l["active_state"].(map[string]any); ok {
					out["listener/"+name], _ = active["version_info"].(string)
				}
			}
		case strings.HasSuffix(typ, "ClustersConfigDump"):
			out["clusters"], _ = m["version_info"].(string)
		case strings.HasSuffix(typ, "RoutesConfigDump"):
			for _, r := range asList(m["dynamic_route_configs"]) {
				rc, _ := r["route_config"].(map[string]any)
				name, _ := rc["name"].(string)
				out["route/"+name], _ = r["version_info"].(string)
			}
		}
	}
	return out
}

func asList(v any) []map[string]any {
	l, _ := v.([]any)
	out := make([]map[string]any, 0, len(l))
	for _, x := range l {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// waitStat waits until a counter or gauge satisfies ok.
func (e *envoyProc) waitStat(name string, timeout time.Duration, ok func(uint64) bool) uint64 {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var v uint64
	for time.Now().Before(deadline) {
		if v = e.stat(name); ok(v) {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatalf("envoy stat %s stuck at %d after %v", name, v, timeout)
	return v
}

// assertNoRejections fails when Envoy rejected any xDS update (a NACK).
func (e *envoyProc) assertNoRejections() {
	e.t.Helper()
	for name, v := range e.stats() {
		if strings.HasSuffix(name, "update_rejected") && v != 0 {
			e.t.Errorf("envoy %s = %d: Envoy rejected an xDS update\n%s", name, v, lastLines(e.logs(), 30))
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// gatewayClient sends HTTP/1.1 requests through Envoy's gateway listener
// over keep-alive connections.
type gatewayClient struct {
	base string
	c    *http.Client
}

func newGatewayClient(port int) *gatewayClient {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	return &gatewayClient{base: fmt.Sprintf("http://127.0.0.1:%d", port), c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// gwResponse is what a test needs of one answer.
type gwResponse struct {
	status  int
	body    string
	variant string // the x-modelsplit-variant response header
	header  http.Header
}

// do sends method path with headers (name, value pairs) and an optional body.
func (g *gatewayClient) do(method, path string, body []byte, headers ...string) (gwResponse, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, g.base+path, rd)
	if err != nil {
		return gwResponse{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := g.c.Do(req)
	if err != nil {
		return gwResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return gwResponse{}, err
	}
	return gwResponse{status: resp.StatusCode, body: string(b), variant: resp.Header.Get("x-modelsplit-variant"), header: resp.Header}, nil
}

// get is do("GET", ...).
func (g *gatewayClient) get(path string, headers ...string) (gwResponse, error) {
	return g.do(http.MethodGet, path, nil, headers...)
}

// waitRouted waits until a GET of path through Envoy is answered by a
// backend (status 200), i.e. listener, routes and clusters are in place.
func (g *gatewayClient) waitRouted(t testing.TB, path string, timeout time.Duration, headers ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		r, err := g.get(path, headers...)
		if err == nil && r.status == http.StatusOK {
			return
		}
		last = fmt.Sprintf("status %d err %v body %q", r.status, err, r.body)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("Envoy did not route %s within %v (last: %s)", path, timeout, last)
}

// httpBackend is a real HTTP/1.1 and h2c server standing in for one model
// variant: it answers with its name and counts what it received.
type httpBackend struct {
	name string
	addr string
	srv  *http.Server

	mu       sync.Mutex
	requests int
	byUser   map[string]int            // x-user-id → requests
	headers  map[string]map[string]int // watched header → value → count ("" when absent)
	hosts    map[string]int            // Host / :authority → count
	watch    []string
	handler  http.HandlerFunc // optional: answers instead of the default
}

// startHTTPBackend serves name on a free loopback port. watch names request
// headers whose values are counted.
func startHTTPBackend(t testing.TB, name string, watch ...string) *httpBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &httpBackend{name: name, addr: lis.Addr().String(), byUser: map[string]int{},
		headers: map[string]map[string]int{}, hosts: map[string]int{}, watch: watch}
	h2s := &http2.Server{}
	b.srv = &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(b.serve), h2s)}
	go b.srv.Serve(lis)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *httpBackend) serve(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.requests++
	b.byUser[r.Header.Get("x-user-id")]++
	b.hosts[r.Host]++
	for _, h := range b.watch {
		if b.headers[h] == nil {
			b.headers[h] = map[string]int{}
		}
		b.headers[h][strings.Join(r.Header.Values(h), ",")]++
	}
	handler := b.handler
	b.mu.Unlock()
	if handler != nil {
		handler(w, r)
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("content-type", "text/plain")
	_, _ = io.WriteString(w, b.name)
}

// setHandler replaces the default answer (nil restores it).
func (b *httpBackend) setHandler(h http.HandlerFunc) {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
}

func (b *httpBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.requests
}

// headerValues returns how often each value of a watched header arrived.
func (b *httpBackend) headerValues(name string) map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for k, v := range b.headers[name] {
		out[k] = v
	}
	return out
}

func (b *httpBackend) users() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]int, len(b.byUser))
	for k, v := range b.byUser {
		out[k] = v
	}
	return out
}

func (b *httpBackend) hostHeaders() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for k, v := range b.hosts {
		out[k] = v
	}
	return out
}

// gateway is a running modelsplit + real Envoy pair.
type gateway struct {
	ports  ports
	port   int // Envoy's gateway listener
	cfg    string
	serve  *modelsplitHandle
	envoy  *envoyProc
	client *gatewayClient
}

// modelsplitHandle lets a test stop and restart `modelsplit serve` on the
// same ports and config.
type modelsplitHandle struct {
	t    testing.TB
	p    ports
	cfg  string
	args []string
	mu   sync.Mutex
	proc *serveProc
}

func (h *modelsplitHandle) current() *serveProc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.proc
}

func (h *modelsplitHandle) restart() {
	h.t.Helper()
	h.current().stop()
	p := startServe(h.t, h.cfg, h.p, h.args...)
	h.mu.Lock()
	h.proc = p
	h.mu.Unlock()
}

// startGateway serves configBody (everything after listen: and gateway:,
// i.e. store, endpoints, ...) with modelsplit, starts Envoy against it and
// waits until routePath is routed. gatewayExtra is appended inside the
// gateway: mapping (e.g. "extproc_timeout: 200ms").
func startGateway(t testing.TB, configBody, gatewayExtra, routePath string, routeHeaders ...string) *gateway {
	t.Helper()
	return startGatewayArgs(t, nil, configBody, gatewayExtra, routePath, routeHeaders...)
}

// startGatewayArgs is startGateway with extra `modelsplit serve` flags.
func startGatewayArgs(t testing.TB, serveArgs []string, configBody, gatewayExtra, routePath string, routeHeaders ...string) *gateway {
	t.Helper()
	envoyBinary(t) // skip (or fail in CI) before starting anything
	g := &gateway{ports: newPorts(t)}
	var err error
	if g.port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	gw := fmt.Sprintf("gateway: {port: %d, address: 127.0.0.1", g.port)
	if gatewayExtra != "" {
		gw += ", " + gatewayExtra
	}
	gw += "}\n"
	g.cfg = tempConfig(t, g.ports.listenYAML()+gw+configBody)
	g.serve = &modelsplitHandle{t: t, p: g.ports, cfg: g.cfg, args: serveArgs}
	g.serve.proc = startServe(t, g.cfg, g.ports, serveArgs...)
	g.envoy = startEnvoy(t, envoyOptions{XDS: fmt.Sprintf("127.0.0.1:%d", g.ports.xds)})
	g.client = newGatewayClient(g.port)
	g.client.waitRouted(t, routePath, 30*time.Second, routeHeaders...)
	return g
}

func (g *gateway) admin() string { return g.serve.current().admin }

// signal sends sig to the modelsplit process (SIGSTOP pauses it: a peer
// that stops answering without closing its connections).
// SIGSTOP returns once the kernel reports the process stopped (every
// thread; state T in /proc), so requests sent next meet a paused peer.
func (s *serveProc) signal(sig syscall.Signal) {
	_ = s.cmd.Process.Signal(sig)
	if sig != syscall.SIGSTOP {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if allThreadsStopped(s.cmd.Process.Pid) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.t.Errorf("modelsplit (pid %d) not stopped 5s after SIGSTOP", s.cmd.Process.Pid)
}

// allThreadsStopped reads /proc/<pid>/task/*/stat: true when every thread
// is in state T (stopped). Elsewhere than Linux it trusts the signal.
func allThreadsStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return true
	}
	for _, tk := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, tk.Name()))
		if err != nil {
			continue
		}
		// pid (comm) state ...: the state follows the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return true
}

// kill ends modelsplit at once, as a crash would.
func (s *serveProc) kill() {
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	_ = s.cmd.Process.Kill()
	<-s.exited
}
