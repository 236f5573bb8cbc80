package console

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/stats"
)

func testConfig() *config.Config {
	return &config.Config{Endpoints: []config.Endpoint{{Name: "chat", Variants: []config.Variant{{Name: "stable", Weight: 90}, {Name: "canary", Weight: 10}}}}}
}

func serve(t *testing.T, token string, rec *stats.Recorder) *admin.Handler {
	t.Helper()
	h := admin.New(admin.Options{Token: token, ListenAddr: "127.0.0.1:0"})
	Register(h, Options{Stats: rec, Config: testConfig})
	return h
}

func get(h http.Handler, path, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1"+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// TestTokenGuardsAllButTheShell: with a token, only the shell (the
// prompt, its script and styles) is served without it; the console's
// code and every data route answer 401.
func TestTokenGuardsAllButTheShell(t *testing.T) {
	h := serve(t, "tok", stats.New(stats.Options{}))
	for path, want := range map[string]int{
		"/": 200, "/console/shell.js": 200, "/console/style.css": 200,
		"/console/app.js": 401, "/v1/endpoints/chat/series": 401, "/console/": 401, "/index.html": 401,
	} {
		if got := get(h, path, "").Code; got != want {
			t.Errorf("GET %s without the token: %d, want %d", path, got, want)
		}
	}
	for _, path := range []string{"/console/app.js", "/v1/endpoints/chat/series"} {
		if got := get(h, path, "tok").Code; got != 200 {
			t.Errorf("GET %s with the token: %d, want 200", path, got)
		}
	}
	w := get(h, "/", "")
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if !strings.Contains(w.Body.String(), `id="login"`) || strings.Contains(w.Body.String(), "chat") {
		t.Errorf("the shell should hold the prompt and no data:\n%s", w.Body.String())
	}
	// The browser guard still applies to the public shell.
	req := httptest.NewRequest(http.MethodGet, "http://evil.example/", nil)
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, req)
	if rw.Code != http.StatusForbidden {
		t.Errorf("GET / with Host evil.example: %d, want 403", rw.Code)
	}
}

// TestSeries: per-variant windows with the error ratio and latency
// quantiles; an unknown endpoint is the API's 404 message.
func TestSeries(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 5, 0, time.UTC)
	rec := stats.New(stats.Options{Now: func() time.Time { return now }})
	rec.SetWeights("chat", map[string]int{"stable": 90, "canary": 10})
	st, ca := rec.Variant("chat", "stable"), rec.Variant("chat", "canary")
	for i := 0; i < 100; i++ {
		st.Request(stats.Class2xx, 20*time.Millisecond)
	}
	for i := 0; i < 8; i++ {
		ca.Request(stats.Class2xx, 200*time.Millisecond)
	}
	ca.Request(stats.Class5xx, 200*time.Millisecond)
	ca.Request(stats.ClassNone, 0)
	h := serve(t, "", rec)
	w := get(h, "/v1/endpoints/chat/series?seconds=60", "")
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	var s api.Series
	if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Windows) != 1 || !s.Windows[0].Partial || s.WindowSeconds != 10 || strings.Join(s.Variants, ",") != "stable,canary" {
		t.Fatalf("series %+v", s)
	}
	c := s.Windows[0].Variants["canary"]
	if c.Requests != 10 || c.Errors != 2 || c.ErrorRatio == nil || *c.ErrorRatio != 0.2 {
		t.Errorf("canary %+v: want 10 requests, 2 errors (5xx and no answer), ratio 0.2", c)
	}
	if c.P50 == nil || *c.P50 <= 0.1 || *c.P50 > 0.25 {
		t.Errorf("canary p50 %v, want in the (0.1, 0.25] bucket", c.P50)
	}
	sp := s.Windows[0].Variants["stable"]
	if sp.ErrorRatio == nil || *sp.ErrorRatio != 0 || sp.P99 == nil || math.Abs(*sp.P99-0.02485) > 0.0001 {
		t.Errorf("stable %+v (p99 %v)", sp, *sp.P99)
	}

	w = get(h, "/v1/endpoints/nope/series", "")
	var e api.ErrorBody
	_ = json.Unmarshal(w.Body.Bytes(), &e)
	if w.Code != 404 || e.Error != `unknown endpoint "nope" (endpoints: chat)` {
		t.Errorf("unknown endpoint: %d %q", w.Code, e.Error)
	}
	if w = get(h, "/v1/endpoints/chat/series?seconds=-1", ""); w.Code != 400 {
		t.Errorf("seconds=-1: %d", w.Code)
	}
}
