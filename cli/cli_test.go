package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, Env{Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

func TestValidate(t *testing.T) {
	code, out, _ := run("validate", "-config", "../config/example.yaml")
	if code != ExitOK || !strings.Contains(out, "OK (1 endpoints, 2 variants)") {
		t.Fatalf("valid config: code %d, out %q", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    variants:\n      - {name: a, weight: -1, backends: [\"1.2.3.4:5\"]}\n"), 0o644)
	code, _, errs := run("validate", "-config", bad)
	if code != ExitError || !strings.Contains(errs, "bad.yaml:5: endpoints[0].variants[0].weight: must not be negative") {
		t.Fatalf("invalid config: code %d, stderr %q", code, errs)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"validate"}, {"render", "-config", "x", "-node-kind", "toaster"}, {"serve", "-bogus"}} {
		if code, _, errs := run(args...); code != ExitUsage || errs == "" {
			t.Errorf("%v: code %d, stderr %q; want %d with a message", args, code, errs, ExitUsage)
		}
	}
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, c := range commands() {
		code, _, errs := run(c.name, "-h")
		if code != ExitOK || !strings.Contains(errs, "Usage: modelsplit "+c.name) {
			t.Errorf("%s -h: code %d, output %q", c.name, code, errs)
		}
	}
}

func TestRenderAndBootstrap(t *testing.T) {
	for _, kind := range []string{"envoy", "grpc"} {
		code, out, errs := run("render", "-config", "../config/example.yaml", "-node-kind", kind)
		if code != ExitOK || !strings.Contains(out, "face-recognition/stable") {
			t.Fatalf("render %s: code %d, stderr %q", kind, code, errs)
		}
	}
	code, out, _ := run("bootstrap", "-node-id", "edge-7", "-xds", "cp.internal:18000")
	if code != ExitOK || !strings.Contains(out, "edge-7") || !strings.Contains(out, "cp.internal") || !strings.Contains(out, "STRICT_DNS") {
		t.Fatalf("bootstrap: code %d, out %q", code, out)
	}
	if strings.Contains(out, "transport_socket") {
		t.Errorf("bootstrap without -xds-ca-file uses TLS:\n%s", out)
	}
	code, out, _ = run("bootstrap", "-xds", "cp.internal:18000", "-xds-ca-file", "/etc/envoy/ca.pem", "-xds-cert-file", "/etc/envoy/envoy.pem", "-xds-key-file", "/etc/envoy/envoy-key.pem")
	for _, want := range []string{"envoy.transport_sockets.tls", "filename: /etc/envoy/ca.pem", "filename: /etc/envoy/envoy-key.pem", "sni: cp.internal", "exact: cp.internal"} {
		if code != ExitOK || !strings.Contains(out, want) {
			t.Errorf("bootstrap with TLS: code %d, no %q in:\n%s", code, want, out)
		}
	}
	if code, _, errs := run("bootstrap", "-xds-cert-file", "c.pem", "-xds-key-file", "k.pem"); code == ExitOK || !strings.Contains(errs, "need -xds-ca-file") {
		t.Errorf("client certificate without a CA: code %d, stderr %q", code, errs)
	}
}
