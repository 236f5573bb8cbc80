package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestEnvoyEndToEnd runs a real Envoy against `modelsplit serve` when
// ENVOY_BIN points at an Envoy binary: the decision steers Envoy's router,
// users stick to their variant, the response says which variant answered,
// and a client cannot pick its own variant.
func TestEnvoyEndToEnd(t *testing.T) {
	envoyBin := os.Getenv("ENVOY_BIN")
	if envoyBin == "" {
		t.Skip("ENVOY_BIN is not set: skipping the real-Envoy test (set ENVOY_BIN=/path/to/envoy to run it)")
	}
	backends := map[string]string{}
	for _, name := range []string{"a", "b"} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })}
		go srv.Serve(lis)
		t.Cleanup(func() { srv.Close() })
		backends[name] = lis.Addr().String()
	}
	p := newPorts(t)
	gw, _ := freePort()
	envoyAdmin, _ := freePort()
	cfg := p.listenYAML() + fmt.Sprintf(`gateway: {port: %d, address: 127.0.0.1}
endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 50, backends: [%q]}
      - {name: b, weight: 50, backends: [%q]}
`, gw, backends["a"], backends["b"])
	startServe(t, tempConfig(t, cfg), p)

	bootstrap, err := exec.Command(os.Getenv(envBinary), "bootstrap", "-node-id", "e2e-envoy",
		"-xds", fmt.Sprintf("127.0.0.1:%d", p.xds), "-admin-port", strconv.Itoa(envoyAdmin)).Output()
	if err != nil {
		t.Fatal(err)
	}
	bootPath := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(bootPath, bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	envoy := exec.Command(envoyBin, "-c", bootPath, "--base-id", strconv.Itoa(gw), "--log-level", "warn")
	logs, _ := os.Create(filepath.Join(t.TempDir(), "envoy.log"))
	envoy.Stdout, envoy.Stderr = logs, logs
	if err := envoy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = envoy.Process.Kill()
		_ = envoy.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("envoy logs:\n%s", b)
		}
	})

	get := func(user, variant string) (string, string, error) {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/model/predict", gw), nil)
		req.Header.Set("x-user-id", user)
		if variant != "" {
			req.Header.Set("x-modelsplit-variant", variant)
		}
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
		if err != nil {
			return "", "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body), resp.Header.Get("x-modelsplit-variant"), nil
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if body, _, err := get("probe", ""); err == nil && (body == "a" || body == "b") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Envoy did not route to a backend within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen := map[string]string{}
	for i := 0; i < 400; i++ {
		u := fmt.Sprintf("user-%d", i%100)
		body, hdr, err := get(u, "")
		if err != nil {
			t.Fatal(err)
		}
		if hdr != body {
			t.Errorf("user %s: answered by %s but x-modelsplit-variant says %q", u, body, hdr)
		}
		if prev, ok := seen[u]; ok && prev != body {
			t.Errorf("user %s moved from %s to %s", u, prev, body)
		}
		seen[u] = body
		// Asking for the other variant must not work.
		other := map[string]string{"a": "b", "b": "a"}[body]
		if forced, _, _ := get(u, other); forced != body {
			t.Errorf("user %s picked variant %s by sending x-modelsplit-variant", u, other)
		}
	}
}
