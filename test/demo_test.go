//go:build linux

package test

import (
	"bufio"
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

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/internal/envoybin"
)

// TestDemoGateway runs `make run`'s launcher, cmd/modelsplit-demo, on
// config/example.yaml moved to free loopback ports, with the real Envoy:
// requests for 200 users go through Envoy to the demo model servers; each
// user keeps one variant and the x-modelsplit-variant response header names
// the model that answered; `modelsplit status --json` counts exactly that
// traffic; a live `modelsplit set-weights` moves new users and no old ones;
// and after SIGINT the launcher exits 0 with every process it started gone
// and every port released. Linux only: the process checks read /proc.
func TestDemoGateway(t *testing.T) {
	envoy, err := envoybin.Find("")
	if err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("ENVOY_BIN") != "" {
			t.Fatalf("Envoy is required here: %v", err)
		}
		t.Skip(envoybin.Hint)
	}
	msBin := os.Getenv(envBinary)
	if msBin == "" {
		t.Fatalf("%s not set: run through TestMain", envBinary)
	}
	demoBin := filepath.Join(t.TempDir(), "modelsplit-demo")
	if out, err := exec.Command("go", "build", "-o", demoBin, "github.com/modelsplit/modelsplit/cmd/modelsplit-demo").CombinedOutput(); err != nil {
		t.Fatalf("building modelsplit-demo: %v\n%s", err, out)
	}

	// config/example.yaml itself, on free ports.
	port := map[string]int{}
	for _, k := range []string{"gateway", "stable", "canary", "candidate", "xds", "extproc", "admin", "envoy-admin"} {
		if port[k], err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	example, err := os.ReadFile("../config/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(example)
	for old, repl := range map[string]string{
		`"127.0.0.1:8001"`: fmt.Sprintf(`"127.0.0.1:%d"`, port["stable"]),
		`"127.0.0.1:8002"`: fmt.Sprintf(`"127.0.0.1:%d"`, port["canary"]),
		`"127.0.0.1:8003"`: fmt.Sprintf(`"127.0.0.1:%d"`, port["candidate"]),
		"  port: 10000":    fmt.Sprintf("  address: 127.0.0.1\n  port: %d", port["gateway"]),
	} {
		if strings.Count(cfg, old) != 1 {
			t.Fatalf("config/example.yaml changed: want %q once, the test moves it to a free port", old)
		}
		cfg = strings.Replace(cfg, old, repl, 1)
	}
	cfgPath := tempConfig(t, cfg)
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", port["admin"])
	gateway := fmt.Sprintf("http://127.0.0.1:%d/face-recognition/predict", port["gateway"])

	d := startDemo(t, demoBin, "-config", cfgPath, "-modelsplit", msBin, "-envoy", envoy,
		"-xds", fmt.Sprintf("127.0.0.1:%d", port["xds"]),
		"-extproc", fmt.Sprintf("127.0.0.1:%d", port["extproc"]),
		"-admin", fmt.Sprintf("127.0.0.1:%d", port["admin"]),
		"-envoy-admin-port", strconv.Itoa(port["envoy-admin"]))
	banner := d.waitStdout(t, 90*time.Second, "Ctrl-C stops")
	for _, want := range []string{
		"the gateway is up",
		"curl -si -H 'x-user-id: alice' 127.0.0.1:" + strconv.Itoa(port["gateway"]) + "/face-recognition/predict",
		" status -admin " + adminURL,
		" set-weights face-recognition stable=50 canary=50 -admin " + adminURL,
		fmt.Sprintf("Envoy admin        http://127.0.0.1:%d", port["envoy-admin"]),
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("the banner lacks %q:\n%s", want, banner)
		}
	}
	children := descendants(t, d.cmd.Process.Pid)
	var sawServe, sawEnvoy bool
	for _, p := range children {
		sawServe = sawServe || strings.Contains(p.cmdline, msBin+" serve")
		sawEnvoy = sawEnvoy || strings.HasPrefix(p.cmdline, envoy+" ")
	}
	if !sawServe || !sawEnvoy {
		t.Fatalf("want modelsplit serve and Envoy among the launcher's children, got %v", children)
	}

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	ask := func(user, method string) (string, error) {
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader(`{"image":"base64..."}`)
		}
		req, _ := http.NewRequest(method, gateway, body)
		req.Header.Set("x-user-id", user)
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var p struct {
			Model       string            `json:"model"`
			Predictions []json.RawMessage `json:"predictions"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &p) != nil || len(p.Predictions) == 0 {
			return "", fmt.Errorf("%s %s: HTTP %d %s", method, user, resp.StatusCode, raw)
		}
		if h := resp.Header.Get("x-modelsplit-variant"); h != p.Model {
			return "", fmt.Errorf("%s %s: answered by %q, x-modelsplit-variant says %q", method, user, p.Model, h)
		}
		return p.Model, nil
	}
	// failOpens is how many requests Envoy let through without a decision
	// (ext_proc failed or answered after gateway.extproc_timeout). Such a
	// request takes the fallback route, whose weighted hash is Envoy's, not
	// modelsplit's, so it may answer from another variant than the user's.
	failOpens := func() int {
		_, body := httpGet(fmt.Sprintf("http://127.0.0.1:%d/stats?filter=ext_proc.decide.failure_mode_allowed$", port["envoy-admin"]))
		n := 0
		for _, line := range strings.Split(body, "\n") {
			if _, v, ok := strings.Cut(line, ": "); ok {
				k, _ := strconv.Atoi(strings.TrimSpace(v))
				n += k
			}
		}
		return n
	}
	// traffic is what one batch of users saw.
	type traffic struct {
		variant map[string]string // user → variant of the last answer
		answers map[string]int    // variant → answers
		moved   []string          // users answered by more than one variant
	}
	// send asks each user the methods in turn (8 users at a time); every
	// answer must be a 200 naming its variant in the header.
	send := func(users []string, methods ...string) traffic {
		t.Helper()
		var mu sync.Mutex
		tr := traffic{variant: map[string]string{}, answers: map[string]int{}}
		var errs []string
		next := make(chan string)
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for u := range next {
					seen := map[string]bool{}
					for _, m := range methods {
						v, err := ask(u, m)
						mu.Lock()
						if err != nil {
							errs = append(errs, err.Error())
						} else {
							tr.answers[v]++
							tr.variant[u] = v
							seen[v] = true
						}
						mu.Unlock()
					}
					if len(seen) > 1 {
						mu.Lock()
						tr.moved = append(tr.moved, u)
						mu.Unlock()
					}
				}
			}()
		}
		for _, u := range users {
			next <- u
		}
		close(next)
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d of %d requests failed, first: %s", len(errs), len(users)*len(methods), errs[0])
		}
		return tr
	}
	// sticky fails the test for users that changed variant, unless Envoy
	// failed open at least that often meanwhile.
	sticky := func(what string, moved []string, failOpensBefore int) {
		t.Helper()
		fo := failOpens() - failOpensBefore
		switch {
		case len(moved) > fo:
			t.Errorf("%s: %d users changed variant (e.g. %s), Envoy failed open %d times", what, len(moved), moved[0], fo)
		case len(moved) > 0 || fo > 0:
			t.Logf("%s: Envoy failed open %d times (ext_proc failed or answered after gateway.extproc_timeout); %d users got another variant from the fallback route", what, fo, len(moved))
		}
	}
	count := func(m map[string]string) map[string]int {
		c := map[string]int{}
		for _, v := range m {
			c[v]++
		}
		return c
	}
	names := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s-%03d", prefix, i)
		}
		return out
	}
	// checkStatus compares `modelsplit status` with the answers seen (+1
	// for the launcher's readiness probe, user modelsplit-demo-probe).
	answered := map[string]int{}
	checkStatus := func(tr traffic) api.EndpointStatus {
		t.Helper()
		total := 1
		for v, n := range tr.answers {
			answered[v] += n
		}
		for _, n := range answered {
			total += n
		}
		st := waitStatus(t, msBin, adminURL, uint64(total))
		for _, v := range st.Variants {
			if n := uint64(answered[v.Name]); v.Requests != n && v.Requests != n+1 {
				t.Errorf("status: %s counted %d requests, Envoy answered %d from it (+1 for the probe)", v.Name, v.Requests, n)
			}
		}
		return st
	}

	// 200 users, three requests each (GET, POST, GET), at the file's 90/10.
	users := names("user", 200)
	fo0 := failOpens()
	first := send(users, http.MethodGet, http.MethodPost, http.MethodGet)
	sticky("200 users, 3 requests each", first.moved, fo0)
	c1 := count(first.variant)
	t.Logf("200 users at stable 90 / canary 10: %v", c1)
	if c1["stable"]+c1["canary"] != 200 || c1["canary"] < 5 || c1["canary"] > 45 {
		t.Errorf("variants of 200 users at 90/10: %v", c1)
	}
	st := checkStatus(first)
	fo := failOpens() - fo0
	for _, v := range st.Variants {
		if v.Users == nil || *v.Users < int64(c1[v.Name]-fo) || *v.Users > int64(c1[v.Name]+1+fo) {
			t.Errorf("status: %s has users %v, want %d (+1 for the probe; ±%d fail-opens)", v.Name, v.Users, c1[v.Name], fo)
		}
	}

	// A live weight change: new users follow it, assigned users stay.
	out, err := exec.Command(msBin, "set-weights", "face-recognition", "stable=10", "canary=90", "-admin", adminURL).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "now canary=90 stable=10") {
		t.Fatalf("set-weights: %v\n%s", err, out)
	}
	fo1 := failOpens()
	fresh := send(names("new", 200), http.MethodGet, http.MethodPost)
	sticky("200 new users, 2 requests each", fresh.moved, fo1)
	c2 := count(fresh.variant)
	t.Logf("200 new users after set-weights stable=10 canary=90: %v", c2)
	if c2["canary"] < 150 {
		t.Errorf("new users after set-weights stable=10 canary=90: %v, want ~90%% canary", c2)
	}
	checkStatus(fresh)
	fo2 := failOpens()
	again := send(users, http.MethodGet)
	var moved []string
	for _, u := range users {
		if again.variant[u] != first.variant[u] {
			moved = append(moved, fmt.Sprintf("%s (%s → %s)", u, first.variant[u], again.variant[u]))
		}
	}
	sticky("the first 200 users after the weight change", moved, fo2)
	st = checkStatus(again)
	if !st.Override {
		t.Errorf("status: override = false after set-weights")
	}
	for _, v := range st.Variants {
		want := map[string]int{"stable": 10, "canary": 90}[v.Name]
		if v.Weight != want {
			t.Errorf("status: %s weight %d, want %d", v.Name, v.Weight, want)
		}
	}
	t.Logf("status after %d answers: %s", answered["stable"]+answered["canary"]+1, fmtStatus(st))

	// Ctrl-C: everything stops.
	if err := d.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("modelsplit-demo still running 30s after SIGINT\n%s", d.stderr())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("modelsplit-demo exit code %d after SIGINT, want 0", code)
	}
	for _, p := range children {
		if p.alive() {
			t.Errorf("pid %d (%s) still runs after the launcher exited", p.pid, p.cmdline)
		}
	}
	for k, p := range port {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d (%s) still accepts connections after the launcher exited", p, k)
		}
	}
	m := regexp.MustCompile(`candidate \(shadow\) (\d+)`).FindStringSubmatch(d.stderr())
	if m == nil {
		t.Errorf("no demo server summary in the launcher's log:\n%s", d.stderr())
	} else {
		n, _ := strconv.Atoi(m[1])
		t.Logf("shadow candidate (10%% of users, mirrored) got %d requests", n)
		if n == 0 {
			t.Errorf("the shadow candidate got no mirrored requests")
		}
	}
}

// demoProc is a running modelsplit-demo.
type demoProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	out    bytes.Buffer
	err    bytes.Buffer
}

func startDemo(t *testing.T, bin string, args ...string) *demoProc {
	t.Helper()
	d := &demoProc{cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = lockedWriter{&d.mu, &d.err}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var children []procInfo
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.mu.Lock()
			d.out.Write(sc.Bytes())
			d.out.WriteByte('\n')
			d.mu.Unlock()
		}
		d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			// A test that failed midway: stop it as Ctrl-C would, then
			// kill whatever is left.
			children = descendants(t, d.cmd.Process.Pid)
			d.cmd.Process.Signal(os.Interrupt)
			select {
			case <-d.exited:
			case <-time.After(20 * time.Second):
				d.cmd.Process.Kill()
				<-d.exited
			}
			for _, p := range children {
				if p.alive() {
					syscall.Kill(p.pid, syscall.SIGKILL)
				}
			}
		}
		if t.Failed() {
			t.Logf("modelsplit-demo stdout:\n%s\nstderr:\n%s", d.stdout(), d.stderr())
		}
	})
	return d
}

func (d *demoProc) stdout() string { d.mu.Lock(); defer d.mu.Unlock(); return d.out.String() }
func (d *demoProc) stderr() string { d.mu.Lock(); defer d.mu.Unlock(); return d.err.String() }

// waitStdout waits for a stdout line containing sub and returns stdout so far.
func (d *demoProc) waitStdout(t *testing.T, timeout time.Duration, sub string) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if out := d.stdout(); strings.Contains(out, sub) {
			return out
		}
		select {
		case <-d.exited:
			t.Fatalf("modelsplit-demo exited (%v) before printing %q", d.cmd.ProcessState, sub)
		case <-deadline:
			t.Fatalf("modelsplit-demo did not print %q within %v", sub, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func fmtStatus(st api.EndpointStatus) string {
	var parts []string
	for _, v := range st.Variants {
		users := "?"
		if v.Users != nil {
			users = strconv.FormatInt(*v.Users, 10)
		}
		parts = append(parts, fmt.Sprintf("%s weight %d requests %d decisions %d users %s", v.Name, v.Weight, v.Requests, v.Decisions, users))
	}
	return strings.Join(parts, "; ")
}

// waitStatus polls `modelsplit status --json` until the endpoint's
// requests add up to at least want (the observe filter reports after the
// response), and returns it.
func waitStatus(t *testing.T, msBin, adminURL string, want uint64) api.EndpointStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for {
		out, err := exec.Command(msBin, "status", "face-recognition", "--json", "-admin", adminURL).Output()
		var st api.EndpointStatus
		if err == nil && json.Unmarshal(out, &st) == nil {
			var total uint64
			for _, v := range st.Variants {
				total += v.Requests
			}
			if total >= want {
				if total != want {
					t.Errorf("status counts %d requests, want %d:\n%s", total, want, out)
				}
				return st
			}
		}
		last = fmt.Sprintf("%v %s", err, out)
		if time.Now().After(deadline) {
			t.Fatalf("status did not count %d requests within 20s; last: %s", want, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// procInfo is one process from /proc.
type procInfo struct {
	pid, ppid int
	start     string // start time in clock ticks since boot: tells a reused pid apart
	cmdline   string
}

func readProc(pid int) (procInfo, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(s[i+1:]) // state ppid pgrp ... starttime is the 20th
	if len(f) < 20 || f[0] == "Z" {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return procInfo{pid: pid, ppid: ppid, start: f[19], cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))}, true
}

// alive says whether this very process (same pid and start time) still runs.
func (p procInfo) alive() bool {
	q, ok := readProc(p.pid)
	return ok && q.start == p.start
}

// descendants lists every process below pid.
func descendants(t *testing.T, root int) []procInfo {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	byParent := map[int][]procInfo{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			byParent[p.ppid] = append(byParent[p.ppid], p)
		}
	}
	var out []procInfo
	queue := []int{root}
	for len(queue) > 0 {
		for _, c := range byParent[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
		queue = queue[1:]
	}
	return out
}
