package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/metrics"
)

// get sends GET path to srv, with "Authorization: <auth>" when auth is not
// empty, and returns the status, the WWW-Authenticate header and the body.
func get(t *testing.T, srv *httptest.Server, path, auth string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(b)
}

// TestReadyzReportsEachCheck: /readyz is 200 only when every check passes,
// and names each check with "ok" or its error.
func TestReadyzReportsEachCheck(t *testing.T) {
	storeErr := errors.New("redis: connection refused")
	var storeDown bool
	srv := httptest.NewServer(New(Options{Checks: []Check{
		{Name: "xds", Fn: func() error { return nil }},
		{Name: "store", Fn: func() error {
			if storeDown {
				return storeErr
			}
			return nil
		}},
	}}))
	defer srv.Close()

	type readyz struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	for _, tc := range []struct {
		down   bool
		code   int
		ready  bool
		checks map[string]string
	}{
		{false, http.StatusOK, true, map[string]string{"xds": "ok", "store": "ok"}},
		{true, http.StatusServiceUnavailable, false, map[string]string{"xds": "ok", "store": storeErr.Error()}},
	} {
		storeDown = tc.down
		code, _, body := get(t, srv, "/readyz", "")
		if code != tc.code {
			t.Errorf("store down=%v: /readyz = %d, want %d (%s)", tc.down, code, tc.code, body)
		}
		var got readyz
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("store down=%v: /readyz body %q: %v", tc.down, body, err)
		}
		if got.Ready != tc.ready || len(got.Checks) != len(tc.checks) {
			t.Errorf("store down=%v: /readyz = %+v, want ready=%v checks=%v", tc.down, got, tc.ready, tc.checks)
		}
		for name, want := range tc.checks {
			if got.Checks[name] != want {
				t.Errorf("store down=%v: check %s = %q, want %q", tc.down, name, got.Checks[name], want)
			}
		}
	}
}

// TestMetricsServedOnlyWithARegistry: /metrics is the Prometheus registry
// when there is one, and not a route otherwise.
func TestMetricsServedOnlyWithARegistry(t *testing.T) {
	m := metrics.New()
	with := httptest.NewServer(New(Options{Metrics: m}))
	defer with.Close()
	code, _, body := get(t, with, "/metrics", "")
	if code != http.StatusOK || !strings.Contains(body, "# TYPE ") {
		t.Errorf("/metrics with a registry = %d %.200q, want 200 and Prometheus text", code, body)
	}

	without := httptest.NewServer(New(Options{}))
	defer without.Close()
	if code, _, body := get(t, without, "/metrics", ""); code != http.StatusNotFound {
		t.Errorf("/metrics without a registry = %d %.200q, want 404", code, body)
	}
}

// TestTokenGuardsEverythingButHealthAndReadiness: with a token, every path
// except /healthz and /readyz needs exactly "Authorization: Bearer <token>";
// without one, nothing asks for it.
func TestTokenGuardsEverythingButHealthAndReadiness(t *testing.T) {
	const token = "s3cret-token"
	open := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "weights") })

	guarded := New(Options{Token: token, Metrics: metrics.New(), Checks: []Check{{Name: "x", Fn: func() error { return nil }}}})
	guarded.Handle("GET /v1/weights", open)
	srv := httptest.NewServer(guarded)
	defer srv.Close()

	for _, tc := range []struct {
		path, auth string
		code       int
	}{
		{"/healthz", "", http.StatusOK},
		{"/readyz", "", http.StatusOK},
		{"/healthz", "Bearer wrong", http.StatusOK},
		{"/v1/weights", "", http.StatusUnauthorized},
		{"/v1/weights", "Bearer wrong", http.StatusUnauthorized},
		{"/v1/weights", "Bearer " + token + "x", http.StatusUnauthorized},
		{"/v1/weights", token, http.StatusUnauthorized},            // no "Bearer " scheme
		{"/v1/weights", "Basic " + token, http.StatusUnauthorized}, // another scheme
		{"/v1/weights", "Bearer " + token, http.StatusOK},
		{"/metrics", "", http.StatusUnauthorized},
		{"/metrics", "Bearer " + token, http.StatusOK},
		{"/nowhere", "", http.StatusUnauthorized}, // refused before routing
		{"/nowhere", "Bearer " + token, http.StatusNotFound},
	} {
		code, challenge, body := get(t, srv, tc.path, tc.auth)
		if code != tc.code {
			t.Errorf("GET %s with %q = %d (%s), want %d", tc.path, tc.auth, code, body, tc.code)
		}
		if code == http.StatusUnauthorized {
			if challenge != `Bearer realm="modelsplit"` {
				t.Errorf("GET %s with %q: WWW-Authenticate = %q", tc.path, tc.auth, challenge)
			}
			var e map[string]string
			if err := json.Unmarshal([]byte(body), &e); err != nil || e["error"] == "" {
				t.Errorf("GET %s with %q: 401 body %q is not {\"error\": ...}", tc.path, tc.auth, body)
			}
		}
		if tc.path == "/v1/weights" && code == http.StatusOK && body != "weights" {
			t.Errorf("GET /v1/weights = %q, want the registered handler's answer", body)
		}
	}

	unguarded := New(Options{Metrics: metrics.New()})
	unguarded.Handle("GET /v1/weights", open)
	usrv := httptest.NewServer(unguarded)
	defer usrv.Close()
	for _, path := range []string{"/healthz", "/v1/weights", "/metrics"} {
		if code, challenge, body := get(t, usrv, path, ""); code != http.StatusOK || challenge != "" {
			t.Errorf("no token: GET %s = %d (WWW-Authenticate %q, %s), want 200 without a challenge", path, code, challenge, body)
		}
	}
}
