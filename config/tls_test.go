package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/config"
)

// testPKI writes a CA and two leaf certificates with their keys into dir:
// ca.pem, server.pem/server-key.pem, envoy.pem/envoy-key.pem.
func testPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.pem", "CERTIFICATE", der)
	ca, _ = x509.ParseCertificate(der)
	for i, name := range []string{"server", "envoy"} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{name + ".test"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".pem", "CERTIFICATE", der)
		kd, _ := x509.MarshalPKCS8PrivateKey(k)
		write(name+"-key.pem", "PRIVATE KEY", kd)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTLSConfig(t *testing.T) {
	dir := testPKI(t)
	f := func(name string) string { return filepath.Join(dir, name) }
	const endpoint = "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    variants: [{name: a, weight: 1, backends: [\"10.0.0.1:80\"]}]\n"
	server := fmt.Sprintf("tls:\n  cert_file: %s\n  key_file: %s\n", f("server.pem"), f("server-key.pem"))
	mtls := server + fmt.Sprintf("  client_ca_file: %s\n", f("ca.pem"))

	// Good: the files' contents are loaded for the ext_proc cluster.
	good := mtls + fmt.Sprintf("  envoy:\n    ca_file: %s\n    cert_file: %s\n    key_file: %s\n    server_name: server.test\n", f("ca.pem"), f("envoy.pem"), f("envoy-key.pem"))
	c, err := config.Parse("good.yaml", []byte(good+endpoint))
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(f("ca.pem"))
	key, _ := os.ReadFile(f("envoy-key.pem"))
	if c.TLS.Envoy.CAPEM != string(ca) || c.TLS.Envoy.KeyPEM != string(key) || c.TLS.Envoy.CertPEM == "" {
		t.Errorf("tls.envoy files not loaded")
	}
	if c.Clone().TLS != c.TLS {
		t.Errorf("Clone lost the TLS settings")
	}

	for _, tc := range []struct {
		name, yaml string
		want       string // "line:field:substring"
	}{
		{"no envoy ca", server, "1:tls.envoy.ca_file:required with tls.cert_file"},
		{"mtls without envoy cert", mtls + fmt.Sprintf("  envoy: {ca_file: %s}\n", f("ca.pem")), "5:tls.envoy.cert_file:required with tls.client_ca_file"},
		{"envoy cert without mtls", server + fmt.Sprintf("  envoy: {ca_file: %s, cert_file: %s, key_file: %s}\n", f("ca.pem"), f("envoy.pem"), f("envoy-key.pem")),
			"4:tls.envoy.cert_file:asks for no client certificate"},
		{"envoy cert without key", mtls + fmt.Sprintf("  envoy: {ca_file: %s, cert_file: %s}\n", f("ca.pem"), f("envoy.pem")), "5:tls.envoy:must be set together"},
		{"envoy without server tls", fmt.Sprintf("tls:\n  envoy: {ca_file: %s}\n", f("ca.pem")), "2:tls.envoy:needs tls.cert_file"},
		{"missing ca", server + fmt.Sprintf("  envoy:\n    ca_file: %s\n", f("nope.pem")), "5:tls.envoy.ca_file:cannot read"},
		{"unreadable ca", server + fmt.Sprintf("  envoy:\n    ca_file: %s\n", dir), "5:tls.envoy.ca_file:cannot read"},
		{"ca not pem", server + fmt.Sprintf("  envoy:\n    ca_file: %s\n", f("junk.pem")), "5:tls.envoy.ca_file:no PEM certificate"},
		{"envoy key of another cert", mtls + fmt.Sprintf("  envoy:\n    ca_file: %s\n    cert_file: %s\n    key_file: %s\n", f("ca.pem"), f("envoy.pem"), f("server-key.pem")),
			"8:tls.envoy.key_file:not a PEM certificate and its private key"},
		{"envoy cert not pem", mtls + fmt.Sprintf("  envoy:\n    ca_file: %s\n    cert_file: %s\n    key_file: %s\n", f("ca.pem"), f("junk.pem"), f("envoy-key.pem")),
			"7:tls.envoy.cert_file:not a PEM certificate"},
		{"server key of another cert", fmt.Sprintf("tls:\n  cert_file: %s\n  key_file: %s\n  envoy: {ca_file: %s}\n", f("server.pem"), f("envoy-key.pem"), f("ca.pem")),
			"3:tls.key_file:not a PEM certificate and its private key"},
		{"client ca not pem", server + fmt.Sprintf("  client_ca_file: %s\n", f("junk.pem")), "4:tls.client_ca_file:no PEM certificate"},
		{"bad server name", server + fmt.Sprintf("  envoy: {ca_file: %s, server_name: \"a b\"}\n", f("ca.pem")), "4:tls.envoy.server_name:neither a DNS name"},
		{"unix socket needs server name", "listen: {extproc: \"unix:///run/ms.sock\"}\n" + server + fmt.Sprintf("  envoy: {ca_file: %s}\n", f("ca.pem")),
			"5:tls.envoy.server_name:unix socket"},
		{"unspecified address needs server name", "listen: {extproc: \"0.0.0.0:18001\"}\n" + server + fmt.Sprintf("  envoy: {ca_file: %s}\n", f("ca.pem")),
			"5:tls.envoy.server_name:unspecified address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("bad.yaml", []byte(tc.yaml+endpoint))
			var errs config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("err %v, want config.Errors", err)
			}
			if !containsError(errs, tc.want) {
				t.Errorf("want an error matching %q, got:\n%v", tc.want, err)
			}
			if !strings.HasPrefix(err.Error(), "bad.yaml:") {
				t.Errorf("error without file:line: %v", err)
			}
		})
	}
}
