package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/certgen"
)

const oneEndpoint = "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    variants: [{name: a, weight: 1, backends: [\"10.0.0.1:80\"]}]\n"

func TestGatewayEdgeDefaults(t *testing.T) {
	c, err := config.Parse("min.yaml", []byte(oneEndpoint))
	if err != nil {
		t.Fatal(err)
	}
	g := c.Gateway
	want := config.GatewayLimits{
		ConnectionBufferBytes: 32768, MaxRequestHeadersKB: 60, HTTP2MaxConcurrentStreams: 100,
		HTTP2InitialStreamWindowBytes: 65536, HTTP2InitialConnectionWindowBytes: 1 << 20,
	}
	if g.Limits != want {
		t.Errorf("limits %+v, want %+v", g.Limits, want)
	}
	if g.RequestHeadersTimeout.D() != 10*time.Second || g.XFFNumTrustedHops != 0 || g.AccessLog != "" || g.TLS.Enabled() {
		t.Errorf("gateway %+v", g)
	}
}

// tlsFiles writes a valid certificate, key and CA, a key of another
// certificate, a file that is not PEM, and a directory.
type tlsFiles struct{ dir, cert, key, ca, otherKey, junk string }

func writeTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	ca, err := certgen.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Issue("gw", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.Issue("other")
	if err != nil {
		t.Fatal(err)
	}
	f := tlsFiles{dir: dir}
	if f.cert, f.key, err = pair.WriteFiles(dir, "gw"); err != nil {
		t.Fatal(err)
	}
	if _, f.otherKey, err = other.WriteFiles(dir, "other"); err != nil {
		t.Fatal(err)
	}
	if f.ca, err = ca.WriteFile(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	f.junk = filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(f.junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestGatewayTLSLoads(t *testing.T) {
	f := writeTLSFiles(t)
	c, err := config.Parse("tls.yaml", []byte("gateway:\n  tls: {cert_file: "+f.cert+", key_file: "+f.key+", client_ca_file: "+f.ca+"}\n"+oneEndpoint))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Gateway.TLS.Enabled() || c.Gateway.TLS.ClientCAFile != f.ca {
		t.Errorf("tls %+v", c.Gateway.TLS)
	}
}

// Each bad gateway setting is reported at its line and field, before
// Envoy could reject the listener or silently clamp a value.
func TestInvalidGatewayEdgeSettings(t *testing.T) {
	f := writeTLSFiles(t)
	unreadable := filepath.Join(f.dir, "missing.pem")
	cases := []struct {
		name, gateway string
		want          []string // "line:field:substring", as in TestInvalidConfigs
	}{
		{"negative trusted hops", "  xff_num_trusted_hops: -1\n", []string{"2:gateway.xff_num_trusted_hops:must be 0-10"}},
		{"too many trusted hops", "  xff_num_trusted_hops: 11\n", []string{"2:gateway.xff_num_trusted_hops:got 11"}},
		{"trusted hops not a number", "  xff_num_trusted_hops: two\n", []string{"2:gateway.xff_num_trusted_hops:cannot unmarshal"}},
		{"zero headers timeout", "  request_headers_timeout: 0s\n", []string{"2:gateway.request_headers_timeout:between 1ms and 1h0m0s"}},
		{"huge headers timeout", "  request_headers_timeout: 2h\n", []string{"2:gateway.request_headers_timeout:got 2h0m0s"}},
		{"buffer too small", "  limits: {connection_buffer_bytes: 100}\n", []string{"2:gateway.limits.connection_buffer_bytes:must be 1024-67108864, got 100"}},
		{"buffer zero", "  limits:\n    connection_buffer_bytes: 0\n", []string{"3:gateway.limits.connection_buffer_bytes:got 0"}},
		{"headers kb too large", "  limits: {max_request_headers_kb: 9000}\n", []string{"2:gateway.limits.max_request_headers_kb:must be 1-8192"}},
		{"zero streams", "  limits: {http2_max_concurrent_streams: 0}\n", []string{"2:gateway.limits.http2_max_concurrent_streams:must be 1-2147483647, got 0"}},
		{"stream window too small", "  limits: {http2_initial_stream_window_bytes: 1000}\n", []string{"2:gateway.limits.http2_initial_stream_window_bytes:must be 65535-"}},
		{"connection window too large", "  limits: {http2_initial_connection_window_bytes: 4294967296}\n", []string{"2:gateway.limits.http2_initial_connection_window_bytes:got 4294967296"}},
		{"unknown limit", "  limits: {max_streams: 5}\n", []string{"2:gateway.limits.max_streams:unknown field"}},
		{"relative access log", "  access_log: access.json\n", []string{"2:gateway.access_log:absolute file path"}},
		{"access log in a missing directory", "  access_log: " + filepath.Join(f.dir, "nope", "a.json") + "\n", []string{"2:gateway.access_log:directory of"}},
		{"access log is a directory", "  access_log: " + f.dir + "\n", []string{"2:gateway.access_log:is a directory"}},
		{"cert without key", "  tls: {cert_file: " + f.cert + "}\n", []string{"2:gateway.tls:set together"}},
		{"client ca without cert", "  tls: {client_ca_file: " + f.ca + "}\n", []string{"2:gateway.tls.client_ca_file:need TLS"}},
		{"missing cert file", "  tls:\n    cert_file: " + unreadable + "\n    key_file: " + f.key + "\n", []string{"3:gateway.tls.cert_file:cannot read"}},
		{"cert file is a directory", "  tls: {cert_file: " + f.dir + ", key_file: " + f.key + "}\n", []string{"2:gateway.tls.cert_file:is a directory"}},
		{"relative key file", "  tls: {cert_file: " + f.cert + ", key_file: key.pem}\n", []string{"2:gateway.tls.key_file:absolute path"}},
		{"cert file not PEM", "  tls: {cert_file: " + f.junk + ", key_file: " + f.key + "}\n", []string{"2:gateway.tls.cert_file:no PEM certificate"}},
		{"key of another certificate", "  tls: {cert_file: " + f.cert + ", key_file: " + f.otherKey + "}\n", []string{"2:gateway.tls.key_file:not the private key"}},
		{"client ca not PEM", "  tls: {cert_file: " + f.cert + ", key_file: " + f.key + ", client_ca_file: " + f.junk + "}\n", []string{"2:gateway.tls.client_ca_file:no PEM certificate"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("bad.yaml", []byte("gateway:\n"+tc.gateway+oneEndpoint))
			var errs config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("want config.Errors, got %v", err)
			}
			for _, w := range tc.want {
				if !containsError(errs, w) {
					t.Errorf("want an error matching %q, got:\n%v", w, err)
				}
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Error(), "bad.yaml:") {
					t.Errorf("error without file:line: %q", e.Error())
				}
			}
		})
	}
}

// Dots in names are allowed, but two names that differ only by '.' and
// '_' would share Envoy's stat names.
func TestStatNameCollisions(t *testing.T) {
	ok := "endpoints:\n  - name: llama-3.1\n    match: {path_prefix: /l}\n    variants: [{name: v1.2, weight: 1, backends: [\"10.0.0.1:80\"]}]\n"
	if _, err := config.Parse("dots.yaml", []byte(ok)); err != nil {
		t.Fatalf("dotted names refused: %v", err)
	}
	if got := config.ClusterStatName("llama-3.1", "v1.2"); got != "llama-3_1/v1_2" {
		t.Errorf("ClusterStatName = %q", got)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"endpoints:\n  - name: a.b\n    match: {path_prefix: /x}\n    variants: [{name: v, weight: 1, backends: [\"10.0.0.1:80\"]}]\n" +
			"  - name: a_b\n    match: {path_prefix: /y}\n    variants: [{name: v, weight: 1, backends: [\"10.0.0.1:80\"]}]\n",
			"5:endpoints[1].name:would share Envoy's stat names"},
		{"endpoints:\n  - name: m\n    match: {path_prefix: /x}\n    variants:\n      - {name: v1.2, weight: 1, backends: [\"10.0.0.1:80\"]}\n" +
			"      - {name: v1_2, weight: 1, backends: [\"10.0.0.2:80\"]}\n    shadows: [{name: v1-2, percent: 1, backends: [\"10.0.0.3:80\"]}, {name: v1.2.x, percent: 1, backends: [\"10.0.0.3:81\"]}, {name: v1_2_x, percent: 1, backends: [\"10.0.0.3:82\"]}]\n",
			"6:endpoints[0].variants[1].name:\"v1_2\" and \"v1.2\""},
	} {
		_, err := config.Parse("bad.yaml", []byte(tc.yaml))
		var errs config.Errors
		if !errors.As(err, &errs) || !containsError(errs, tc.want) {
			t.Errorf("want %q, got %v", tc.want, err)
		}
		if tc.want[0] == '6' && !containsError(errs, "7:endpoints[0].shadows[2].name:would share") {
			t.Errorf("shadow collision not reported: %v", err)
		}
	}
}

// A prefix no normalised request path can match is refused.
func TestPathPrefixesMatchNormalisedPaths(t *testing.T) {
	for prefix, want := range map[string]string{
		"/a//b":     "merges repeated slashes",
		"/a%2Fb":    "escaped slashes",
		`/a\b`:      "backslashes",
		"/a/../b":   "'.' and '..' segments",
		"/a/./b":    "'.' and '..' segments",
		"/a?x=1":    "query or fragment",
		"/a b":      "white space",
		"/model/v1": "",
		"/a.b.c/":   "",
		"/":         "",
	} {
		_, err := config.Parse("p.yaml", []byte("endpoints:\n  - name: m\n    match: {path_prefix: '"+prefix+"'}\n    variants: [{name: a, weight: 1, backends: [\"10.0.0.1:80\"]}]\n"))
		if want == "" {
			if err != nil {
				t.Errorf("%q refused: %v", prefix, err)
			}
			continue
		}
		var errs config.Errors
		if !errors.As(err, &errs) || !containsError(errs, "3:endpoints[0].match.path_prefix:"+want) {
			t.Errorf("%q: want %q, got %v", prefix, want, err)
		}
	}
}
