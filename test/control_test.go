package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

// cli runs the modelsplit binary against a server's admin API.
func cli(t *testing.T, admin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Getenv(envBinary), args...)
	cmd.Env = append(os.Environ(), "MODELSPLIT_ADMIN=http://"+admin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("modelsplit %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func mustCLI(t *testing.T, admin string, args ...string) string {
	t.Helper()
	out, err := cli(t, admin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// scrape parses /metrics with the Prometheus text parser.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet("http://" + admin + "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse as Prometheus text: %v", err)
	}
	return fams
}

// series returns the value of the family's series with exactly these labels.
func series(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := true
		for k, v := range labels {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestLiveControlEndToEnd: the CLI changes the split a real grpc-go client
// sees within a second, promote and rollback work, the last change
// survives a restart, and /metrics has per-variant series with the counts
// the traffic produced (through the client's observe filter).
func TestLiveControlEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := newPorts(t)
	cfgPath := tempConfig(t, echoConfig(p, a, b, 70, 30))
	srv := startServe(t, cfgPath, p)
	admin := srv.admin
	client := xdsClient(t, "echo")
	v0 := ackedRoute(t, "echo", "", 15*time.Second)

	// Observation: per-variant counts equal what the backends served.
	res := callKeepingContext(ctx, client, 2000, "x-user-id", "obs")
	assertShare(t, "70/30 from the file", res, "a", 0.70, 0.04)
	waitSeries(t, admin, "modelsplit_variant_requests_total", map[string]string{"endpoint": "echo", "variant": "a"}, float64(res.byBackend["a"]))
	waitSeries(t, admin, "modelsplit_variant_requests_total", map[string]string{"endpoint": "echo", "variant": "b"}, float64(res.byBackend["b"]))
	fams := scrape(t, admin)
	for _, v := range []string{"a", "b"} {
		ok2xx, _ := series(fams, "modelsplit_variant_responses_total", map[string]string{"endpoint": "echo", "variant": v, "class": "2xx"})
		lat, _ := series(fams, "modelsplit_variant_latency_seconds", map[string]string{"endpoint": "echo", "variant": v})
		if ok2xx != float64(res.byBackend[v]) || lat != float64(res.byBackend[v]) {
			t.Errorf("variant %s: 2xx=%v latency samples=%v, want %d each", v, ok2xx, lat, res.byBackend[v])
		}
		if w, _ := series(fams, "modelsplit_variant_weight", map[string]string{"endpoint": "echo", "variant": v}); (v == "a" && w != 70) || (v == "b" && w != 30) {
			t.Errorf("variant_weight{%s} = %v", v, w)
		}
	}
	t.Logf("observed per variant: a=%d b=%d (backends served the same)", res.byBackend["a"], res.byBackend["b"])

	// set-weights: the client ACKs the new split. The test waits for the
	// ACK (up to 10s, a margin that holds on a loaded 2-core machine) and
	// logs how long it took; speed is measured by the xDS benchmarks.
	start := time.Now()
	out := mustCLI(t, admin, "set-weights", "echo", "a=20", "b=80")
	v1 := ackedRoute(t, "echo", v0, 10*time.Second)
	t.Logf("set-weights → client ACK in %v (CLI said %q)", time.Since(start), strings.TrimSpace(out))
	res = callN(ctx, client, 2000, 4, "x-user-id", "w")
	assertShare(t, "after set-weights 20/80", res, "a", 0.20, 0.04)

	// promote: everything to b.
	mustCLI(t, admin, "promote", "echo", "b")
	v2 := ackedRoute(t, "echo", v1, 5*time.Second)
	res = callN(ctx, client, 1000, 4, "x-user-id", "p")
	assertShare(t, "after promote b", res, "b", 1.0, 0)

	// rollback: back to 20/80.
	mustCLI(t, admin, "rollback", "echo")
	v3 := ackedRoute(t, "echo", v2, 5*time.Second)
	res = callN(ctx, client, 2000, 4, "x-user-id", "r")
	assertShare(t, "after rollback", res, "a", 0.20, 0.04)

	// status shows the override, in a table and as JSON.
	table := mustCLI(t, admin, "status")
	if !strings.Contains(table, "live override") || !strings.Contains(table, "ENDPOINT echo") {
		t.Errorf("status table:\n%s", table)
	}
	var st api.EndpointList
	if err := json.Unmarshal([]byte(mustCLI(t, admin, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if e := st.Endpoints[0]; !e.Override || e.Variants[0].Weight != 20 || e.Variants[0].ConfiguredWeight != 70 || e.Variants[1].Users == nil {
		t.Errorf("status --json: %+v", e)
	}
	audit := mustCLI(t, admin, "audit")
	for _, action := range []string{"set_weights", "promote", "rollback"} {
		if !strings.Contains(audit, action) {
			t.Errorf("audit lacks %s:\n%s", action, audit)
		}
	}

	// Restart: the rolled-back 20/80 is still in force.
	srv.stop()
	srv = startServe(t, cfgPath, p)
	ackedRoute(t, "echo", v3, 15*time.Second)
	res = callN(ctx, client, 2000, 4, "x-user-id", "restart")
	assertShare(t, "after restart", res, "a", 0.20, 0.04)
	if _, err := os.Stat(strings.TrimSuffix(cfgPath, filepath.Ext(cfgPath)) + ".state.json"); err != nil {
		t.Errorf("state file: %v", err)
	}

	// Precedence: editing the file's weights supersedes the override.
	writeFile(t, cfgPath, echoConfig(p, a, b, 50, 50))
	srv.waitLog(10*time.Second, "superseded")
	var one api.EndpointStatus
	getJSON(t, "http://"+srv.admin+"/v1/endpoints/echo", "", &one)
	if one.Override || one.Variants[0].Weight != 50 {
		t.Errorf("after editing the file: %+v", one)
	}
}

func waitSeries(t *testing.T, admin, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got float64
	for time.Now().Before(deadline) {
		got, _ = series(scrape(t, admin), name, labels)
		if got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("%s%v = %v, want %v", name, labels, got, want)
}

func getJSON(t *testing.T, url, token string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

func send(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // as the CLI sends it
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e api.ErrorBody
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return resp.StatusCode, e.Error
	}
	return resp.StatusCode, string(b)
}

// TestAdminAPISecurityAndErrors: an admin listener off loopback needs the
// token; bad requests get 4xx answers that name the problem.
func TestAdminAPISecurityAndErrors(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := newPorts(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, "s3cret-token\n")
	cfg := strings.Replace(echoConfig(p, a, b, 50, 50), fmt.Sprintf("admin: \"127.0.0.1:%d\"", p.admin), fmt.Sprintf("admin: \"0.0.0.0:%d\"", p.admin), 1) +
		"admin: {token_file: " + tokenFile + "}\n"
	srv := startServe(t, tempConfig(t, cfg), p)
	base := "http://" + srv.admin

	if code, body := send(t, http.MethodGet, base+"/v1/endpoints", "", ""); code != http.StatusUnauthorized || !strings.Contains(body, "bearer token") {
		t.Errorf("no token: %d %s", code, body)
	}
	if code, _ := send(t, http.MethodGet, base+"/metrics", "wrong", ""); code != http.StatusUnauthorized {
		t.Errorf("wrong token on /metrics: %d", code)
	}
	if code, _ := send(t, http.MethodPut, base+"/v1/endpoints/echo/weights", "", `{"weights":{"a":0,"b":100}}`); code != http.StatusUnauthorized {
		t.Errorf("change without token: %d", code)
	}
	if _, err := cli(t, srv.admin, "status"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("CLI without token: %v", err)
	}
	if out, err := cli(t, srv.admin, "status", "-token-file", tokenFile); err != nil || !strings.Contains(out, "echo") {
		t.Errorf("CLI with token: %v %s", err, out)
	}

	tok := "s3cret-token"
	for _, c := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", "/v1/endpoints/echo/weights", `{"weights":`, 400, "truncated JSON"},
		{"PUT", "/v1/endpoints/echo/weights", `not json`, 400, "malformed JSON at byte"},
		{"PUT", "/v1/endpoints/echo/weights", ``, 400, "body: empty"},
		{"PUT", "/v1/endpoints/echo/weights", `{"weight":{"a":1}}`, 400, `unknown field "weight"`},
		{"PUT", "/v1/endpoints/echo/weights", `{"weights":{"a":"ten","b":1}}`, 400, `field "weights" must be int, got JSON string`},
		{"PUT", "/v1/endpoints/echo/weights", `{"weights":{"a":10}}`, 400, `variant "b" is missing`},
		{"PUT", "/v1/endpoints/echo/weights", `{"weights":{"a":-1,"b":5}}`, 400, "weights.a: must not be negative"},
		{"PUT", "/v1/endpoints/echo/weights", `{"weights":{"a":0,"b":0}}`, 400, "sum to zero"},
		{"PUT", "/v1/endpoints/echo/weights", `{"weights":{"a":1,"b":1,"z":1}}`, 400, `unknown variant "z"`},
		{"PUT", "/v1/endpoints/nope/weights", `{"weights":{"a":1}}`, 404, `unknown endpoint "nope" (endpoints: echo)`},
		{"POST", "/v1/endpoints/echo/promote", `{}`, 400, `"variant" is required`},
		{"POST", "/v1/endpoints/echo/promote", `{"variant":"c"}`, 400, `unknown variant "c"`},
		{"POST", "/v1/endpoints/echo/rollback", ``, 409, "nothing to roll back"},
		{"POST", "/v1/endpoints/echo/shadows/x/pause", ``, 404, `no shadow "x"`},
		{"GET", "/v1/audit?limit=abc", ``, 400, "not a positive integer"},
		{"GET", "/v1/nothing", ``, 404, "no such admin API path"},
	} {
		code, body := send(t, c.method, base+c.path, tok, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s %q: %d %s, want %d containing %q", c.method, c.path, c.body, code, strings.TrimSpace(body), c.code, c.want)
		}
	}
	// Refused changes changed nothing.
	var one api.EndpointStatus
	getJSON(t, base+"/v1/endpoints/echo", tok, &one)
	if one.Override || one.Variants[0].Weight != 50 {
		t.Errorf("a refused change left a trace: %+v", one)
	}
}

// callKeepingContext makes n calls on the long-lived ctx, never
// cancelling a per-call context: grpc-go derives its observe side stream
// from the call's context, so cancelling the call context as soon as the
// call returns (defer cancel()) can reset that stream before the
// response headers it carries reach the observer (see README, telemetry).
func callKeepingContext(ctx context.Context, c testgrpc.TestServiceClient, n int, md ...string) callResult {
	res := callResult{byBackend: map[string]int{}}
	cctx := metadata.AppendToOutgoingContext(ctx, md...)
	for i := 0; i < n; i++ {
		resp, err := c.UnaryCall(cctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			res.failed++
			if res.firstErr == nil {
				res.firstErr = err
			}
			continue
		}
		res.byBackend[resp.GetHostname()]++
	}
	return res
}

// serve refuses to expose the admin API off loopback without a token, and
// starts once it has one (environment or token file).
func TestServeRefusesExposedAdminWithoutToken(t *testing.T) {
	p := newPorts(t)
	exposed := fmt.Sprintf("listen: {xds: \"127.0.0.1:%d\", extproc: \"127.0.0.1:%d\", admin: \"0.0.0.0:%d\"}\n", p.xds, p.extproc, p.admin) +
		"endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    variants:\n      - {name: a, weight: 1, backends: [\"127.0.0.1:9\"]}\n"
	cfg := tempConfig(t, exposed)
	cmd := exec.Command(os.Getenv(envBinary), "serve", "-config", cfg)
	cmd.Env = append(os.Environ(), "MODELSPLIT_ADMIN_TOKEN=")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("serve with the admin API on 0.0.0.0 and no token started (exit 0):\n%s", out)
	}
	if !strings.Contains(string(out), "token") {
		t.Errorf("serve refused, but the message does not name the token:\n%s", out)
	}
	if code, _ := httpGet(fmt.Sprintf("http://127.0.0.1:%d/healthz", p.admin)); code != 0 {
		t.Errorf("something answers on the admin port after the refusal (status %d)", code)
	}
	// With a token it serves, and the API asks for it.
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg, exposed+fmt.Sprintf("admin: {token_file: %q}\n", tok))
	startServe(t, cfg, p)
	if code, _ := send(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/v1/endpoints", p.admin), "", ""); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/endpoints without the token: %d, want 401", code)
	}
	if code, _ := send(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/v1/endpoints", p.admin), "e2e-token", ""); code != http.StatusOK {
		t.Errorf("GET /v1/endpoints with the token: %d, want 200", code)
	}
}

// adminRequest sends one admin API request with the given headers (Host
// is set through req.Host) and returns the status and the error message.
func adminRequest(t *testing.T, method, url, body string, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e api.ErrorBody
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return resp.StatusCode, e.Error
	}
	return resp.StatusCode, string(b)
}

// TestAdminAPIRefusesCrossSiteRequests: a web page in the operator's
// browser cannot use the loopback admin API, which has no token: a
// "simple" cross-site POST (text/plain, no preflight), a request from
// another origin (Origin, Sec-Fetch-Site) and a DNS-rebinding request
// (Host is the attacker's name) are all refused and change nothing,
// while the CLI and same-origin requests keep working.
func TestAdminAPIRefusesCrossSiteRequests(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := newPorts(t)
	srv := startServe(t, tempConfig(t, echoConfig(p, a, b, 50, 50)), p)
	base := "http://" + srv.admin
	port := fmt.Sprint(p.admin)
	jsonCT := map[string]string{"Content-Type": "application/json"}
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{"Content-Type": "application/json"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}

	for _, c := range []struct {
		name, method, path, body string
		headers                  map[string]string
		code                     int
		want                     string
	}{
		// A form or fetch with mode no-cors: text/plain needs no preflight.
		{"text/plain promote", "POST", "/v1/endpoints/echo/promote", `{"variant":"b"}`,
			map[string]string{"Content-Type": "text/plain"}, 415, "Content-Type: application/json"},
		{"text/plain weights", "PUT", "/v1/endpoints/echo/weights", `{"weights":{"a":0,"b":100}}`,
			map[string]string{"Content-Type": "text/plain;charset=UTF-8"}, 415, "Content-Type: application/json"},
		{"form rollback", "POST", "/v1/endpoints/echo/rollback", `x=1`,
			map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"},
		{"bodyless reset", "DELETE", "/v1/endpoints/echo/override", ``, nil, 415, "Content-Type"},
		// Another origin, even with the right content type.
		{"cross-origin promote", "POST", "/v1/endpoints/echo/promote", `{"variant":"b"}`,
			with(map[string]string{"Origin": "http://evil.example"}), 403, "origin"},
		{"null origin", "POST", "/v1/endpoints/echo/promote", `{"variant":"b"}`,
			with(map[string]string{"Origin": "null"}), 403, "origin"},
		{"other localhost port", "POST", "/v1/endpoints/echo/promote", `{"variant":"b"}`,
			with(map[string]string{"Origin": "http://127.0.0.1:3000"}), 403, "origin"},
		{"sec-fetch-site cross-site", "PUT", "/v1/endpoints/echo/weights", `{"weights":{"a":0,"b":100}}`,
			with(map[string]string{"Sec-Fetch-Site": "cross-site"}), 403, "Sec-Fetch-Site"},
		{"sec-fetch-site same-site", "PUT", "/v1/endpoints/echo/weights", `{"weights":{"a":0,"b":100}}`,
			with(map[string]string{"Sec-Fetch-Site": "same-site"}), 403, "Sec-Fetch-Site"},
		{"cross-site read", "GET", "/v1/audit", ``,
			map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403, "origin"},
		// DNS rebinding: the page's own name now resolves to 127.0.0.1.
		{"rebinding promote", "POST", "/v1/endpoints/echo/promote", `{"variant":"b"}`,
			with(map[string]string{"Host": "rebind.evil.example:" + port}), 403, "admin.allowed_hosts"},
		{"rebinding read", "GET", "/v1/endpoints", ``,
			map[string]string{"Host": "rebind.evil.example:" + port}, 403, "admin.allowed_hosts"},
		{"rebinding metrics", "GET", "/metrics", ``,
			map[string]string{"Host": "rebind.evil.example:" + port}, 403, "admin.allowed_hosts"},
	} {
		code, body := adminRequest(t, c.method, base+c.path, c.body, c.headers)
		t.Logf("%s: %s %s → HTTP %d", c.name, c.method, c.path, code)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %s %s: HTTP %d %q, want %d containing %q", c.name, c.method, c.path, code, clipBody(body), c.code, c.want)
		}
	}
	var one api.EndpointStatus
	getJSON(t, base+"/v1/endpoints/echo", "", &one)
	if one.Override || one.Variants[0].Weight != 50 || one.Variants[1].Weight != 50 {
		t.Errorf("a refused request changed the weights: %+v", one.Variants)
	}
	var audit api.AuditList
	getJSON(t, base+"/v1/audit", "", &audit)
	if len(audit.Entries) != 0 {
		t.Errorf("refused requests were audited as changes: %+v", audit.Entries)
	}

	// Allowed: loopback Host names, same-origin browser requests, no Origin
	// at all (curl, the CLI).
	for _, c := range []struct {
		name    string
		headers map[string]string
	}{
		{"localhost", with(map[string]string{"Host": "localhost:" + port})},
		{"[::1]", with(map[string]string{"Host": "[::1]:" + port})},
		{"same origin", with(map[string]string{"Origin": base, "Sec-Fetch-Site": "same-origin"})},
		{"typed URL", with(map[string]string{"Sec-Fetch-Site": "none"})},
		{"charset", map[string]string{"Content-Type": "application/json; charset=utf-8"}},
	} {
		if code, body := adminRequest(t, "PUT", base+"/v1/endpoints/echo/weights", `{"weights":{"a":60,"b":40}}`, c.headers); code != 200 {
			t.Errorf("%s: HTTP %d %s, want 200", c.name, code, clipBody(body))
		}
	}
	if code, body := adminRequest(t, "GET", base+"/healthz", "", map[string]string{"Host": "localhost"}); code != 200 {
		t.Errorf("GET /healthz with Host localhost: %d %s", code, body)
	}
	if code, body := adminRequest(t, "POST", base+"/v1/endpoints/echo/rollback", "", jsonCT); code != 200 {
		t.Errorf("bodyless rollback with Content-Type: application/json: %d %s", code, body)
	}
	// The CLI, including the bodyless changes.
	mustCLI(t, srv.admin, "promote", "echo", "b")
	mustCLI(t, srv.admin, "rollback", "echo")
	mustCLI(t, srv.admin, "set-weights", "echo", "a=10", "b=90")
	mustCLI(t, srv.admin, "reset", "echo")
	mustCLI(t, srv.admin, "status")
	mustCLI(t, srv.admin, "audit")
}

func clipBody(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// TestAdminAllowedHosts: names in admin.allowed_hosts (exact or *.domain)
// may be used in Host, others are refused, and a reload applies a new list.
func TestAdminAllowedHosts(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := newPorts(t)
	cfgPath := tempConfig(t, echoConfig(p, a, b, 50, 50)+"admin: {allowed_hosts: [modelsplit-admin.internal, \"*.ops.example\"]}\n")
	srv := startServe(t, cfgPath, p)
	base := "http://" + srv.admin
	port := fmt.Sprint(p.admin)
	check := func(host string, want int) {
		t.Helper()
		code, body := adminRequest(t, "PUT", base+"/v1/endpoints/echo/weights", `{"weights":{"a":60,"b":40}}`,
			map[string]string{"Host": host, "Content-Type": "application/json"})
		if code != want {
			t.Errorf("Host %s: HTTP %d %s, want %d", host, code, clipBody(body), want)
		}
	}
	check("modelsplit-admin.internal:"+port, 200)
	check("MODELSPLIT-ADMIN.internal", 200)
	check("grafana.ops.example:"+port, 200)
	check("ops.example:"+port, 403) // *.domain matches below the domain only
	check("modelsplit-admin.internal.evil.example:"+port, 403)
	check("127.0.0.1:"+port, 200)

	writeFile(t, cfgPath, echoConfig(p, a, b, 50, 50)+"admin: {allowed_hosts: [\"*.ops.example\"]}\n")
	srv.waitLog(10*time.Second, "config reloaded")
	check("modelsplit-admin.internal:"+port, 403)
	check("grafana.ops.example:"+port, 200)
}

// TestServeRefusesForeignStateFile: a state file (admin.state_file, or
// the default <config>.state.json) holding anything but modelsplit live
// state stops serve at start with a clear error, and the file is left
// as it was; before, the next live change overwrote it.
func TestServeRefusesForeignStateFile(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	for _, c := range []struct{ name, content string }{
		{"admin.state_file", "# my notes\nimportant: true\n"},
		{"default", `{"not": "a state"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPorts(t)
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "modelsplit.yaml")
			stateFile := filepath.Join(dir, "modelsplit.state.json")
			cfg := echoConfig(p, a, b, 50, 50)
			if c.name == "admin.state_file" {
				stateFile = filepath.Join(dir, "notes.yaml")
				cfg += fmt.Sprintf("admin: {state_file: %q}\n", stateFile)
			}
			writeFile(t, cfgPath, cfg)
			writeFile(t, stateFile, c.content)

			cmd := exec.Command(os.Getenv(envBinary), "serve", "-config", cfgPath)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				if err == nil {
					t.Fatalf("serve exited 0:\n%s", out.String())
				}
				msg := out.String()
				t.Logf("serve refused to start: %s", strings.TrimSpace(msg[max(0, strings.LastIndex(strings.TrimSpace(msg), "\n")):]))
				if !strings.Contains(msg, stateFile) || !strings.Contains(msg, "not a modelsplit live state") || !strings.Contains(msg, "refusing to start") {
					t.Errorf("the error does not name the file and the problem:\n%s", msg)
				}
			case <-time.After(10 * time.Second):
				// Serving: show what the next change does to the file.
				base := fmt.Sprintf("http://127.0.0.1:%d", p.admin)
				code, _ := adminRequest(t, "PUT", base+"/v1/endpoints/echo/weights", `{"weights":{"a":10,"b":90}}`,
					map[string]string{"Content-Type": "application/json"})
				got, _ := os.ReadFile(stateFile)
				_ = cmd.Process.Kill()
				<-exited
				t.Fatalf("serve started with a foreign state file; a change answered HTTP %d and the file now holds %d bytes (was %d): %q",
					code, len(got), len(c.content), clipBody(string(got)))
			}
			if got, _ := os.ReadFile(stateFile); string(got) != c.content {
				t.Errorf("the file changed: %q", got)
			}
		})
	}
}

// TestLiveStateSurvivesRedisLoss: two `modelsplit serve` replicas share
// Redis. After FLUSHALL the live state is back in Redis within about one
// sync interval (1 s), a replica started afterwards serves the live
// weights, its next change is persisted and reaches the others; while the
// store cannot hold the state, /readyz and the metrics say so.
func TestLiveStateSurvivesRedisLoss(t *testing.T) {
	r := testredis.Start(t)
	ctx := context.Background()
	const key = "modelsplit:control"
	var ps [3]ports
	for i := range ps {
		ps[i] = newPorts(t)
		if i > 0 {
			var err error
			if ps[i].xds, err = freePort(); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := func(p ports) *serveProc { return startServe(t, tempConfig(t, redisConfig(p, r.URL(), 90, 10)), p) }
	weightA := func(s *serveProc) int {
		var one api.EndpointStatus
		getJSON(t, "http://"+s.admin+"/v1/endpoints/face", "", &one)
		return one.Variants[0].Weight
	}
	waitWeight := func(s *serveProc, want int, within time.Duration, what string) {
		t.Helper()
		deadline := time.Now().Add(within)
		for weightA(s) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: weight of a is %d, want %d within %v", what, weightA(s), want, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	exists := func() bool { reply, _ := r.Do(ctx, "EXISTS", key); return reply == ":1" }

	a, b := start(ps[0]), start(ps[1])
	mustCLI(t, a.admin, "set-weights", "face", "a=20", "b=80")
	waitWeight(b, 20, 3*time.Second, "replica b adopts a's change")

	if reply, err := r.Do(ctx, "FLUSHALL"); err != nil || reply != "+OK" {
		t.Fatalf("FLUSHALL: %q %v", reply, err)
	}
	lost := time.Now()
	for !exists() {
		if time.Since(lost) > 5*time.Second {
			t.Fatalf("live state not saved again within 5 s of FLUSHALL (sync interval 1 s)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("live state back in Redis %v after FLUSHALL", time.Since(lost).Round(10*time.Millisecond))
	if d := time.Since(lost); d > 2500*time.Millisecond {
		t.Errorf("saved again only after %v (sync interval 1 s)", d)
	}
	resaved := 0.0
	for _, s := range []*serveProc{a, b} {
		v, _ := s.metric("modelsplit_control_state_lost_total")
		resaved += v
	}
	if resaved < 1 {
		t.Errorf("modelsplit_control_state_lost_total is %v on both replicas", resaved)
	}

	c := start(ps[2])
	waitWeight(c, 20, 3*time.Second, "a replica started after the loss")
	var res api.ChangeResult
	if err := json.Unmarshal([]byte(mustCLI(t, c.admin, "set-weights", "face", "a=30", "b=70", "--json")), &res); err != nil {
		t.Fatal(err)
	}
	if !res.Persisted {
		t.Errorf("the next change after the loss was not persisted: %s", res.Warning)
	}
	waitWeight(a, 30, 3*time.Second, "replica a adopts c's change")
	waitWeight(b, 30, 3*time.Second, "replica b adopts c's change")
	for _, s := range []*serveProc{a, b, c} {
		if code, body := httpGet("http://" + s.admin + "/readyz"); code != 200 {
			t.Errorf("/readyz after the state was saved again: %d %s", code, body)
		}
	}

	// A store that cannot take the state back (the key holds another type).
	r.Do(ctx, "DEL", key)
	if reply, err := r.Do(ctx, "HSET", key, "x", "y"); err != nil || reply != ":1" {
		t.Fatalf("HSET: %q %v", reply, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := httpGet("http://" + a.admin + "/readyz")
		ok, _ := a.metric("modelsplit_control_state_ok")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "live_state") && ok == 0 {
			t.Logf("/readyz while Redis cannot hold the state: %d %s", code, strings.Join(strings.Fields(body), " "))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz %d %q, control_state_ok %v: the mismatch does not show", code, body, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.Do(ctx, "DEL", key)
	deadline = time.Now().Add(5 * time.Second)
	for code, _ := httpGet("http://" + a.admin + "/readyz"); code != 200 || !exists(); code, _ = httpGet("http://" + a.admin + "/readyz") {
		if time.Now().After(deadline) {
			t.Fatalf("not ready again after the key was freed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
