package translate

import (
	"os"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/modelsplit/modelsplit/config"
)

func upstreamTLSOf(t *testing.T, s *corev3.TransportSocket) *tlsv3.UpstreamTlsContext {
	t.Helper()
	if s.GetName() != tlsTransportSocketName {
		t.Fatalf("transport socket %q, want %s", s.GetName(), tlsTransportSocketName)
	}
	u := &tlsv3.UpstreamTlsContext{}
	if err := s.GetTypedConfig().UnmarshalTo(u); err != nil {
		t.Fatal(err)
	}
	return u
}

func extProcClusterOf(t *testing.T, res Resources) *clusterv3.Cluster {
	t.Helper()
	for _, r := range res[resource.ClusterType] {
		if c := r.(*clusterv3.Cluster); c.GetName() == ExtProcClusterName {
			return c
		}
	}
	t.Fatal("no ext_proc cluster")
	return nil
}

// With tls: the ext_proc cluster carries the files' contents inline: the
// CA, the name to verify (and SNI for a DNS name), and Envoy's client
// certificate for mTLS; `render` never prints the key.
func TestExtProcClusterTLS(t *testing.T) {
	cfg := loadCase(t, "testdata/in/tls.yaml")
	res := buildOrFail(t, "testdata/in/tls.yaml", KindEnvoy)
	u := upstreamTLSOf(t, extProcClusterOf(t, res).GetTransportSocket())
	ca, _ := os.ReadFile("testdata/tls/ca.pem")
	key, _ := os.ReadFile("testdata/tls/envoy-key.pem")
	common := u.GetCommonTlsContext()
	vc := common.GetValidationContext()
	if vc.GetTrustedCa().GetInlineString() != string(ca) {
		t.Errorf("trusted_ca is not ca.pem inline: %v", vc.GetTrustedCa())
	}
	if san := vc.GetMatchTypedSubjectAltNames(); len(san) != 1 || san[0].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || san[0].GetMatcher().GetExact() != "modelsplit.internal" {
		t.Errorf("SAN matchers %v, want DNS modelsplit.internal", san)
	}
	if u.GetSni() != "modelsplit.internal" {
		t.Errorf("sni %q", u.GetSni())
	}
	if certs := common.GetTlsCertificates(); len(certs) != 1 || certs[0].GetPrivateKey().GetInlineString() != string(key) {
		t.Errorf("client certificate missing or not envoy-key.pem inline")
	}
	if got := common.GetAlpnProtocols(); len(got) != 1 || got[0] != "h2" {
		t.Errorf("alpn %v, want [h2]", got)
	}
	out, err := RenderYAML(res)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "PRIVATE KEY") || !strings.Contains(string(out), redactedKey) {
		t.Errorf("render shows the private key or does not say it is redacted")
	}

	// Server TLS only, ext_proc on an IP: the IP is checked, no SNI, no
	// client certificate. Without tls: no transport socket at all.
	c := cfg.Clone()
	c.TLS.ClientCAFile, c.TLS.Envoy.CertFile, c.TLS.Envoy.KeyFile, c.Gateway.ExtProcAddress = "", "", "", ""
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	res, err = Build(c, KindEnvoy)
	if err != nil {
		t.Fatal(err)
	}
	u = upstreamTLSOf(t, extProcClusterOf(t, res).GetTransportSocket())
	if san := u.GetCommonTlsContext().GetValidationContext().GetMatchTypedSubjectAltNames(); len(san) != 1 ||
		san[0].GetSanType() != tlsv3.SubjectAltNameMatcher_IP_ADDRESS || san[0].GetMatcher().GetExact() != "127.0.0.1" {
		t.Errorf("SAN matchers %v, want IP 127.0.0.1", san)
	}
	if u.GetSni() != "" || len(u.GetCommonTlsContext().GetTlsCertificates()) != 0 {
		t.Errorf("sni %q, %d client certificates: want none", u.GetSni(), len(u.GetCommonTlsContext().GetTlsCertificates()))
	}
	c.TLS = config.TLS{}
	res, _ = Build(c, KindEnvoy)
	if s := extProcClusterOf(t, res).GetTransportSocket(); s != nil {
		t.Errorf("plaintext config, ext_proc cluster has transport socket %v", s)
	}

	// A config built in code and never validated has no file contents:
	// an error, not a cluster that cannot connect.
	c = cfg.Clone()
	c.TLS.Envoy.CAPEM = ""
	if _, err := Build(c, KindEnvoy); err == nil || !strings.Contains(err.Error(), "tls.envoy.ca_file") {
		t.Errorf("unloaded CA: err %v", err)
	}
}

// The bootstrap's xds_cluster names the files on Envoy's host.
func TestBootstrapTLS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		addr    string
		tls     BootstrapTLS
		san     string
		sanType tlsv3.SubjectAltNameMatcher_SanType
		sni     string
		client  bool
		wantErr string
	}{
		{name: "ip", addr: "127.0.0.1:18000", tls: BootstrapTLS{CAFile: "/etc/envoy/ca.pem"}, san: "127.0.0.1", sanType: tlsv3.SubjectAltNameMatcher_IP_ADDRESS},
		{name: "dns, mtls", addr: "cp.internal:18000", tls: BootstrapTLS{CAFile: "/etc/envoy/ca.pem", CertFile: "/etc/envoy/c.pem", KeyFile: "/etc/envoy/k.pem"},
			san: "cp.internal", sanType: tlsv3.SubjectAltNameMatcher_DNS, sni: "cp.internal", client: true},
		{name: "server name", addr: "10.0.0.5:18000", tls: BootstrapTLS{CAFile: "ca.pem", ServerName: "modelsplit.test"},
			san: "modelsplit.test", sanType: tlsv3.SubjectAltNameMatcher_DNS, sni: "modelsplit.test"},
		{name: "no ca", addr: "127.0.0.1:18000", tls: BootstrapTLS{CertFile: "c.pem", KeyFile: "k.pem"}, wantErr: "CA file"},
		{name: "cert without key", addr: "127.0.0.1:18000", tls: BootstrapTLS{CAFile: "ca.pem", CertFile: "c.pem"}, wantErr: "together"},
	} {
		b, err := Bootstrap(BootstrapOptions{NodeID: "e", XDSAddress: tc.addr, TLS: &tc.tls})
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := Check(Resources{"bootstrap": {b}}); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		u := upstreamTLSOf(t, b.GetStaticResources().GetClusters()[0].GetTransportSocket())
		vc := u.GetCommonTlsContext().GetValidationContext()
		if vc.GetTrustedCa().GetFilename() != tc.tls.CAFile {
			t.Errorf("%s: trusted_ca %v", tc.name, vc.GetTrustedCa())
		}
		if san := vc.GetMatchTypedSubjectAltNames(); len(san) != 1 || san[0].GetSanType() != tc.sanType || san[0].GetMatcher().GetExact() != tc.san {
			t.Errorf("%s: SAN %v, want %v %s", tc.name, san, tc.sanType, tc.san)
		}
		if u.GetSni() != tc.sni {
			t.Errorf("%s: sni %q, want %q", tc.name, u.GetSni(), tc.sni)
		}
		certs := u.GetCommonTlsContext().GetTlsCertificates()
		if tc.client != (len(certs) == 1) || (tc.client && (certs[0].GetCertificateChain().GetFilename() != tc.tls.CertFile || certs[0].GetPrivateKey().GetFilename() != tc.tls.KeyFile)) {
			t.Errorf("%s: client certificates %v", tc.name, certs)
		}
	}
	b, _ := Bootstrap(BootstrapOptions{NodeID: "e", XDSAddress: "127.0.0.1:1"})
	if s := b.GetStaticResources().GetClusters()[0].GetTransportSocket(); s != nil {
		t.Errorf("plaintext bootstrap has a transport socket")
	}
}
