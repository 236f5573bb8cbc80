package test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/internal/certgen"
)

// The gateway as an edge proxy (Envoy's "Configuring Envoy as an edge
// proxy"), proven on a real Envoy: what clients can no longer do, what
// the access log says, the limits Envoy advertises and enforces.

// startEdgeGateway is startGateway with extra `modelsplit bootstrap` flags
// (the overload manager's limits). An empty routePath skips waiting for a
// routed request (a gateway that must refuse them, or speaks TLS).
func startEdgeGateway(t testing.TB, configBody, gatewayExtra, routePath string, bootstrapArgs []string, routeHeaders ...string) *gateway {
	t.Helper()
	envoyBinary(t)
	g := &gateway{ports: newPorts(t)}
	var err error
	if g.port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	g.cfg = tempConfig(t, g.ports.listenYAML()+edgeGatewayYAML(g.port, gatewayExtra)+configBody)
	g.serve = &modelsplitHandle{t: t, p: g.ports, cfg: g.cfg}
	g.serve.proc = startServe(t, g.cfg, g.ports)
	g.envoy = startEnvoy(t, envoyOptions{XDS: fmt.Sprintf("127.0.0.1:%d", g.ports.xds), BootstrapArgs: bootstrapArgs})
	g.client = newGatewayClient(g.port)
	if routePath != "" {
		g.client.waitRouted(t, routePath, 30*time.Second, routeHeaders...)
	} else {
		g.waitListener(t, "")
	}
	return g
}

func edgeGatewayYAML(port int, extra string) string {
	gw := fmt.Sprintf("gateway: {port: %d, address: 127.0.0.1", port)
	if extra != "" {
		gw += ", " + extra
	}
	return gw + "}\n"
}

// waitListener waits until Envoy has accepted listeners at a version other
// than notVersion and holds the gateway listener, and returns that version.
// (An in-place update of the listener's filter chains leaves the
// listener's own version_info in /config_dump as it was; the LDS version
// moves.)
func (g *gateway) waitListener(t testing.TB, notVersion string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		vs := g.envoy.xdsVersions()
		if v := vs["listeners"]; v != "" && v != notVersion && vs["listener/modelsplit_gateway"] != "" {
			// Warming: the listener is active once its routes arrived.
			if g.envoy.stat("listener_manager.total_listeners_active") > 0 {
				return v
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("Envoy holds no gateway listener other than version %q after 30s", notVersion)
	return ""
}

// extProcStreams sums streams_started over every ext_proc filter (decide
// and observe), whatever their stat prefixes.
func (e *envoyProc) extProcStreams() uint64 {
	var n uint64
	for name, v := range e.stats() {
		if strings.Contains(name, "ext_proc") && strings.HasSuffix(name, ".streams_started") {
			n += v
		}
	}
	return n
}

// rawHTTP sends one hand-written HTTP/1.1 request (so nothing cleans the
// path or header names on the way) and reads the answer.
func rawHTTP(t testing.TB, port int, request string) *http.Response {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

func rawGET(t testing.TB, port int, path string, headers ...string) *http.Response {
	t.Helper()
	req := "GET " + path + " HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
	for i := 0; i+1 < len(headers); i += 2 {
		req += headers[i] + ": " + headers[i+1] + "\r\n"
	}
	return rawHTTP(t, port, req+"\r\n")
}

// accessLine is one JSON line of the gateway's access log.
type accessLine map[string]any

func (l accessLine) str(k string) string {
	switch v := l[k].(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}

func (l accessLine) num(k string) float64 {
	f, _ := strconv.ParseFloat(l.str(k), 64)
	return f
}

// readAccessLog waits until every path in want has a line in the access
// log (Envoy flushes it about once a second) and returns the last line of
// each path.
func readAccessLog(t testing.TB, file string, want []string) map[string]accessLine {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		byPath := map[string]accessLine{}
		if b, err := os.ReadFile(file); err == nil {
			for _, raw := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
				if raw == "" {
					continue
				}
				var l accessLine
				if err := json.Unmarshal([]byte(raw), &l); err != nil {
					t.Fatalf("access log line is not JSON: %q: %v", raw, err)
				}
				byPath[l.str("path")] = l
			}
		}
		missing := 0
		for _, p := range want {
			if _, ok := byPath[p]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return byPath
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log %s lacks %d of %d paths after 15s", file, missing, len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Scenario: the access log says, per request, which variant served it and
// whether modelsplit decided (with the decision's latency) or Envoy failed
// open; names with dots keep predictable stat names.
func TestEnvoyEdgeAccessLog(t *testing.T) {
	a, b, c := startHTTPBackend(t, "v1.2"), startHTTPBackend(t, "v2"), startHTTPBackend(t, "a")
	logPath := filepath.Join(t.TempDir(), "access.json")
	g := startEdgeGateway(t, fmt.Sprintf(`endpoints:
  - name: llama-3.1
    match: {path_prefix: /llama}
    sticky: {header: x-user-id}
    variants:
      - {name: v1.2, weight: 50, backends: [%[1]q]}
      - {name: v2, weight: 50, backends: [%[2]q]}
  - name: alone
    match: {path_prefix: /alone}
    decide: false
    variants:
      - {name: a, weight: 1, backends: [%[3]q]}
`, a.addr, b.addr, c.addr), "extproc_timeout: 200ms, access_log: "+logPath, "/llama/probe", nil, "x-user-id", "probe")

	// Each kind of request on its own path, so its lines can be found.
	served := map[string]string{} // path → variant that answered
	get := func(path, user string) {
		t.Helper()
		r, err := g.client.get(path, "x-user-id", user)
		if err != nil || r.status != 200 || r.variant != r.body {
			t.Fatalf("%s: %v status %d body %q variant %q", path, err, r.status, r.body, r.variant)
		}
		served[path] = r.body
	}
	for i := 0; i < 40; i++ {
		get(fmt.Sprintf("/llama/decided-%d", i), fmt.Sprintf("user-%d", i))
	}
	get("/alone/off", "x")
	if r, _ := g.client.get("/unrouted/off"); r.status != 404 {
		t.Fatalf("unmatched path: status %d", r.status)
	}
	// Fail-open: modelsplit paused past extproc_timeout, then killed.
	g.serve.current().signal(syscall.SIGSTOP)
	for i := 0; i < 5; i++ {
		get(fmt.Sprintf("/llama/paused-%d", i), fmt.Sprintf("user-%d", i))
	}
	g.serve.current().kill()
	for i := 0; i < 5; i++ {
		get(fmt.Sprintf("/llama/killed-%d", i), fmt.Sprintf("user-%d", i))
	}

	paths := []string{"/unrouted/off"}
	for p := range served {
		paths = append(paths, p)
	}
	byPath := readAccessLog(t, logPath, paths)
	counts := map[string]map[string]int{} // decision → variant → lines
	for path, variant := range served {
		l, ok := byPath[path]
		if !ok {
			t.Errorf("no access log line for %s", path)
			continue
		}
		if counts[l.str("decision")] == nil {
			counts[l.str("decision")] = map[string]int{}
		}
		counts[l.str("decision")][l.str("variant")]++
		kind := strings.SplitN(strings.Split(path, "/")[2], "-", 2)[0]
		cluster := "llama-3.1/" + variant
		if kind == "off" {
			cluster = "alone/a"
		}
		if l.str("variant") != variant || l.str("upstream_cluster") != cluster || l.str("response_code") != "200" || l.num("duration_ms") < 0 {
			t.Errorf("%s (served by %s): line %v", path, variant, l)
		}
		status, latency := l.str("decide_status"), l.num("decide_latency_us")
		switch kind {
		case "decided":
			// Decided: the decided variant is the one that served, the
			// call succeeded, within the timeout.
			if l.str("decision") != "decided" || l.str("decided_variant") != variant || l.str("route") != cluster ||
				status != "0" || latency <= 0 || latency >= 200_000 {
				t.Errorf("%s: want decided by %s with status 0 under 200ms: %v", path, variant, l)
			}
		case "paused":
			// Timed out (DEADLINE_EXCEEDED) at about extproc_timeout; the
			// weighted fallback route served it.
			if l.str("decision") != "fail-open" || l.str("decided_variant") != "" || l.str("route") != "llama-3.1/fallback" ||
				status != "4" || latency < 190_000 || latency > 2_000_000 {
				t.Errorf("%s: want fail-open after ~200ms with status 4: %v", path, l)
			}
		case "killed":
			if l.str("decision") != "fail-open" || l.str("route") != "llama-3.1/fallback" || status == "" || status == "0" {
				t.Errorf("%s: want fail-open with a failed call: %v", path, l)
			}
		case "off":
			if l.str("decision") != "off" || status != "" || l.str("route") != "alone/fallback" {
				t.Errorf("%s: want decision off (decide: false): %v", path, l)
			}
		}
		if l.str("request_id") == "" || l.str("client") != "127.0.0.1" || l.str("method") != "GET" {
			t.Errorf("%s: request_id/client/method: %v", path, l)
		}
	}
	if l := byPath["/unrouted/off"]; l.str("decision") != "off" || l.str("route") != "unmatched" || l.str("response_code") != "404" || l.str("upstream_cluster") != "" {
		t.Errorf("unmatched path: %v", l)
	}
	t.Logf("access log lines by decision and variant: %v", counts)
	for _, p := range []string{"/llama/decided-0", "/llama/paused-0", "/llama/killed-0", "/alone/off"} {
		j, _ := json.Marshal(byPath[p])
		t.Logf("%s: %s", p, j)
	}
	if n := counts["decided"]["v1.2"] + counts["decided"]["v2"]; n != 40 || counts["decided"]["v1.2"] == 0 || counts["decided"]["v2"] == 0 {
		t.Errorf("decided lines per variant %v, want 40 over both variants", counts["decided"])
	}
	if n := counts["fail-open"]["v1.2"] + counts["fail-open"]["v2"]; n != 10 {
		t.Errorf("fail-open lines %v, want 10", counts["fail-open"])
	}

	// Dots in names: Envoy's stats name the cluster with underscores, so
	// the cluster_name tag is the whole name.
	stats := g.envoy.stats()
	if stats["cluster.llama-3_1/v1_2.upstream_rq_total"] == 0 || stats["cluster.llama-3_1/v2.upstream_rq_total"] == 0 {
		t.Errorf("no cluster.llama-3_1/v1_2.* or cluster.llama-3_1/v2.* stats: %v", matching(stats, "cluster.llama"))
	}
	_, prom := httpGet(g.envoy.adminURL("/stats/prometheus"))
	if !strings.Contains(prom, `envoy_cluster_upstream_rq_total{envoy_cluster_name="llama-3_1/v1_2"}`) {
		t.Errorf("Prometheus output has no upstream_rq_total tagged envoy_cluster_name=\"llama-3_1/v1_2\":\n%s", grepLines(prom, "llama"))
	}
	g.envoy.assertNoRejections()
}

func matching(stats map[string]uint64, prefix string) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range stats {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && len(out) < 20 {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Scenario: what a client sends cannot steer the gateway. Its request id
// is replaced (and the replaced id is the one a compare-mode shadow is
// compared under), its x-forwarded-for is not trusted unless
// xff_num_trusted_hops says so, its x-envoy-* headers do not change
// Envoy's timeouts, header names with underscores are refused, paths are
// normalised before matching and prefixes match whole segments, paths no
// endpoint matches get a 404 without any ext_proc stream, and slow or
// oversized headers are cut off.
func TestEnvoyEdgeRequestHygiene(t *testing.T) {
	watch := []string{"x-request-id", "x-forwarded-for", "x-envoy-external-address", "x-envoy-upstream-rq-timeout-ms"}
	a := startHTTPBackend(t, "a", watch...)
	s := startHTTPBackend(t, "s", watch...)
	a.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-slow") != "" {
			time.Sleep(100 * time.Millisecond)
		}
		_, _ = io.WriteString(w, "a")
	})
	body := fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: [%q]}
    shadows:
      - {name: s, percent: 100, backends: [%q], compare: {timeout: 5s}}
`, a.addr, s.addr)
	const extra = "request_headers_timeout: 1s, limits: {max_request_headers_kb: 8}"
	g := startEdgeGateway(t, body, extra, "/model/probe", nil, "x-user-id", "probe")

	t.Run("request id", func(t *testing.T) {
		before := a.headerValues("x-request-id")
		r, err := g.client.get("/model/predict", "x-user-id", "rid-user", "x-request-id", "client-chosen-id")
		if err != nil || r.status != 200 {
			t.Fatalf("%v %+v", err, r)
		}
		var envoyID string
		for id, n := range a.headerValues("x-request-id") {
			if n > before[id] {
				envoyID = id
			}
		}
		if envoyID == "client-chosen-id" || !uuidRE.MatchString(envoyID) {
			t.Fatalf("backend saw x-request-id %q; want a fresh UUID from Envoy, not the client's", envoyID)
		}
		// The compare-mode replay carries Envoy's id, and the disagreement
		// (a answers "a", s answers "s") is filed under it.
		deadline := time.Now().Add(10 * time.Second)
		var d api.Disagreements
		for time.Now().Before(deadline) {
			if s.headerValues("x-request-id")[envoyID] > 0 {
				d = api.Disagreements{}
				getJSON(t, "http://"+g.admin()+"/v1/endpoints/model/shadows/s/disagreements", "", &d)
				if sampleWithID(d.Samples, envoyID) {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if s.headerValues("x-request-id")["client-chosen-id"] != 0 || s.headerValues("x-request-id")[envoyID] != 1 {
			t.Errorf("shadow saw request ids %v; want Envoy's %s once", s.headerValues("x-request-id"), envoyID)
		}
		// Filed under Envoy's id (among the samples: the probes' replays
		// may finish just after this one).
		if !sampleWithID(d.Samples, envoyID) {
			t.Errorf("disagreement samples %+v; want one under request id %s", d.Samples, envoyID)
		}
	})

	t.Run("client x-envoy headers", func(t *testing.T) {
		start := time.Now()
		r, err := g.client.get("/model/predict", "x-user-id", "slow", "x-slow", "1", "x-envoy-upstream-rq-timeout-ms", "1")
		if err != nil || r.status != 200 {
			t.Fatalf("a client's x-envoy-upstream-rq-timeout-ms: 1 changed Envoy's timeout: %v status %d after %v", err, r.status, time.Since(start))
		}
		if n := a.headerValues("x-envoy-upstream-rq-timeout-ms")["1"]; n != 0 {
			t.Errorf("backend got the client's x-envoy-upstream-rq-timeout-ms %d times", n)
		}
	})

	t.Run("x-forwarded-for", func(t *testing.T) {
		// xff_num_trusted_hops 0: the TCP peer is the client, whatever it
		// claims.
		if r, err := g.client.get("/model/predict", "x-user-id", "xff", "x-forwarded-for", "203.0.113.7"); err != nil || r.status != 200 {
			t.Fatalf("%v %+v", err, r)
		}
		if n := a.headerValues("x-envoy-external-address")["127.0.0.1"]; n == 0 {
			t.Errorf("x-envoy-external-address %v, want 127.0.0.1 (the peer)", a.headerValues("x-envoy-external-address"))
		}
		if n := a.headerValues("x-envoy-external-address")["203.0.113.7"]; n != 0 {
			t.Errorf("a client-sent x-forwarded-for was trusted with xff_num_trusted_hops 0")
		}
		// One trusted proxy in front: the address it appended is the client.
		v := g.envoy.xdsVersions()["listeners"]
		writeFile(t, g.cfg, g.ports.listenYAML()+edgeGatewayYAML(g.port, extra+", xff_num_trusted_hops: 1")+body)
		g.waitListener(t, v)
		c := newGatewayClient(g.port) // connections to the old listener drain
		g.client = c
		if r, err := c.get("/model/predict", "x-user-id", "xff", "x-forwarded-for", "198.51.100.1, 203.0.113.7"); err != nil || r.status != 200 {
			t.Fatalf("%v %+v", err, r)
		}
		if n := a.headerValues("x-envoy-external-address")["203.0.113.7"]; n != 1 {
			t.Errorf("with one trusted hop x-envoy-external-address %v, want 203.0.113.7 once", a.headerValues("x-envoy-external-address"))
		}
	})

	t.Run("paths", func(t *testing.T) {
		for _, tc := range []struct {
			path     string
			status   int
			location string
		}{
			{"/model", 200, ""},
			{"/model/", 200, ""},
			{"/model?x=1", 200, ""},
			{"/model/v1/predict", 200, ""},
			{"//model///predict", 200, ""},      // merge_slashes
			{"/nope/../model/predict", 200, ""}, // normalize_path
			{"/model-v2/predict", 404, ""},      // whole segments only
			{"/modelx", 404, ""},
			{"/MODEL/predict", 404, ""},
			{"/model/../admin", 404, ""},
			{"/model%2Fpredict", 307, "/model/predict"}, // escaped slash: unescaped and redirected
			{"/model%2f..%2fadmin", 307, "/admin"},
			{"/model%5Cpredict", 307, "/model/predict"},
		} {
			r := rawGET(t, g.port, tc.path, "x-user-id", "paths")
			if r.StatusCode != tc.status || r.Header.Get("location") != tc.location {
				t.Errorf("%s: status %d location %q, want %d %q", tc.path, r.StatusCode, r.Header.Get("location"), tc.status, tc.location)
			}
		}
	})

	t.Run("no ext_proc for unmatched paths", func(t *testing.T) {
		before := g.envoy.extProcStreams()
		for i := 0; i < 50; i++ {
			for _, p := range []string{fmt.Sprintf("/unknown/%d", i), fmt.Sprintf("/model-v2/%d", i)} {
				if r, err := g.client.get(p, "x-user-id", "u"); err != nil || r.status != 404 {
					t.Fatalf("%s: %v %+v", p, err, r)
				}
			}
		}
		if n := g.envoy.extProcStreams() - before; n != 0 {
			t.Errorf("100 requests to unmatched paths opened %d ext_proc streams, want 0", n)
		}
		before = g.envoy.extProcStreams()
		for i := 0; i < 10; i++ {
			if r, err := g.client.get("/model/predict", "x-user-id", fmt.Sprint("m", i)); err != nil || r.status != 200 {
				t.Fatalf("%v %+v", err, r)
			}
		}
		// decide + observe: two streams per routed request.
		if n := g.envoy.extProcStreams() - before; n < 20 {
			t.Errorf("10 routed requests opened %d ext_proc streams, want 20 (decide and observe)", n)
		}
	})

	t.Run("underscores in header names", func(t *testing.T) {
		before := a.count()
		if r := rawGET(t, g.port, "/model/predict", "x_user_id", "bob"); r.StatusCode != 400 {
			t.Errorf("x_user_id header: status %d, want 400", r.StatusCode)
		}
		if a.count() != before {
			t.Error("a request with an underscore header reached the backend")
		}
		if n := sumMatching(g.envoy.stats(), "underscores"); n == 0 {
			t.Errorf("no Envoy counter of requests rejected for underscores: %v", matching(g.envoy.stats(), "http1."))
		}
	})

	t.Run("header size", func(t *testing.T) {
		if r := rawGET(t, g.port, "/model/predict", "x-big", strings.Repeat("x", 9<<10)); r.StatusCode != 431 {
			t.Errorf("9 KiB header with max_request_headers_kb 8: status %d, want 431", r.StatusCode)
		}
		if r := rawGET(t, g.port, "/model/predict", "x-big", strings.Repeat("x", 6<<10)); r.StatusCode != 200 {
			t.Errorf("6 KiB header: status %d, want 200", r.StatusCode)
		}
	})

	t.Run("slow headers", func(t *testing.T) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_, _ = io.WriteString(c, "GET /model/predict HTTP/1.1\r\nHost: gateway\r\n") // never finished
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		took := time.Since(start)
		if err != nil || resp.StatusCode != 408 || took < 900*time.Millisecond || took > 5*time.Second {
			t.Errorf("unfinished headers: %v, status %v after %v; want 408 after request_headers_timeout (1s)", err, resp, took)
		}
		if n := g.envoy.stat("http.modelsplit.downstream_rq_header_timeout"); n == 0 {
			t.Error("http.modelsplit.downstream_rq_header_timeout not counted")
		}
	})
	g.envoy.assertNoRejections()
}

func sumMatching(stats map[string]uint64, sub string) uint64 {
	var n uint64
	for k, v := range stats {
		if strings.Contains(k, sub) {
			n += v
		}
	}
	return n
}

// Scenario: limits. Envoy advertises the configured HTTP/2 limits, holds
// the listener's buffer limit and still carries (and mirrors) request
// bodies far larger than it, and closes connections past the bootstrap's
// global connection limit while its admin API stays reachable.
func TestEnvoyEdgeLimits(t *testing.T) {
	a, m := startHTTPBackend(t, "a"), startHTTPBackend(t, "m")
	var mu sync.Mutex
	sizes := map[string][]int{}
	for _, be := range []*httpBackend{a, m} {
		be := be
		be.setHandler(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			mu.Lock()
			sizes[be.name] = append(sizes[be.name], int(n))
			mu.Unlock()
			_, _ = io.WriteString(w, be.name)
		})
	}
	const maxConns = 4
	g := startEdgeGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: [%q]}
    shadows:
      - {name: m, percent: 100, per_request: true, backends: [%q]}
`, a.addr, m.addr), "limits: {http2_max_concurrent_streams: 7, http2_initial_stream_window_bytes: 131072, http2_initial_connection_window_bytes: 2097152}",
		"/model/probe", []string{"-max-connections", strconv.Itoa(maxConns)}, "x-user-id", "probe")

	t.Run("HTTP/2 settings", func(t *testing.T) {
		settings, connWindow := h2Settings(t, g.port)
		if settings[http2.SettingMaxConcurrentStreams] != 7 || settings[http2.SettingInitialWindowSize] != 131072 {
			t.Errorf("Envoy's SETTINGS %v; want MAX_CONCURRENT_STREAMS 7, INITIAL_WINDOW_SIZE 131072", settings)
		}
		if connWindow != 2097152 {
			t.Errorf("connection window %d, want 2097152", connWindow)
		}
		t.Logf("Envoy's SETTINGS %v, connection window %d", settings, connWindow)
	})

	t.Run("buffer limit and large bodies", func(t *testing.T) {
		if got := listenerField(t, g.envoy, "per_connection_buffer_limit_bytes"); got != float64(32768) {
			t.Errorf("Envoy's listener per_connection_buffer_limit_bytes = %v, want 32768", got)
		}
		mu.Lock()
		sizes = map[string][]int{}
		mu.Unlock()
		before := m.count()
		body := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB, 8x the buffer limit
		r, err := g.client.do(http.MethodPost, "/model/predict", body, "x-user-id", "big")
		if err != nil || r.status != 200 || r.body != "a" {
			t.Fatalf("256 KiB POST: %v %+v", err, r)
		}
		waitMirrored(t, m, before)
		mu.Lock()
		defer mu.Unlock()
		if len(sizes["a"]) != 1 || sizes["a"][0] != len(body) || len(sizes["m"]) != 1 || sizes["m"][0] != len(body) {
			t.Errorf("bodies received: %v, want %d bytes at the variant and at the mirror", sizes, len(body))
		}
	})

	t.Run("global connection limit", func(t *testing.T) {
		g.client.c.CloseIdleConnections()
		active := fmt.Sprintf("listener.127.0.0.1_%d.downstream_cx_active", g.port)
		g.envoy.waitStat(active, 10*time.Second, func(v uint64) bool { return v == 0 })
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for i := 0; i < maxConns; i++ {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.port))
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
			if status := keepAliveGET(t, c); status != 200 {
				t.Fatalf("connection %d within the limit: status %d", i+1, status)
			}
		}
		overflow := fmt.Sprintf("listener.127.0.0.1_%d.downstream_global_cx_overflow", g.port)
		before := g.envoy.stat(overflow)
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.port))
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.WriteString(c, "GET /model/predict HTTP/1.1\r\nHost: gateway\r\n\r\n")
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				t.Errorf("connection %d past the limit of %d was served: %d", maxConns+1, maxConns, resp.StatusCode)
			}
			c.Close()
		}
		// The admin API is exempt (the stats call itself proves it).
		n := g.envoy.waitStat(overflow, 5*time.Second, func(v uint64) bool { return v > before })
		t.Logf("%s = %d", overflow, n)
		held[0].Close()
		held = held[1:]
		g.envoy.waitStat(active, 10*time.Second, func(v uint64) bool { return v < maxConns })
		c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", g.port))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		if status := keepAliveGET(t, c); status != 200 {
			t.Errorf("after one connection closed, a new one got status %d", status)
		}
	})
	g.envoy.assertNoRejections()
}

// keepAliveGET sends one request on c and reads the answer, leaving the
// connection open.
func keepAliveGET(t testing.TB, c net.Conn) int {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /model/predict HTTP/1.1\r\nHost: gateway\r\nx-user-id: held\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// h2Settings opens an h2c connection with prior knowledge and returns the
// SETTINGS Envoy sends first and its connection-level flow-control window.
func h2Settings(t testing.TB, port int) (map[http2.SettingID]uint32, uint32) {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	settings := map[http2.SettingID]uint32{}
	window := uint32(65535) // RFC 9113's initial connection window
	sawSettings := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if sawSettings {
				return settings, window
			}
			t.Fatalf("reading Envoy's SETTINGS: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			sawSettings = true
			_ = f.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
			_ = fr.WriteSettingsAck()
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				window += f.Increment
				return settings, window
			}
		}
	}
}

// listenerField reads a field of the gateway listener Envoy holds.
func listenerField(t testing.TB, e *envoyProc, field string) any {
	t.Helper()
	configs, _ := e.configDump()["configs"].([]any)
	for _, c := range configs {
		m, _ := c.(map[string]any)
		for _, l := range asList(m["dynamic_listeners"]) {
			active, _ := l["active_state"].(map[string]any)
			if lis, ok := active["listener"].(map[string]any); ok && lis["name"] == "modelsplit_gateway" {
				return lis[field]
			}
		}
	}
	t.Fatal("Envoy holds no active gateway listener")
	return nil
}

// Scenario: past the bootstrap's heap budget Envoy refuses new requests
// (503) instead of growing until it is killed; its admin API still answers.
func TestEnvoyEdgeHeapOverload(t *testing.T) {
	a := startHTTPBackend(t, "a")
	// 1 MiB: Envoy's own heap is past it from the start.
	g := startEdgeGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    variants:
      - {name: a, weight: 1, backends: [%q]}
`, a.addr), "", "", []string{"-max-heap-bytes", "1048576"})
	g.envoy.waitStat("overload.envoy.overload_actions.stop_accepting_requests.active", 10*time.Second, func(v uint64) bool { return v == 1 })
	r, err := g.client.get("/model/predict")
	if err != nil || r.status != 503 || !strings.Contains(r.body, "overload") {
		t.Errorf("request under heap pressure: %v status %d body %q; want Envoy's 503", err, r.status, r.body)
	}
	t.Logf("under heap pressure: status %d body %q", r.status, r.body)
	if a.count() != 0 {
		t.Errorf("backend served %d requests while Envoy was overloaded", a.count())
	}
	if v := g.envoy.stat("overload.envoy.overload_actions.shrink_heap.active"); v != 1 {
		t.Errorf("shrink_heap active = %d, want 1", v)
	}
	g.envoy.assertNoRejections()
}

// Scenario: TLS on the gateway listener, with client certificates: HTTP/2
// by ALPN for a client with a certificate from client_ca_file; nothing for
// a client without one, or for plaintext.
func TestEnvoyEdgeTLS(t *testing.T) {
	a := startHTTPBackend(t, "a")
	dir := t.TempDir()
	serverCA, err := certgen.NewCA("gateway CA")
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := certgen.NewCA("client CA")
	if err != nil {
		t.Fatal(err)
	}
	serverPair, _ := serverCA.Issue("gateway", "127.0.0.1")
	clientPair, _ := clientCA.Issue("client")
	strangerCA, _ := certgen.NewCA("stranger CA")
	strangerPair, _ := strangerCA.Issue("stranger")
	certFile, keyFile, err := serverPair.WriteFiles(dir, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := clientCA.WriteFile(dir, "client-ca")
	if err != nil {
		t.Fatal(err)
	}
	g := startEdgeGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    variants:
      - {name: a, weight: 1, backends: [%q]}
`, a.addr), fmt.Sprintf("tls: {cert_file: %s, key_file: %s, client_ca_file: %s}", certFile, keyFile, caFile), "", nil)

	client := func(pair *certgen.Pair) *http.Client {
		cfg := &tls.Config{RootCAs: serverCA.Pool(), MinVersion: tls.VersionTLS12}
		if pair != nil {
			c, err := pair.TLS()
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{c}
		}
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/model/predict", g.port)
	good := client(&clientPair)
	deadline := time.Now().Add(30 * time.Second)
	var resp *http.Response
	for {
		resp, err = good.Get(url)
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS gateway never answered 200: %v %v", err, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "a" || resp.ProtoMajor != 2 || resp.TLS == nil {
		t.Errorf("with a client certificate: body %q over %s (TLS %v); want a over HTTP/2", b, resp.Proto, resp.TLS != nil)
	}
	served := a.count()
	for name, c := range map[string]*http.Client{"no client certificate": client(nil), "certificate from another CA": client(&strangerPair)} {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: status %d, want the handshake refused", name, resp.StatusCode)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/model/predict", g.port)); err == nil {
		resp.Body.Close()
		t.Errorf("plaintext HTTP on the TLS listener: status %d", resp.StatusCode)
	}
	if a.count() != served {
		t.Errorf("refused clients reached the backend (%d requests)", a.count()-served)
	}
	if n := g.envoy.stat(fmt.Sprintf("listener.127.0.0.1_%d.ssl.handshake", g.port)); n == 0 {
		t.Errorf("no TLS handshakes counted on the gateway listener")
	}
	g.envoy.assertNoRejections()
}

func sampleWithID(samples []api.Sample, id string) bool {
	for _, x := range samples {
		if x.RequestID == id {
			return true
		}
	}
	return false
}
