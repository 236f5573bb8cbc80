package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	filterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc/extproctest"
)

// consoleEndpoints is how many endpoints the console test configures:
// the first paint is measured with this many.
const consoleEndpoints = 100

// consoleConfig is `chat` (70/30, a mirror shadow, a rollout plan not
// started) and filler endpoints ep-001… up to n endpoints in all.
func consoleConfig(listen string, n int) string {
	var b strings.Builder
	b.WriteString(listen)
	b.WriteString(`endpoints:
  - name: chat
    match: {path_prefix: /chat}
    sticky: {header: x-user-id}
    variants:
      - {name: stable, weight: 70, backends: ["127.0.0.1:9"]}
      - {name: canary, weight: 30, backends: ["127.0.0.1:9"]}
    shadows:
      - {name: mirror, percent: 10, backends: ["127.0.0.1:9"]}
    rollout:
      canary: canary
      steps:
        - {weight: 50, bake: 1h}
      gates:
        - {metric: error_ratio, max_increase: 0.01, confidence: 0.95}
`)
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, `  - name: ep-%03d
    match: {path_prefix: /ep-%03d}
    sticky: {header: x-user-id}
    variants:
      - {name: stable, weight: 90, backends: ["127.0.0.1:9"]}
      - {name: canary, weight: 10, backends: ["127.0.0.1:9"]}
`, i, i)
		if i == 1 { // a bandit, for the arms table
			b.WriteString("    bandit: {reward: api}\n")
		}
	}
	return b.String()
}

// browserTools finds node, Debian's chromium and the npm project's
// playwright-core (make test-deps installs all three). Missing tools
// skip the test on a developer's machine and fail it under CI=true.
func browserTools(t *testing.T) (node, chromium, dir string) {
	t.Helper()
	missing := func(what string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: run make test-deps (CI=true, so this fails instead of skipping)", what)
		}
		t.Skipf("%s is missing: run make test-deps", what)
	}
	_, file, _, _ := runtime.Caller(0)
	dir = filepath.Join(filepath.Dir(file), "browser")
	var err error
	if node, err = exec.LookPath("node"); err != nil {
		missing("node")
	}
	chromium = os.Getenv("CHROMIUM_BIN")
	if chromium == "" {
		if chromium, err = exec.LookPath("chromium"); err != nil {
			missing("chromium (Debian package)")
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing("test/browser/node_modules (npm ci in test/browser)")
	}
	return node, chromium, dir
}

// consoleTraffic sends n requests on endpoint ep as Envoy would: the
// decision over ext_proc, then the answer to the observe filter, with a
// 503 for every tenth request on errVariant. It returns requests per
// variant.
func consoleTraffic(t *testing.T, conn *grpc.ClientConn, ep, errVariant string, from, n int) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	md := map[string]string{config.ClientMetadataKey: "envoy", config.EndpointMetadataKey: ep}
	mode := &filterpb.ProcessingMode{RequestHeaderMode: filterpb.ProcessingMode_SEND, ResponseHeaderMode: filterpb.ProcessingMode_SEND,
		RequestTrailerMode: filterpb.ProcessingMode_SKIP, ResponseTrailerMode: filterpb.ProcessingMode_SEND}
	got := map[string]int{}
	for i := from; i < from+n; i++ {
		user := fmt.Sprintf("user-%d", i)
		hdrs := []extproctest.Header{extproctest.H(":method", "POST"), extproctest.H(":path", "/"+ep), extproctest.H("x-user-id", user)}
		res, err := extproctest.Do(ctx, conn, extproctest.Request{Metadata: md, Headers: hdrs})
		if err != nil {
			t.Fatal(err)
		}
		v, ok := extproctest.Get(res.RequestHeaders, config.VariantHeader)
		if !ok {
			t.Fatalf("no decision for %s on %s", user, ep)
		}
		status := "200"
		if v == errVariant && i%10 == 0 {
			status = "503"
		}
		if err := extproctest.Observe(ctx, conn, extproctest.Exchange{Metadata: md, Headers: hdrs, Mode: mode,
			ResponseHeaders: []extproctest.Header{extproctest.H(":status", status), extproctest.H(config.VariantHeader, v)}}); err != nil {
			t.Fatal(err)
		}
		got[v]++
	}
	return got
}

type consoleResult struct {
	Screenshots      []string                     `json:"screenshots"`
	FirstDataMs      float64                      `json:"firstDataMs"`
	FirstDataWallMs  float64                      `json:"firstDataWallMs"`
	FCPMs            *float64                     `json:"fcpMs"`
	RowsAtFirstData  int                          `json:"rowsAtFirstData"`
	LoginVisible     bool                         `json:"loginVisible"`
	Shown            map[string]map[string]string `json:"shown"`
	OverviewLine     []string                     `json:"overviewLine"`
	ChartPaths       int                          `json:"chartPaths"`
	ChartTitle       string                       `json:"chartTitle"`
	LiveRefreshed    bool                         `json:"liveRefreshed"`
	CancelledNothing bool                         `json:"cancelledSentNothing"`
	SetWeights       string                       `json:"setWeights"`
	AfterSet         map[string]map[string]string `json:"afterSet"`
	AuditTop         string                       `json:"auditTop"`
	Refused          string                       `json:"refused"`
	AfterRefused     map[string]map[string]string `json:"afterRefused"`
	LastConfirm      string                       `json:"lastConfirm"`
	RolloutStart     string                       `json:"rolloutStart"`
	RolloutShown     string                       `json:"rolloutShown"`
	OwnedRefusal     string                       `json:"ownedRefusal"`
	RolloutAbort     string                       `json:"rolloutAbort"`
	BanditArms       []string                     `json:"banditArms"`
	A11y             []string                     `json:"a11y"`
	KeyboardReaches  *string                      `json:"keyboardReachesEndpoints"`
	Stale            string                       `json:"stale"`
	StaleNotice      string                       `json:"staleNotice"`
	PhoneOverflowPx  int                          `json:"phoneOverflowPx"`
	PageErrors       []string                     `json:"pageErrors"`
	Token            struct {
		AppEmpty      bool   `json:"appEmpty"`
		TextBefore    string `json:"textBefore"`
		APIWithout    int    `json:"apiWithout"`
		AppWithout    int    `json:"appWithout"`
		SeriesWithout int    `json:"seriesWithout"`
		Wrong         string `json:"wrong"`
		RowsAfter     int    `json:"rowsAfter"`
		LoginHidden   bool   `json:"loginHiddenAfter"`
		Change        string `json:"change"`
	} `json:"token"`
}

// TestConsoleInBrowser drives the web console in Chromium against real
// `modelsplit serve` processes with 100 endpoints and traffic through
// the ext_proc API (decisions and observed answers, as Envoy sends
// them): first paint, the shares shown against /metrics, live refresh,
// weights set through the form against `modelsplit status`, a refused
// change showing the API's message, a removed endpoint, phone width,
// and the token prompt off loopback. Screenshots go to test/artifacts/.
func TestConsoleInBrowser(t *testing.T) {
	node, chromium, dir := browserTools(t)
	artifacts, err := filepath.Abs(filepath.Join(dir, "..", "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}

	// The loopback server: no token.
	p := newPorts(t)
	cfgPath := tempConfig(t, consoleConfig(p.listenYAML(), consoleEndpoints))
	srv := startServe(t, cfgPath, p)
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", p.extproc), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sent := consoleTraffic(t, conn, "chat", "canary", 0, 400)
	t.Logf("traffic on chat: %v", sent)

	// The exposed server: admin on every interface, so a token is
	// required; the browser reaches it at 127.0.0.1 (an IP literal is an
	// allowed Host).
	pt := newPorts(t)
	if pt.xds, err = freePort(); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, "console-e2e-token\n")
	exposed := fmt.Sprintf("listen: {xds: \"127.0.0.1:%d\", extproc: \"127.0.0.1:%d\", admin: \"0.0.0.0:%d\"}\nadmin: {token_file: %q}\n",
		pt.xds, pt.extproc, pt.admin, tokenFile)
	startServe(t, tempConfig(t, consoleConfig(exposed, 3)), pt)

	newWeights := map[string]int{"stable": 40, "canary": 60}
	badWeights := map[string]int{"stable": -5, "canary": 60}
	input, _ := json.Marshal(map[string]any{
		"url": "http://" + srv.admin + "/", "tokenUrl": fmt.Sprintf("http://127.0.0.1:%d/", pt.admin), "token": "console-e2e-token",
		"artifacts": artifacts, "chromium": chromium, "endpoint": "chat", "variants": []string{"stable", "canary"},
		"stale": "ep-099", "endpoints": []string{"chat"}, "newWeights": newWeights, "badWeights": badWeights,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "console.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CONSOLE_TEST="+string(input))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var res consoleResult
	var more map[string]int
	gotResult := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "LOG "):
			t.Log("browser:", strings.TrimPrefix(line, "LOG "))
		case line == "WAIT more-traffic":
			more = consoleTraffic(t, conn, "chat", "canary", 400, 50)
			fmt.Fprintln(stdin, "ok")
		case line == "WAIT remove-endpoint":
			// A config reload drops ep-099 while the page shows it.
			writeFile(t, cfgPath, consoleConfig(p.listenYAML(), consoleEndpoints-1))
			waitAPI(t, "http://"+srv.admin+"/v1/endpoints/ep-099", http.StatusNotFound)
			fmt.Fprintln(stdin, "ok")
		case strings.HasPrefix(line, "RESULT "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "RESULT ")), &res); err != nil {
				t.Fatalf("browser result: %v", err)
			}
			gotResult = true
		default:
			t.Log("browser:", line)
		}
	}
	if err := cmd.Wait(); err != nil || !gotResult {
		t.Fatalf("the browser script failed (%v):\n%s", err, stderr.String())
	}
	for _, f := range res.Screenshots {
		if st, err := os.Stat(f); err != nil || st.Size() < 1000 {
			t.Errorf("screenshot %s missing or empty (%v)", f, err)
		}
	}
	t.Logf("screenshots: %s", strings.Join(res.Screenshots, " "))
	fcp := "none"
	if res.FCPMs != nil {
		fcp = fmt.Sprintf("%.0f ms", *res.FCPMs)
	}
	t.Logf("first paint with %d endpoints: numbers on screen %.0f ms after navigation start (%.0f ms wall from goto), first contentful paint %s",
		consoleEndpoints, res.FirstDataMs, res.FirstDataWallMs, fcp)

	// First paint: every endpoint with its numbers within 1 s.
	if res.RowsAtFirstData != consoleEndpoints {
		t.Errorf("first paint showed %d endpoint rows, want %d", res.RowsAtFirstData, consoleEndpoints)
	}
	if res.FirstDataMs <= 0 || res.FirstDataMs > 1000 {
		t.Errorf("useful numbers appeared %.0f ms after navigation start, want within 1000 ms", res.FirstDataMs)
	}
	if res.LoginVisible {
		t.Error("the token prompt showed on a loopback listener without a token")
	}
	if len(res.PageErrors) > 0 {
		t.Errorf("%d errors in the page, the first: %s", len(res.PageErrors), clipBody(res.PageErrors[0]))
	}

	// The shares shown against /metrics (taken after the first batch:
	// the page read them before more traffic was sent).
	fams := scrape(t, srv.admin)
	total := 0
	for _, n := range sent {
		total += n
	}
	weights := map[string]float64{}
	var weightSum float64
	for _, v := range []string{"stable", "canary"} {
		w, _ := series(fams, "modelsplit_variant_weight", map[string]string{"endpoint": "chat", "variant": v})
		weights[v] = w
		weightSum += w
	}
	for _, v := range []string{"stable", "canary"} {
		shown := res.Shown[v]
		if shown == nil {
			t.Fatalf("variant %s not shown: %v", v, res.Shown)
		}
		// The weight shown was in force when the page read it; /metrics
		// is read after the form changed it, so compare with the file's.
		fileWeight := map[string]int{"stable": 70, "canary": 30}[v]
		if shown["weight"] != strconv.Itoa(fileWeight) || shown["configured"] != strconv.Itoa(fileWeight) {
			t.Errorf("%s: weight shown %q, configured %q, want %d", v, shown["weight"], shown["configured"], fileWeight)
		}
		if want := fmt.Sprintf("%.1f%%", 100*float64(fileWeight)/100); shown["weight_share"] != want {
			t.Errorf("%s: new-user share shown %q, want %s", v, shown["weight_share"], want)
		}
		reqs, _ := series(fams, "modelsplit_variant_requests_total", map[string]string{"endpoint": "chat", "variant": v})
		if got := parseShown(shown["requests"]); got != float64(sent[v]) || reqs != float64(sent[v]+more[v]) {
			t.Errorf("%s: requests shown %q, /metrics %v, sent %d then %d", v, shown["requests"], reqs, sent[v], more[v])
		}
		// Live share: this variant's decisions over the endpoint's, which
		// /metrics counts by source.
		decided := sumSeries(fams, "modelsplit_decisions_total", map[string]string{"endpoint": "chat", "variant": v})
		var all float64
		for _, u := range []string{"stable", "canary"} {
			all += sumSeries(fams, "modelsplit_decisions_total", map[string]string{"endpoint": "chat", "variant": u})
		}
		wantShare := float64(sent[v]) / float64(total)
		if decided != float64(sent[v]+more[v]) || all != float64(total+sumInts(more)) {
			t.Errorf("%s: /metrics decisions %v of %v, sent %d of %d (+%v)", v, decided, all, sent[v], total, more)
		}
		if got := parseShown(shown["live_share"]) / 100; math.Abs(got-wantShare) > 0.0006 { // shown to 0.1%
			t.Errorf("%s: live share shown %q, decisions say %.4f", v, shown["live_share"], wantShare)
		}
	}
	if weights["stable"] != float64(newWeights["stable"]) || weights["canary"] != float64(newWeights["canary"]) || weightSum == 0 {
		t.Errorf("/metrics weights after the form: %v, want %v", weights, newWeights)
	}
	if res.ChartPaths < 2 || !strings.Contains(res.ChartTitle, "stable") {
		t.Errorf("requests chart: %d lines, title %q", res.ChartPaths, res.ChartTitle)
	}
	if !res.LiveRefreshed {
		t.Error("more traffic did not show without a reload")
	}
	if !res.CancelledNothing {
		t.Error("a cancelled confirmation still acted")
	}

	// Weights set through the form: `modelsplit status` agrees.
	if !strings.HasPrefix(res.SetWeights, "Done: ") {
		t.Errorf("setting weights through the form answered %q", res.SetWeights)
	}
	out := mustCLI(t, srv.admin, "status", "chat", "--json")
	var st api.EndpointStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, v := range st.Variants {
		if v.Weight != newWeights[v.Name] || res.AfterSet[v.Name]["weight"] != strconv.Itoa(v.Weight) {
			t.Errorf("%s: status says %d, page says %q, the form set %d", v.Name, v.Weight, res.AfterSet[v.Name]["weight"], newWeights[v.Name])
		}
	}
	if !st.Override || !strings.Contains(res.AuditTop, "set_weights") {
		t.Errorf("override %v, audit top row %q", st.Override, res.AuditTop)
	}

	// A refused change shows the API's own message for the same request.
	body, _ := json.Marshal(api.SetWeightsRequest{Weights: badWeights})
	code, msg := send(t, http.MethodPut, "http://"+srv.admin+"/v1/endpoints/chat/weights", "", string(body))
	t.Logf("refused change, as the page shows it: %s", res.Refused)
	if code != http.StatusBadRequest || res.Refused != fmt.Sprintf("Refused (HTTP %d): %s", code, msg) {
		t.Errorf("refused change: page shows %q; the API answers %d %q", res.Refused, code, msg)
	}
	if res.AfterRefused["stable"]["weight"] != "40" {
		t.Errorf("weights after the refused change: %v", res.AfterRefused)
	}
	// Rollout actions: started and aborted from the page; a weight
	// change in between is the API's 409, shown as it says it.
	if !strings.HasPrefix(res.RolloutStart, "Done: Start the rollout of chat") || !strings.Contains(res.RolloutShown, "1 of 1") ||
		!strings.HasPrefix(res.RolloutAbort, "Done: Abort the rollout of chat") {
		t.Errorf("rollout from the page: start %q, shown %q, abort %q", res.RolloutStart, res.RolloutShown, res.RolloutAbort)
	}
	// The bandit's arms as the API gives them: equal weights at the start.
	if len(res.BanditArms) != 2 || !strings.HasPrefix(res.BanditArms[0], "stable") || !strings.HasPrefix(res.BanditArms[1], "canary") ||
		!strings.HasSuffix(res.BanditArms[0], "50.00%") || !strings.HasSuffix(res.BanditArms[1], "50.00%") {
		t.Errorf("bandit arms shown for ep-001: %q, want stable and canary at 50.00%%", res.BanditArms)
	}
	if !strings.HasPrefix(res.OwnedRefusal, "Refused (HTTP 409): endpoint chat is driven by rollout plan ") {
		t.Errorf("set weights while the rollout drives chat: %q", res.OwnedRefusal)
	}
	if len(res.A11y) > 0 {
		t.Errorf("accessibility: %v", res.A11y)
	}
	if res.KeyboardReaches == nil {
		t.Error("Tab from the top of the page never reached an endpoint")
	}

	// The endpoint removed under a stale page: the API's 404, and a notice.
	_, msg404 := send(t, http.MethodPut, "http://"+srv.admin+"/v1/endpoints/ep-099/weights", "", `{"weights":{"stable":1,"canary":0}}`)
	if res.Stale != "Refused (HTTP 404): "+msg404 || !strings.Contains(msg404, `unknown endpoint "ep-099"`) {
		t.Errorf("acting on a removed endpoint: page shows %q, API %q", res.Stale, msg404)
	}
	if !strings.Contains(res.StaleNotice, `"ep-099" is no longer in the config in force`) {
		t.Errorf("removed endpoint notice: %q", res.StaleNotice)
	}
	if res.PhoneOverflowPx > 0 {
		t.Errorf("at 390 px the page scrolls sideways by %d px", res.PhoneOverflowPx)
	}

	// Off loopback: the prompt, nothing without the token.
	tk := res.Token
	if !tk.AppEmpty || strings.Contains(tk.TextBefore, "ep-00") || strings.Contains(tk.TextBefore, "stable") {
		t.Errorf("before the token the page showed data: %q", tk.TextBefore)
	}
	if tk.APIWithout != http.StatusUnauthorized || tk.AppWithout != http.StatusUnauthorized || tk.SeriesWithout != http.StatusUnauthorized {
		t.Errorf("without the token: /v1/endpoints %d, app.js %d, series %d; want 401", tk.APIWithout, tk.AppWithout, tk.SeriesWithout)
	}
	_, msg401 := send(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/v1/endpoints", pt.admin), "not-the-token", "")
	if tk.Wrong != "Refused: "+msg401 {
		t.Errorf("wrong token: page shows %q, API says %q", tk.Wrong, msg401)
	}
	if tk.RowsAfter != 3 || !tk.LoginHidden || !strings.HasPrefix(tk.Change, "Done: ") {
		t.Errorf("with the token: %d rows, prompt hidden %v, change %q", tk.RowsAfter, tk.LoginHidden, tk.Change)
	}
}

func parseShown(s string) float64 {
	f, _ := strconv.ParseFloat(strings.TrimSuffix(strings.ReplaceAll(s, ",", ""), "%"), 64)
	return f
}

func sumInts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// sumSeries adds every series of a family that has these labels.
func sumSeries(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	var sum float64
	f, ok := fams[name]
	if !ok {
		return 0
	}
	for _, m := range f.GetMetric() {
		match := 0
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
				match++
			}
		}
		if match == len(labels) && m.Counter != nil {
			sum += m.Counter.GetValue()
		}
	}
	return sum
}

// waitAPI polls url until it answers code.
func waitAPI(t *testing.T, url string, code int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := httpGet(url)
		if got == code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d after 10s, want %d", url, got, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
