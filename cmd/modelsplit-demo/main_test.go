package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/config"
)

// The whole launcher (real Envoy, SIGINT, no orphans) is tested end to end
// in test/demo_test.go; these are its parts.

func TestHelpListsFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"-h"}, &out, &errb); code != 0 {
		t.Fatalf("-h: exit code %d", code)
	}
	for _, want := range []string{"Usage: modelsplit-demo", "-config", "-xds", "-extproc", "-admin", "-envoy-admin-port", "-envoy", "-modelsplit", "-backends", "gateway.port"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("-h lacks %q:\n%s", want, errb.String())
		}
	}
	for _, args := range [][]string{{"-bogus"}, {"extra"}, {"-envoy-concurrency", "0"}, {"-envoy-admin-port", "70000"}} {
		errb.Reset()
		if code := run(args, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("%v: exit code %d, stderr %q; want 2 with a message", args, code, errb.String())
		}
	}
}

func TestBadConfigIsReportedWithItsLine(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    variants:\n      - {name: a, weight: -1, backends: [\"127.0.0.1:5\"]}\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"-config", bad}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "bad.yaml:5: endpoints[0].variants[0].weight") {
		t.Fatalf("bad config: exit code %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"-config", filepath.Join(t.TempDir(), "missing.yaml")}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "missing.yaml") {
		t.Fatalf("missing config: exit code %d, stderr %q", code, errb.String())
	}
}

func TestPlannedServersForExample(t *testing.T) {
	cfg, err := config.Load("../../config/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	servers, skipped := plannedServers(cfg)
	var got []string
	for _, s := range servers {
		got = append(got, s.names()+"@"+s.addr)
	}
	want := "stable@127.0.0.1:8001 canary@127.0.0.1:8002 candidate (shadow)@127.0.0.1:8003"
	if strings.Join(got, " ") != want || len(skipped) != 0 {
		t.Fatalf("servers %q (skipped %v), want %q", strings.Join(got, " "), skipped, want)
	}
	if w := evenWeights(&cfg.Endpoints[0]); w != "stable=50 canary=50" {
		t.Errorf("evenWeights = %q", w)
	}
	if d := describeWeights(&cfg.Endpoints[0], nil); d != "stable 90, canary 10; shadow candidate 10%" {
		t.Errorf("describeWeights = %q", d)
	}
}

func TestModelServerAnswers(t *testing.T) {
	s := &modelServer{addr: "127.0.0.1:1", roles: []*role{
		{endpoint: "face", prefix: "/face", model: "stable"},
		{endpoint: "face-v2", prefix: "/face/v2", model: "next"},
	}}
	// plannedServers sorts longest prefix first; do the same here.
	s.roles[0], s.roles[1] = s.roles[1], s.roles[0]
	do := func(method, path string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(`{"x":1}`)))
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s %s: not JSON: %q", method, path, rec.Body.String())
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", method, path, ct)
		}
		return rec.Code, body
	}
	for _, c := range []struct{ method, path, model string }{
		{http.MethodGet, "/face/predict", "stable"},
		{http.MethodPost, "/face/predict", "stable"},
		{http.MethodPost, "/face/v2/predict", "next"},
	} {
		code, body := do(c.method, c.path)
		preds, _ := body["predictions"].([]any)
		if code != http.StatusOK || body["model"] != c.model || len(preds) != 1 {
			t.Errorf("%s %s: %d %v, want 200 from %s with one prediction", c.method, c.path, code, body, c.model)
		}
	}
	if code, body := do(http.MethodGet, "/healthz"); code != http.StatusOK || body["status"] != "ok" {
		t.Errorf("/healthz: %d %v", code, body)
	}
	if code, _ := do(http.MethodGet, "/elsewhere"); code != http.StatusNotFound {
		t.Errorf("/elsewhere: %d, want 404", code)
	}
	if code, _ := do(http.MethodDelete, "/face/predict"); code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d, want 405", code)
	}
	if n := s.roles[1].served.Load(); n != 2 {
		t.Errorf("stable served %d, want 2", n)
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:10000":   "127.0.0.1:10000",
		"[::]:10000":      "127.0.0.1:10000",
		"127.0.0.2:18002": "127.0.0.2:18002",
		"unix:///x.sock":  "unix:///x.sock",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
