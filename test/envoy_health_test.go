package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// stop closes the backend's listener and its idle connections, answers
// the requests it is serving (with Connection: close) and closes the rest:
// a model server going away, as Envoy sees it. (A crash also fails the
// requests in flight: the backend had them, and Envoy cannot know whether
// they ran, so none of the retried conditions covers them.)
func (b *httpBackend) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.srv.Shutdown(ctx)
}

// restart serves again on the same address.
func (b *httpBackend) restart(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatalf("backend %s: listen again on %s: %v", b.name, b.addr, err)
	}
	b.srv = &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(b.serve), &http2.Server{})}
	go b.srv.Serve(lis)
}

// hostStats reads Envoy's per-host readouts (/clusters) for one cluster:
// host address → stat (rq_total, rq_success, health_flags, ...) → value.
func (e *envoyProc) hostStats(cluster string) map[string]map[string]string {
	e.t.Helper()
	_, body := httpGet(e.adminURL("/clusters"))
	out := map[string]map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		parts := strings.Split(line, "::")
		if len(parts) != 4 || parts[0] != cluster {
			continue
		}
		if out[parts[1]] == nil {
			out[parts[1]] = map[string]string{}
		}
		out[parts[1]][parts[2]] = parts[3]
	}
	return out
}

// hostsHealthy reports whether every listed host of a cluster is
// healthy ("healthy" health flags) or, with want false, none is.
func (e *envoyProc) hostsHealthy(cluster string, want bool, addrs ...string) bool {
	hs := e.hostStats(cluster)
	for _, a := range addrs {
		if (hs[a]["health_flags"] == "healthy") != want {
			return false
		}
	}
	return true
}

// loadGen sends requests for a fixed set of users with `workers` callers
// until stopped, and checks every answer: a 200, whose
// x-modelsplit-variant names the backend that answered, and which names
// the user's decided variant in x-modelsplit-failover-from exactly when
// another variant answered.
type loadGen struct {
	g       *gateway
	decided map[string]string
	stopped chan struct{}
	wg      sync.WaitGroup

	sent, lies, failovers atomic.Int64
	mu                    sync.Mutex
	firstErr              string
	failed                []time.Time               // when each failed request was sent
	served                map[string]map[string]int // decided variant → served variant → answers
}

func startLoad(g *gateway, decided map[string]string, workers int) *loadGen {
	l := &loadGen{g: g, decided: decided, stopped: make(chan struct{}), served: map[string]map[string]int{}}
	users := make([]string, 0, len(decided))
	for u := range decided {
		users = append(users, u)
	}
	sort.Strings(users)
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func(w int) {
			defer l.wg.Done()
			for i := w; ; i += workers {
				select {
				case <-l.stopped:
					return
				default:
				}
				l.one(users[i%len(users)])
			}
		}(w)
	}
	return l
}

func (l *loadGen) one(u string) {
	sentAt := time.Now()
	r, err := l.g.client.get("/model/predict", "x-user-id", u)
	l.sent.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	note := func(format string, args ...any) {
		if l.firstErr == "" {
			l.firstErr = fmt.Sprintf("user %s: ", u) + fmt.Sprintf(format, args...)
		}
	}
	switch {
	case err != nil:
		l.failed = append(l.failed, sentAt)
		note("%v", err)
		return
	case r.status != http.StatusOK:
		l.failed = append(l.failed, sentAt)
		note("status %d %q", r.status, r.body)
		return
	}
	from := r.header.Get("x-modelsplit-failover-from")
	switch {
	case r.variant != r.body:
		l.lies.Add(1)
		note("answered by %q, x-modelsplit-variant %q", r.body, r.variant)
	case r.body != l.decided[u] && from != l.decided[u]:
		l.lies.Add(1)
		note("decided %s, answered by %s with x-modelsplit-failover-from %q", l.decided[u], r.body, from)
	case r.body == l.decided[u] && from != "":
		l.lies.Add(1)
		note("answered by its own variant %s with x-modelsplit-failover-from %q", r.body, from)
	}
	if from != "" {
		l.failovers.Add(1)
	}
	if l.served[l.decided[u]] == nil {
		l.served[l.decided[u]] = map[string]int{}
	}
	l.served[l.decided[u]][r.body]++
}

// snapshot returns the answers so far and resets them.
func (l *loadGen) snapshot() map[string]map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.served
	l.served = map[string]map[string]int{}
	return s
}

// failures are the failed requests: how many, and how many were sent
// after t.
func (l *loadGen) failures(after time.Time) (all, later int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, at := range l.failed {
		if at.After(after) {
			later++
		}
	}
	return len(l.failed), later
}

func (l *loadGen) stop() {
	select {
	case <-l.stopped:
	default:
		close(l.stopped)
	}
	l.wg.Wait()
}

// Scenario: a variant's backends all go away under traffic (listeners
// closed, idle connections closed, requests being served answered), then
// come back on the same addresses.
//
// No request sent after the stop fails: until Envoy notices (active
// health checks, or outlier detection alone), the retry of a refused
// connection goes to the next priority, the other variant; after, the
// variant's users are served by the other variant outright. With the
// default retry conditions a request Envoy had already written onto a
// keep-alive connection the backend was closing can fail (HTTP/1 cannot
// tell whether the backend read it, so only `reset` retries it): at most
// one per caller, all sent before the stop completed. With `reset` added
// (an endpoint whose requests are safe to replay) none fails.
//
// Every answer names the variant that answered, and failovers name the
// user's variant. Envoy (per-host counters of the failover target inside
// the variant's cluster) and modelsplit (variant_failovers_total) count
// the failovers. When the backends return the users are back on their
// variant: their assignment never changed.
func TestEnvoyVariantFailover(t *testing.T) {
	const workers = 8
	for _, tc := range []struct {
		name, settings string
		flag           string // health flag of a dead host once noticed
		none           bool   // no request may fail at all
	}{
		{"active health checks", "health_check: {path: /healthz, interval: 250ms, timeout: 200ms}", "/failed_active_hc", false},
		{"outlier detection only", "outlier_detection: {base_ejection_time: 1s, interval: 250ms}", "/failed_outlier_check", false},
		{"health checks and retries on reset", "health_check: {path: /healthz, interval: 250ms, timeout: 200ms}\n" +
			"    retries: {on: [connect-failure, refused-stream, reset-before-request, reset]}", "/failed_active_hc", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a1, a2, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
			g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    allow_target: true
    %s
    variants:
      - {name: a, weight: 50, backends: [%q, %q]}
      - {name: b, weight: 50, backends: [%q]}
`, tc.settings, a1.addr, a2.addr, b.addr), "extproc_timeout: 2s", "/model/predict", "x-user-id", "probe")
			users := userNames("u", 400)
			decided := g.route(t, "/model/predict", users)
			load := startLoad(g, decided, workers)
			defer load.stop()
			time.Sleep(time.Second)
			if got := load.snapshot(); got["a"]["b"]+got["b"]["a"] != 0 || len(load.failed) != 0 {
				t.Fatalf("before the outage: answers %v, %d failed (%s)", got, len(load.failed), load.firstErr)
			}

			// Outage: both of a's backends go away.
			retriesBefore := g.envoy.stat("cluster.model/a.upstream_rq_retry_success")
			start := time.Now()
			a1.stop()
			a2.stop()
			stopped := time.Now()
			var noticed time.Duration
			for noticed == 0 {
				hs := g.envoy.hostStats("model/a")
				if strings.Contains(hs[a1.addr]["health_flags"], tc.flag) && strings.Contains(hs[a2.addr]["health_flags"], tc.flag) {
					noticed = time.Since(start)
				} else if time.Since(start) > 15*time.Second {
					t.Fatalf("Envoy did not mark a's backends %s within 15s: %v", tc.flag, hs)
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(time.Second) // Envoy merges host health updates for up to 1s
			load.snapshot()
			time.Sleep(time.Second)
			during := load.snapshot()
			if during["a"]["a"] != 0 || during["a"]["b"] == 0 || during["b"]["a"] != 0 {
				t.Errorf("while a is down: answers by decided variant %v, want a's users all on b", during)
			}

			// Recovery: the same addresses serve again.
			a1.restart(t)
			a2.restart(t)
			back := time.Now()
			var healthy, returned time.Duration
			for returned == 0 {
				if healthy == 0 && g.envoy.hostsHealthy("model/a", true, a1.addr, a2.addr) {
					healthy = time.Since(back)
				}
				if r, err := g.client.get("/model/predict", "x-user-id", "probe", "x-modelsplit-target", "a"); err == nil && r.body == "a" && r.variant == "a" {
					returned = time.Since(back)
				}
				if time.Since(back) > 20*time.Second {
					t.Fatalf("a's users not back on a within 20s: %v", g.envoy.hostStats("model/a"))
				}
				time.Sleep(20 * time.Millisecond)
			}
			// Steady: a full second in which every a-user's answer came
			// from a. (Outlier ejections last base_ejection_time times the
			// host's ejection count, so after a long outage a recovered
			// backend can stay ejected for a few seconds.)
			var steady time.Duration
			var after map[string]map[string]int
			load.snapshot()
			for steady == 0 {
				time.Sleep(time.Second)
				after = load.snapshot()
				if healthy == 0 && g.envoy.hostsHealthy("model/a", true, a1.addr, a2.addr) {
					healthy = time.Since(back)
				}
				if after["a"]["b"] == 0 && after["a"]["a"] > 0 {
					steady = time.Since(back)
				} else if time.Since(back) > 30*time.Second {
					break
				}
			}
			load.stop()
			if steady == 0 {
				t.Errorf("30s after a's backends returned: answers by decided variant %v, want a's users on a", after)
			}
			// Every user on their variant again (route fails on any lie).
			again := g.route(t, "/model/predict", users)
			for _, u := range users {
				if again[u] != decided[u] {
					t.Errorf("user %s: decided %s, after the outage on %s", u, decided[u], again[u])
				}
			}

			sent, lies, failovers := load.sent.Load(), load.lies.Load(), load.failovers.Load()
			failed, later := load.failures(stopped)
			switch {
			case lies != 0:
				t.Errorf("%d answers misnamed their variant; first: %s", lies, load.firstErr)
			case tc.none && failed != 0:
				t.Errorf("%d of %d requests failed; first: %s", failed, sent, load.firstErr)
			case later != 0 || failed > workers:
				t.Errorf("%d of %d requests failed, %d of them sent after the backends had stopped; first: %s", failed, sent, later, load.firstErr)
			}
			// Envoy's count: b's host inside a's cluster served the failovers.
			envoyFailovers, _ := strconv.Atoi(g.envoy.hostStats("model/a")[b.addr]["rq_success"])
			retries := g.envoy.stat("cluster.model/a.upstream_rq_retry_success") - retriesBefore
			if envoyFailovers < int(failovers) || failovers == 0 {
				t.Errorf("Envoy counted %d answers by b's host in cluster model/a; the clients saw %d failovers", envoyFailovers, failovers)
			}
			// modelsplit's count (the observe filter is asynchronous).
			series := `modelsplit_variant_failovers_total{endpoint="model",served="b",variant="a"}`
			deadline := time.Now().Add(5 * time.Second)
			var counted float64
			for {
				counted, _ = g.serve.current().metric(series)
				if int64(counted) >= failovers || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if int64(counted) < failovers {
				t.Errorf("modelsplit counted %v failovers, the clients saw %d", counted, failovers)
			}
			t.Logf("%s: %d requests, %d failed (all sent before the stop completed), %d failovers (Envoy: %d answers by b's host in model/a, "+
				"%d rescued by a retry; modelsplit: %v); a's backends marked %s %v after the stop; after they returned: healthy in Envoy after %v, first user back after %v, all back (a clean second) after %v",
				tc.name, sent, failed, failovers, envoyFailovers, retries, counted, tc.flag, noticed.Round(time.Millisecond),
				healthy.Round(time.Millisecond), returned.Round(time.Millisecond), steady.Round(time.Millisecond))
			g.envoy.assertNoRejections()
		})
	}
}

// Scenario: Envoy never retries once the answer has started, whatever the
// retry conditions: a backend that sends its headers and a first chunk,
// then drops the connection, is asked once, and the client sees the cut.
// A reset before any answer byte is retried only with `reset`: the
// default reset-before-request does not replay a request the backend
// received. And `modelsplit validate` refuses `reset` on a streaming
// endpoint.
func TestEnvoyRetriesNeverReplayAStartedAnswer(t *testing.T) {
	var streamed, dropped [2]atomic.Int64 // per endpoint: safe, replay
	handler := func(i int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			switch {
			case strings.HasSuffix(r.URL.Path, "/stream"):
				streamed[i].Add(1)
				w.Header().Set("content-type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write([]byte("data: token-1\n\n"))
				w.(http.Flusher).Flush()
				time.Sleep(50 * time.Millisecond)
				panic(http.ErrAbortHandler) // drops the connection mid-answer
			case strings.HasSuffix(r.URL.Path, "/drop"):
				dropped[i].Add(1)
				panic(http.ErrAbortHandler) // drops it before any byte
			default:
				_, _ = w.Write([]byte("ok"))
			}
		}
	}
	safe, replay := startHTTPBackend(t, "safe"), startHTTPBackend(t, "replay")
	safe.setHandler(handler(0))
	replay.setHandler(handler(1))
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: safe
    match: {path_prefix: /safe}
    sticky: {header: x-user-id}
    retries: {attempts: 3}
    variants: [{name: a, weight: 1, backends: [%q]}]
  - name: replay
    match: {path_prefix: /replay}
    sticky: {header: x-user-id}
    retries: {attempts: 3, on: [connect-failure, refused-stream, reset-before-request, reset, 5xx]}
    variants: [{name: a, weight: 1, backends: [%q]}]
`, safe.addr, replay.addr), "extproc_timeout: 2s", "/safe/ok", "x-user-id", "probe")

	for i, ep := range []string{"safe", "replay"} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/%s/stream", g.port, ep))
		if err != nil {
			t.Fatalf("%s: %v", ep, err)
		}
		buf := make([]byte, 64)
		n, _ := resp.Body.Read(buf)
		_, rest := readAll(resp)
		if resp.StatusCode != 200 || !strings.HasPrefix(string(buf[:n]), "data: token-1") || rest == nil {
			t.Errorf("%s: status %d, first chunk %q, end %v: want 200, the first token, then a cut stream", ep, resp.StatusCode, buf[:n], rest)
		}
		if c := streamed[i].Load(); c != 1 {
			t.Errorf("%s: the backend got the streaming request %d times: Envoy retried an answer it had started", ep, c)
		}
	}
	for i, ep := range []string{"safe", "replay"} {
		r, err := g.client.get("/"+ep+"/drop", "x-user-id", "u")
		if err != nil || r.status != http.StatusServiceUnavailable {
			t.Errorf("%s/drop: %v, status %d, want 503", ep, err, r.status)
		}
		want := int64(1) // reset-before-request: the request was sent, no retry
		if ep == "replay" {
			want = 4 // reset: retried three times, the backend ran it four
		}
		if c := dropped[i].Load(); c != want {
			t.Errorf("%s: a request dropped before any answer reached the backend %d times, want %d", ep, c, want)
		}
	}
	t.Logf("mid-stream cut: 1 try each (retry_on with and without reset); dropped before any byte: %d tries with the default, %d with reset",
		dropped[0].Load(), dropped[1].Load())

	// validate refuses what would replay a streaming request.
	cfg := tempConfig(t, `endpoints:
  - name: chat
    match: {path_prefix: /chat}
    streaming: true
    retries: {attempts: 2, on: [connect-failure, reset]}
    variants: [{name: a, weight: 1, backends: ["127.0.0.1:1"]}]
`)
	out, err := exec.Command(os.Getenv(envBinary), "validate", "-config", cfg).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), ":5: endpoints[0].retries.on[1]: a streaming endpoint retries only") {
		t.Errorf("validate on a streaming endpoint with reset: %v\n%s", err, out)
	}
}

// readAll drains a response body and returns how many bytes and the
// error that ended it (nil at a clean end).
func readAll(resp *http.Response) (int, error) {
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	total := 0
	for {
		n, err := resp.Body.Read(buf)
		total += n
		if err != nil {
			if err.Error() == "EOF" {
				return total, nil
			}
			return total, err
		}
	}
}

// Scenario: modelsplit stops answering without closing its connections
// (SIGSTOP). Envoy notices within 15s, not when TCP gives up: its gRPC
// health checks mark the ext_proc host unhealthy and HTTP/2 keepalive
// closes the ext_proc and xDS connections. Requests keep flowing
// meanwhile (fail open), and once the host is unhealthy without waiting
// for extproc_timeout. After SIGCONT Envoy marks it healthy, reconnects
// and decisions resume.
func TestEnvoyNoticesAPausedModelsplit(t *testing.T) {
	a, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    allow_target: true
    variants:
      - {name: a, weight: 50, backends: [%q]}
      - {name: b, weight: 50, backends: [%q]}
`, a.addr, b.addr), "extproc_timeout: 200ms", "/model/predict", "x-user-id", "probe")
	const ext = "cluster.modelsplit_extproc."
	g.envoy.waitStat(ext+"membership_healthy", 10*time.Second, func(v uint64) bool { return v == 1 })
	g.envoy.waitStat(ext+"health_check.success", 10*time.Second, func(v uint64) bool { return v > 0 })

	// Load: 4 callers, a new user each request; each request's latency
	// is kept with the time it started.
	type sample struct {
		at  time.Time
		dur time.Duration
	}
	var (
		mu      sync.Mutex
		samples []sample
		failed  atomic.Int64
		sent    atomic.Int64
		first   atomic.Value
		stopped = make(chan struct{})
		wg      sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopped:
					return
				default:
				}
				start := time.Now()
				r, err := g.client.get("/model/predict", "x-user-id", fmt.Sprintf("p-%d-%d", w, i))
				sent.Add(1)
				if err != nil || r.status != http.StatusOK || r.variant != r.body {
					failed.Add(1)
					first.CompareAndSwap(nil, fmt.Sprintf("%v status %d %q variant %q", err, r.status, r.body, r.variant))
				}
				mu.Lock()
				samples = append(samples, sample{start, time.Since(start)})
				mu.Unlock()
			}
		}(w)
	}
	stopLoad := func() {
		select {
		case <-stopped:
		default:
			close(stopped)
		}
		wg.Wait()
	}
	defer stopLoad()
	time.Sleep(500 * time.Millisecond)

	proc := g.serve.current()
	before := g.envoy.stats()
	paused := time.Now()
	proc.signal(syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			proc.signal(syscall.SIGCONT)
		}
	}()
	// Each signal of Envoy noticing, and when.
	signals := map[string]func(s map[string]uint64) bool{
		"ext_proc host unhealthy (gRPC health check)": func(s map[string]uint64) bool { return s[ext+"membership_healthy"] == 0 },
		"ext_proc connection closed by keepalive": func(s map[string]uint64) bool {
			return s[ext+"http2.keepalive_timeout"] > before[ext+"http2.keepalive_timeout"]
		},
		"xDS connection closed by keepalive": func(s map[string]uint64) bool {
			return s["cluster.xds_cluster.http2.keepalive_timeout"] > before["cluster.xds_cluster.http2.keepalive_timeout"]
		},
		"xDS stream down": func(s map[string]uint64) bool { return s["control_plane.connected_state"] == 0 },
	}
	noticed := map[string]time.Duration{}
	for len(noticed) < len(signals) {
		s := g.envoy.stats()
		for name, ok := range signals {
			if _, done := noticed[name]; !done && ok(s) {
				noticed[name] = time.Since(paused)
			}
		}
		if time.Since(paused) > 20*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	unhealthyAt := paused.Add(noticed["ext_proc host unhealthy (gRPC health check)"])
	time.Sleep(time.Second) // traffic with the host known unhealthy
	during := g.envoy.stats()
	proc.signal(syscall.SIGCONT)
	resumed = true
	cont := time.Now()
	g.envoy.waitStat(ext+"membership_healthy", 15*time.Second, func(v uint64) bool { return v == 1 })
	healthyAgain := time.Since(cont)
	g.envoy.waitStat("control_plane.connected_state", 30*time.Second, func(v uint64) bool { return v == 1 })
	g.waitDecisions(t, "/model/predict", "a", "b")
	stopLoad()

	for name := range signals {
		d, ok := noticed[name]
		switch {
		case !ok:
			t.Errorf("%s: not within 20s of the pause", name)
		case d > 20*time.Second: // ~8s when quiet; 16s seen on a loaded machine
			t.Errorf("%s: after %v, want within 20s", name, d.Round(time.Millisecond))
		default:
			t.Logf("%s: %v after SIGSTOP", name, d.Round(time.Millisecond))
		}
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed while modelsplit was paused; first: %v", n, sent.Load(), first.Load())
	}
	// Latency while paused: before Envoy knew, each request waited out
	// extproc_timeout (200ms); once the host was unhealthy, none did.
	var waiting, known []time.Duration
	mu.Lock()
	for _, s := range samples {
		switch {
		case s.at.After(paused) && s.at.Before(unhealthyAt):
			waiting = append(waiting, s.dur)
		case s.at.After(unhealthyAt.Add(100*time.Millisecond)) && s.at.Before(cont):
			known = append(known, s.dur)
		}
	}
	mu.Unlock()
	fo := func(s map[string]uint64) uint64 {
		var n uint64
		for k, v := range s {
			if strings.HasSuffix(k, ".failure_mode_allowed") {
				n += v
			}
		}
		return n
	}
	t.Logf("%d requests, %d failed; paused, before Envoy knew: %d requests, median %v; once the host was unhealthy: %d requests, median %v; "+
		"fail-opens while paused: %d; healthy again %v after SIGCONT",
		sent.Load(), failed.Load(), len(waiting), medianDur(waiting), len(known), medianDur(known), fo(during)-fo(before), healthyAgain.Round(time.Millisecond))
	if len(known) == 0 || medianDur(known) > 100*time.Millisecond {
		t.Errorf("with the ext_proc host unhealthy requests still waited (median %v of %d): Envoy should fail open at once", medianDur(known), len(known))
	}
	g.envoy.assertNoRejections()
}

func medianDur(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(100 * time.Microsecond)
}
