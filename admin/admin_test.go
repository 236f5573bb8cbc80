package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:18002":   true,
		"127.0.0.53:1":      true,
		"localhost:18002":   true,
		"[::1]:18002":       true,
		"0.0.0.0:18002":     false,
		"[::]:18002":        false,
		":18002":            false, // empty host: every interface
		"192.168.1.20:8080": false,
		"10.0.0.1:80":       false,
		"example.com:80":    false,
		"127.0.0.1":         false, // no port: not an address we can judge
		"":                  false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestResolveToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr, file, env string
		want            string
		err             error // nil, ErrTokenRequired, or errAny
	}{
		{"127.0.0.1:1", "", "", "", nil},                // loopback: no token needed
		{"[::1]:1", "", "", "", nil},                    //
		{"localhost:1", "", "", "", nil},                //
		{"0.0.0.0:1", "", "", "", ErrTokenRequired},     // exposed without a token: refused
		{"[::]:1", "", "", "", ErrTokenRequired},        //
		{":1", "", "", "", ErrTokenRequired},            //
		{"192.168.1.5:1", "", "", "", ErrTokenRequired}, //
		{"0.0.0.0:1", "", " env-tok ", "env-tok", nil},  // environment token
		{"0.0.0.0:1", file, "env-tok", "s3cret", nil},   // the file wins over the environment
		{"127.0.0.1:1", file, "", "s3cret", nil},        // a token on loopback is still enforced
		{"0.0.0.0:1", empty, "env-tok", "", errAny},     // an empty file is an error, not "no token"
		{"0.0.0.0:1", filepath.Join(dir, "missing"), "", "", errAny},
	}
	for _, c := range cases {
		got, err := ResolveToken(c.addr, c.file, c.env)
		switch {
		case c.err == nil && err != nil:
			t.Errorf("ResolveToken(%q, %q, %q): %v", c.addr, c.file, c.env, err)
		case c.err == ErrTokenRequired && !errors.Is(err, ErrTokenRequired):
			t.Errorf("ResolveToken(%q, %q, %q) = %q, %v; want ErrTokenRequired", c.addr, c.file, c.env, got, err)
		case c.err == errAny && err == nil:
			t.Errorf("ResolveToken(%q, %q, %q) = %q, want an error", c.addr, c.file, c.env, got)
		case err == nil && got != c.want:
			t.Errorf("ResolveToken(%q, %q, %q) = %q, want %q", c.addr, c.file, c.env, got, c.want)
		}
	}
}

var errAny = errors.New("any error")

// TestBrowserGuard: requests that only a browser acting for another site
// sends are refused; the CLI's, curl's and probes' are served.
func TestBrowserGuard(t *testing.T) {
	h := New(Options{ListenAddr: "admin.local:18002", AllowedHosts: []string{"Ops.Example.", "*.svc.cluster.local"}})
	h.Handle("GET /v1/x", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) }))
	h.Handle("POST /v1/x", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) }))
	h.Handle("DELETE /v1/x", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) }))
	js := "application/json"
	for _, c := range []struct {
		method, host, ct string
		hdr              map[string]string
		want             int
	}{
		{"GET", "127.0.0.1:18002", "", nil, 200},
		{"GET", "127.9.9.9", "", nil, 200},
		{"GET", "[::1]:18002", "", nil, 200},
		{"GET", "10.1.2.3:18002", "", nil, 200}, // any IP literal: a probe or scraper by address
		{"GET", "localhost:18002", "", nil, 200},
		{"GET", "LOCALHOST.", "", nil, 200},
		{"GET", "app.localhost:18002", "", nil, 200},
		{"GET", "admin.local:18002", "", nil, 200}, // listen.admin's host
		{"GET", "ops.example:18002", "", nil, 200},
		{"GET", "modelsplit.ns.svc.cluster.local:18002", "", nil, 200},
		{"GET", "svc.cluster.local:18002", "", nil, 403},
		{"GET", "evil.example:18002", "", nil, 403},
		{"GET", "localhost.evil.example", "", nil, 403},
		{"GET", "", "", nil, 403},
		{"GET", "127.0.0.1:18002", "", map[string]string{"Origin": "http://127.0.0.1:18002", "Sec-Fetch-Site": "same-origin"}, 200},
		{"GET", "localhost", "", map[string]string{"Origin": "http://localhost:80"}, 200},
		{"GET", "127.0.0.1:18002", "", map[string]string{"Origin": "https://127.0.0.1:18002"}, 403}, // scheme differs
		{"GET", "127.0.0.1:18002", "", map[string]string{"Origin": "http://localhost:18002"}, 403},
		{"GET", "127.0.0.1:18002", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"GET", "127.0.0.1:18002", "", map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
		{"GET", "127.0.0.1:18002", "", map[string]string{"Sec-Fetch-Site": "none"}, 200},
		{"POST", "127.0.0.1:18002", js, nil, 200},
		{"POST", "127.0.0.1:18002", "Application/JSON; charset=utf-8", nil, 200},
		{"DELETE", "127.0.0.1:18002", js, nil, 200},
		{"POST", "127.0.0.1:18002", "", nil, 415},
		{"DELETE", "127.0.0.1:18002", "", nil, 415},
		{"POST", "127.0.0.1:18002", "text/plain", nil, 415},
		{"POST", "127.0.0.1:18002", "multipart/form-data; boundary=x", nil, 415},
		{"POST", "127.0.0.1:18002", "application/x-www-form-urlencoded", nil, 415},
		{"POST", "127.0.0.1:18002", "application/jsonp", nil, 415},
		{"POST", "127.0.0.1:18002", js, map[string]string{"Origin": "null"}, 403},
		{"GET", "127.0.0.1:18002", "", map[string]string{"Origin": "http://[::1"}, 403}, // unparsable
		{"POST", "127.0.0.1:18002", js, map[string]string{"Origin": "http://evil.example"}, 403},
		{"POST", "evil.example:18002", js, nil, 403},
	} {
		req := httptest.NewRequest(c.method, "/v1/x", nil)
		req.Host = c.host
		if c.ct != "" {
			req.Header.Set("Content-Type", c.ct)
		}
		for k, v := range c.hdr {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != c.want {
			t.Errorf("%s Host=%q Content-Type=%q %v: %d %s, want %d", c.method, c.host, c.ct, c.hdr, w.Code, strings.TrimSpace(w.Body.String()), c.want)
		}
	}
	// A refused change says which Content-Type it got, "none" when absent.
	for ct, want := range map[string]string{"": "(got none)", "text/plain": "(got text/plain)"} {
		req := httptest.NewRequest("POST", "/v1/x", nil)
		req.Host = "127.0.0.1:18002"
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 415 || !strings.Contains(w.Body.String(), want) {
			t.Errorf("Content-Type %q: %d %q, want 415 naming %s", ct, w.Code, w.Body.String(), want)
		}
	}
	// A reload replaces the list.
	h.SetAllowedHosts("127.0.0.1:18002", nil)
	for host, want := range map[string]int{"ops.example": 403, "admin.local": 403, "localhost": 200} {
		req := httptest.NewRequest("GET", "/v1/x", nil)
		req.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != want {
			t.Errorf("after SetAllowedHosts: Host %s: %d, want %d", host, w.Code, want)
		}
	}
}
