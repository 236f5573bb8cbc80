package test

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func echoConfig(p ports, a, b *backend, wa, wb int) string {
	return p.listenYAML() + fmt.Sprintf(`endpoints:
  - name: echo
    protocol: grpc
    match: {path_prefix: /grpc.testing.TestService/}
    sticky: {header: x-user-id}
    variants:
      - name: a
        weight: %d
        backends: ["%s"]
      - name: b
        weight: %d
        backends: ["%s"]
`, wa, a.addr, wb, b.addr)
}

func assertShare(t *testing.T, what string, r callResult, backend string, want, tolerance float64) {
	t.Helper()
	got := r.share(backend)
	t.Logf("%s: %s share %.4f (want %.2f ± %.3f), calls by backend %v, failed %d", what, backend, got, want, tolerance, r.byBackend, r.failed)
	if r.failed != 0 {
		t.Errorf("%s: %d calls failed, first: %v", what, r.failed, r.firstErr)
	}
	if math.Abs(got-want) > tolerance {
		t.Errorf("%s: %s got %.4f of calls, want %.2f ± %.3f", what, backend, got, want, tolerance)
	}
}

// TestControlPlaneEndToEnd runs `modelsplit serve` with two gRPC backends and
// a real grpc-go xDS client: the split follows the weights, a config edit
// moves it for calls after the client's ACK without failing a call, a broken
// edit is refused with its line while the old split stays, and a restarted
// server hands reconnecting clients the current config.
func TestControlPlaneEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := newPorts(t)
	cfgPath := tempConfig(t, echoConfig(p, a, b, 70, 30))
	srv := startServe(t, cfgPath, p)

	client := xdsClient(t, "echo")
	v1 := ackedRoute(t, "echo", "", 15*time.Second)
	assertShare(t, "70/30", callN(ctx, client, 10000, 8), "a", 0.70, 0.015)

	// Keep calling while the weights change: no call may fail.
	var bgCalls, bgFailed atomic.Int64
	bgCtx, bgStop := context.WithCancel(ctx)
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for bgCtx.Err() == nil {
			r := callN(bgCtx, client, 50, 2)
			bgCalls.Add(int64(50 - r.failed))
			if bgCtx.Err() == nil {
				bgFailed.Add(int64(r.failed))
			}
		}
	}()

	changed := time.Now()
	writeFile(t, cfgPath, echoConfig(p, a, b, 30, 70))
	v2 := ackedRoute(t, "echo", v1, 15*time.Second)
	t.Logf("weights 70/30 → 30/70: client ACKed %q (was %q) %v after the file was written (file poll interval 1s)", v2, v1, time.Since(changed).Round(time.Millisecond))
	assertShare(t, "30/70 after ACK", callN(ctx, client, 10000, 8), "a", 0.30, 0.015)
	bgStop()
	bg.Wait()
	if bgFailed.Load() != 0 {
		t.Errorf("%d of %d background calls failed during the weight change", bgFailed.Load(), bgCalls.Load())
	}

	// A broken edit: refused, reported with file and line, old split kept.
	bad := strings.Replace(echoConfig(p, a, b, 30, 70), "weight: 70", "weight: -70", 1)
	badLine := 1 + strings.Count(bad[:strings.Index(bad, "weight: -70")], "\n")
	writeFile(t, cfgPath, bad)
	line := srv.waitLog(10*time.Second, "config reload refused", fmt.Sprintf("modelsplit.yaml:%d: endpoints[0].variants[1].weight", badLine))
	t.Logf("refused edit logged: %s", line)
	if n, ok := srv.metric(`modelsplit_config_reloads_total{result="error"}`); !ok || n < 1 {
		t.Errorf("config_reloads_total{result=error} = %v (found %v), want ≥ 1", n, ok)
	}
	assertShare(t, "after refused edit", callN(ctx, client, 4000, 8), "a", 0.30, 0.03)
	if v := ackedRoute(t, "echo", "", time.Second); v != v2 {
		t.Errorf("client route version %q after refused edit, want unchanged %q", v, v2)
	}

	// Restart: while the server is down calls keep flowing on the cached
	// config; the config changes meanwhile; the restarted server must hand the
	// reconnecting client the new config under a version never used before.
	srv.stop()
	down := callN(ctx, client, 500, 4)
	if down.failed != 0 {
		t.Errorf("%d calls failed while the control plane was down: %v", down.failed, down.firstErr)
	}
	writeFile(t, cfgPath, echoConfig(p, a, b, 100, 0))
	restarted := time.Now()
	startServe(t, cfgPath, p)
	v3 := ackedRoute(t, "echo", v2, 30*time.Second)
	t.Logf("after restart the client ACKed %q %v after the new process started", v3, time.Since(restarted).Round(time.Millisecond))
	if v3 == v1 || v3 == v2 {
		t.Errorf("restarted server reused version %q", v3)
	}
	// As after any route update, a call can race grpc-go's swap of the
	// ACKed route (README, Proxyless gRPC clients): wait until 200 calls in
	// a row go to a, then every call must.
	for deadline, streak := time.Now().Add(10*time.Second), 0; streak < 200; {
		if time.Now().After(deadline) {
			t.Fatalf("calls still reach b 10s after the client ACKed 100/0")
		}
		if r := callN(ctx, client, 1, 1); r.byBackend["a"] == 1 {
			streak++
		} else {
			streak = 0
		}
	}
	r := callN(ctx, client, 1000, 8)
	assertShare(t, "100/0 after restart", r, "a", 1.0, 0)
}

// TestReloadOnSIGHUP: with file watching off, an edit takes effect only on
// SIGHUP, without dropping the client's xDS stream.
func TestReloadOnSIGHUP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := newPorts(t)
	cfgPath := tempConfig(t, echoConfig(p, a, b, 100, 0))
	srv := startServe(t, cfgPath, p, "-watch-interval", "0")
	client := xdsClient(t, "echo")
	v1 := ackedRoute(t, "echo", "", 15*time.Second)
	assertShare(t, "100/0", callN(ctx, client, 200, 4), "a", 1, 0)

	writeFile(t, cfgPath, echoConfig(p, a, b, 0, 100))
	time.Sleep(2 * time.Second)
	if v := ackedRoute(t, "echo", "", time.Second); v != v1 {
		t.Fatalf("config changed without SIGHUP while watching is off (version %q → %q)", v1, v)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ackedRoute(t, "echo", v1, 10*time.Second)
	assertShare(t, "0/100 after SIGHUP", callN(ctx, client, 200, 4), "b", 1, 0)
	if n, _ := srv.metric(`modelsplit_xds_connected_clients{node_kind="grpc"}`); n != 1 {
		t.Errorf("connected gRPC clients = %v after reload, want 1 (stream kept)", n)
	}
}

// A config file that cannot be read (removed, replaced by a directory) is
// said once in the log and shown by modelsplit_config_file_ok, the config
// in force stays, and its return is said once too.
func TestUnreadableConfigFileIsVisible(t *testing.T) {
	p := newPorts(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	cfgPath := tempConfig(t, echoConfig(p, a, b, 70, 30))
	srv := startServe(t, cfgPath, p, "-watch-interval", "50ms")
	if v, ok := srv.metric("modelsplit_config_file_ok"); !ok || v != 1 {
		t.Fatalf("modelsplit_config_file_ok = %v (present %v) with a readable file, want 1", v, ok)
	}
	good, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(cfgPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cfgPath, 0o755); err != nil { // a directory where the file was
		t.Fatal(err)
	}
	srv.waitLog(5*time.Second, "config file unreadable", "is a directory")
	deadline := time.Now().Add(5 * time.Second)
	for v, _ := srv.metric("modelsplit_config_file_ok"); v != 0; v, _ = srv.metric("modelsplit_config_file_ok") {
		if time.Now().After(deadline) {
			t.Fatal("modelsplit_config_file_ok stayed 1 with a directory in place of the config")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // ten more ticks: still one line
	if n := strings.Count(srv.Logs(), "config file unreadable"); n != 1 {
		t.Errorf("%d 'config file unreadable' lines over ~10 ticks, want 1", n)
	}
	if code, _ := httpGet("http://" + srv.admin + "/readyz"); code != 200 {
		t.Errorf("/readyz %d while the file is unreadable: the config in force still serves", code)
	}
	if err := os.Remove(cfgPath); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfgPath, string(good))
	srv.waitLog(5*time.Second, "config file readable again")
	for v, _ := srv.metric("modelsplit_config_file_ok"); v != 1; v, _ = srv.metric("modelsplit_config_file_ok") {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatal("modelsplit_config_file_ok not back to 1 after the file returned")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
