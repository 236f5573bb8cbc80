package translate

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// RenderYAML redacts private keys given inline (string or bytes) and
// shows the ones given as a file path: a path is no secret, and an
// operator needs to see it.
func TestRenderRedactsOnlyInlinePrivateKeys(t *testing.T) {
	withKey := func(name string, key *corev3.DataSource) *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: name, TransportSocket: &corev3.TransportSocket{
			Name: tlsTransportSocketName,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{
				CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{
					CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/tls/" + name + ".crt"}},
					PrivateKey:       key,
				}}},
			})},
		}}
	}
	res := Resources{resource.ClusterType: []types.Resource{
		withKey("by-path", &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/tls/by-path.key"}}),
		withKey("inline-string", &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "SECRET-STRING"}}),
		withKey("inline-bytes", &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("SECRET-BYTES")}}),
	}}
	out, err := RenderYAML(res)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.Contains(s, "SECRET-STRING") || strings.Contains(s, "SECRET-BYTES") || strings.Contains(s, "U0VDUkVULUJZVEVT") {
		t.Errorf("an inline private key is shown:\n%s", s)
	}
	if n := strings.Count(s, redactedKey); n != 2 {
		t.Errorf("%d redacted keys, want 2 (inline string and bytes):\n%s", n, s)
	}
	for _, path := range []string{"/etc/tls/by-path.key", "/etc/tls/by-path.crt", "/etc/tls/inline-bytes.crt"} {
		if !strings.Contains(s, path) {
			t.Errorf("file path %s is not shown:\n%s", path, s)
		}
	}
}

// Build refuses a TLS config whose Envoy client certificate or key was not
// loaded (Validate reads both files): a half-loaded pair would ship Envoy a
// certificate without its key.
func TestExtProcTLSNeedsBothCertAndKeyLoaded(t *testing.T) {
	cfg := loadCase(t, "testdata/in/tls.yaml")
	if cfg.TLS.ClientCAFile == "" || cfg.TLS.Envoy.CertPEM == "" || cfg.TLS.Envoy.KeyPEM == "" {
		t.Fatal("precondition: the TLS case has mTLS with Envoy's certificate and key loaded")
	}
	if _, err := Build(cfg, KindEnvoy); err != nil {
		t.Fatalf("loaded config: %v", err)
	}
	cert, key := cfg.TLS.Envoy.CertPEM, cfg.TLS.Envoy.KeyPEM
	for _, tc := range []struct{ cert, key string }{{cert, ""}, {"", key}} {
		cfg.TLS.Envoy.CertPEM, cfg.TLS.Envoy.KeyPEM = tc.cert, tc.key
		if _, err := Build(cfg, KindEnvoy); err == nil || !strings.Contains(err.Error(), "not loaded") {
			t.Errorf("cert loaded %v, key loaded %v: Build error %v, want \"not loaded\"", tc.cert != "", tc.key != "", err)
		}
	}
}
