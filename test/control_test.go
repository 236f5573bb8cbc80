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
