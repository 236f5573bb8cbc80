package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made at test time.
type testCA struct {
	dir  string
	name string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t testing.TB, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{dir: dir, name: name, cert: cert, key: key, file: filepath.Join(dir, name+"-ca.pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue signs a leaf certificate for name (server or client) valid for the
// given DNS names and IP addresses, and returns its cert and key files.
func (ca *testCA) issue(t testing.TB, name string, server bool, sans ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(ca.dir, ca.name+"-"+name+".pem")
	keyFile = filepath.Join(ca.dir, ca.name+"-"+name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsPKI is everything a TLS test needs: modelsplit's CA and server
// certificate (for 127.0.0.1), Envoy's client certificate from a client
// CA, and an unrelated CA with a client certificate of its own.
type tlsPKI struct {
	serverCA, clientCA, otherCA *testCA
	serverCert, serverKey       string
	envoyCert, envoyKey         string
	otherCert, otherKey         string // a client certificate modelsplit does not trust
}

func newTLSPKI(t testing.TB) *tlsPKI {
	dir := t.TempDir()
	p := &tlsPKI{serverCA: newTestCA(t, dir, "server"), clientCA: newTestCA(t, dir, "client"), otherCA: newTestCA(t, dir, "other")}
	p.serverCert, p.serverKey = p.serverCA.issue(t, "modelsplit", true, "127.0.0.1", "modelsplit.test")
	p.envoyCert, p.envoyKey = p.clientCA.issue(t, "envoy", false)
	p.otherCert, p.otherKey = p.otherCA.issue(t, "envoy", false)
	return p
}

// tlsGateway starts modelsplit with configBody (which carries the tls:
// section) and an Envoy (eo: XDS and BootstrapArgs are filled in) whose
// bootstrap gets bootstrapArgs. It does not wait for routing: a test with
// a broken xDS connection never gets any.
func tlsGateway(t testing.TB, configBody string, eo envoyOptions, bootstrapArgs ...string) *gateway {
	t.Helper()
	envoyBinary(t)
	g := &gateway{ports: newPorts(t)}
	var err error
	if g.port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	g.cfg = tempConfig(t, g.ports.listenYAML()+fmt.Sprintf("gateway: {port: %d, address: 127.0.0.1, extproc_timeout: 1s}\n", g.port)+configBody)
	g.serve = &modelsplitHandle{t: t, p: g.ports, cfg: g.cfg}
	g.serve.proc = startServe(t, g.cfg, g.ports)
	eo.XDS, eo.BootstrapArgs = fmt.Sprintf("127.0.0.1:%d", g.ports.xds), bootstrapArgs
	g.envoy = startEnvoy(t, eo)
	g.client = newGatewayClient(g.port)
	return g
}

// splitEndpoint has a fallback route that can only reach a (b has weight
// 0), so an answer from b for x-group: beta proves that modelsplit
// decided the request: fail-open traffic never gets there.
func splitEndpoint(a, b *httpBackend) string {
	return fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 100, backends: [%q]}
      - {name: b, weight: 0, backends: [%q]}
    rules:
      - {header: x-group, equals: beta, variant: b}
`, a.addr, b.addr)
}

// TestEnvoyTLS: with tls: configured, a real Envoy reaches xDS and
// ext_proc over TLS (then mTLS with tls.client_ca_file), and every request
// is decided by modelsplit, none fails open.
func TestEnvoyTLS(t *testing.T) {
	pki := newTLSPKI(t)
	for _, tc := range []struct {
		name      string
		tls       string
		bootstrap []string
	}{
		{
			name: "tls",
			tls: fmt.Sprintf("tls:\n  cert_file: %q\n  key_file: %q\n  envoy: {ca_file: %q}\n",
				pki.serverCert, pki.serverKey, pki.serverCA.file),
			bootstrap: []string{"-xds-ca-file", pki.serverCA.file},
		},
		{
			name: "mtls",
			tls: fmt.Sprintf("tls:\n  cert_file: %q\n  key_file: %q\n  client_ca_file: %q\n  envoy: {ca_file: %q, cert_file: %q, key_file: %q, server_name: modelsplit.test}\n",
				pki.serverCert, pki.serverKey, pki.clientCA.file, pki.serverCA.file, pki.envoyCert, pki.envoyKey),
			bootstrap: []string{"-xds-ca-file", pki.serverCA.file, "-xds-cert-file", pki.envoyCert, "-xds-key-file", pki.envoyKey, "-xds-server-name", "modelsplit.test"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
			g := tlsGateway(t, tc.tls+splitEndpoint(a, b), envoyOptions{}, tc.bootstrap...)
			g.client.waitRouted(t, "/model/predict", 30*time.Second, "x-user-id", "probe")
			const n = 200
			onB := 0
			for i := 0; i < n; i++ {
				headers := []string{"x-user-id", fmt.Sprintf("user-%d", i)}
				want := "a"
				if i%2 == 0 {
					headers, want = append(headers, "x-group", "beta"), "b"
				}
				r, err := g.client.get("/model/predict", headers...)
				if err != nil {
					t.Fatal(err)
				}
				if r.status != 200 || r.body != want || r.variant != want {
					t.Fatalf("request %d: status %d body %q variant %q, want %s from the decision", i, r.status, r.body, r.variant, want)
				}
				if r.body == "b" {
					onB++
				}
			}
			s := g.envoy.stats()
			decide := "http." + "modelsplit.ext_proc.decide."
			if s[decide+"streams_started"] < n || s[decide+"stream_msgs_received"] < n {
				t.Errorf("Envoy's decide filter: %d streams, %d answers, want >= %d each", s[decide+"streams_started"], s[decide+"stream_msgs_received"], n)
			}
			for _, name := range []string{"streams_failed", "failure_mode_allowed", "message_timeouts", "spurious_msgs_received"} {
				if v := s[decide+name]; v != 0 {
					t.Errorf("Envoy %s%s = %d, want 0: decisions failed open", decide, name, v)
				}
			}
			for _, c := range []string{"xds_cluster", "modelsplit_extproc"} {
				if s["cluster."+c+".ssl.handshake"] == 0 {
					t.Errorf("cluster.%s.ssl.handshake = 0: Envoy did not use TLS to modelsplit", c)
				}
				if v := s["cluster."+c+".ssl.connection_error"] + s["cluster."+c+".ssl.fail_verify_san"] + s["cluster."+c+".ssl.fail_verify_error"]; v != 0 {
					t.Errorf("cluster.%s: %d TLS errors", c, v)
				}
			}
			if fails := sumMetric(g.serve.current(), "modelsplit_tls_handshake_failures_total"); fails != 0 {
				t.Errorf("modelsplit counted %v failed TLS handshakes, want 0", fails)
			}
			decided := sumMetric(g.serve.current(), "modelsplit_decisions_total")
			if decided < n {
				t.Errorf("modelsplit_decisions_total = %v, want >= %d", decided, n)
			}
			if _, body := httpGet(g.envoy.adminURL("/config_dump")); strings.Contains(body, "PRIVATE KEY") {
				t.Errorf("Envoy's /config_dump shows the ext_proc cluster's private key")
			}
			g.envoy.assertNoRejections()
			t.Logf("%d requests over %s: %d decided onto b (weight 0: only a decision gets there); decide filter: %d streams, %d answers; modelsplit_decisions_total %v; ssl.handshake xds %d, ext_proc %d",
				n, tc.name, onB, s[decide+"streams_started"], s[decide+"stream_msgs_received"], decided, s["cluster.xds_cluster.ssl.handshake"], s["cluster.modelsplit_extproc.ssl.handshake"])
		})
	}
}

// sumMetric adds every series of one metric family on /metrics.
func sumMetric(s *serveProc, family string) float64 {
	_, body := httpGet("http://" + s.admin + "/metrics")
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		name, rest, ok := strings.Cut(line, " ")
		if !ok || (name != family && !strings.HasPrefix(name, family+"{")) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(rest, &v); err == nil {
			sum += v
		}
	}
	return sum
}

// extProcUnhealthyLog is what Envoy logs for decisions when its ext_proc
// cluster's health checks fail, on a TLS handshake as on anything else:
// with no healthy host (panic routing is off for that cluster) no decide
// stream reaches a handshake, so the TLS reason shows in the cluster's
// ssl.* counters (the health checks' connections) and in modelsplit's log,
// not in Envoy's.
const extProcUnhealthyLog = "no healthy upstream"

// TestEnvoyTLSWrongCertificate: each way Envoy and modelsplit can disagree
// about certificates is a clear error in both logs and counted on both
// sides, instead of decisions silently failing open.
func TestEnvoyTLSWrongCertificate(t *testing.T) {
	pki := newTLSPKI(t)
	server := fmt.Sprintf("tls:\n  cert_file: %q\n  key_file: %q\n", pki.serverCert, pki.serverKey)
	mtls := server + fmt.Sprintf("  client_ca_file: %q\n", pki.clientCA.file)
	goodXDS := []string{"-xds-ca-file", pki.serverCA.file}
	goodMTLSXDS := []string{"-xds-ca-file", pki.serverCA.file, "-xds-cert-file", pki.envoyCert, "-xds-key-file", pki.envoyKey}
	for _, tc := range []struct {
		name      string
		tls       string
		bootstrap []string
		listener  string // modelsplit's listener that sees the failure
		reason    string // modelsplit_tls_handshake_failures_total{reason}
		envoyStat string // Envoy counter that must rise
		envoyLog  string // in Envoy's log (level warning)
		fixed     string // a tls: section that repairs it by a config reload ("" for none)
	}{
		{
			name:      "ext_proc trusts another CA",
			tls:       server + fmt.Sprintf("  envoy: {ca_file: %q}\n", pki.otherCA.file),
			bootstrap: goodXDS,
			listener:  "extproc", reason: "rejected_by_peer",
			envoyStat: "cluster.modelsplit_extproc.ssl.fail_verify_error",
			envoyLog:  extProcUnhealthyLog,
			fixed:     server + fmt.Sprintf("  envoy: {ca_file: %q}\n", pki.serverCA.file),
		},
		{
			name:      "ext_proc expects another name",
			tls:       server + fmt.Sprintf("  envoy: {ca_file: %q, server_name: other.test}\n", pki.serverCA.file),
			bootstrap: goodXDS,
			listener:  "extproc", reason: "rejected_by_peer",
			envoyStat: "cluster.modelsplit_extproc.ssl.fail_verify_san",
			envoyLog:  extProcUnhealthyLog,
		},
		{
			name:      "ext_proc client certificate from another CA",
			tls:       mtls + fmt.Sprintf("  envoy: {ca_file: %q, cert_file: %q, key_file: %q}\n", pki.serverCA.file, pki.otherCert, pki.otherKey),
			bootstrap: goodMTLSXDS,
			listener:  "extproc", reason: "client_cert_untrusted",
			envoyStat: "cluster.modelsplit_extproc.ssl.connection_error",
			envoyLog:  extProcUnhealthyLog,
		},
		{
			name:      "xDS trusts another CA",
			tls:       server + fmt.Sprintf("  envoy: {ca_file: %q}\n", pki.serverCA.file),
			bootstrap: []string{"-xds-ca-file", pki.otherCA.file},
			listener:  "xds", reason: "rejected_by_peer",
			envoyStat: "cluster.xds_cluster.ssl.fail_verify_error",
			envoyLog:  "CERTIFICATE_VERIFY_FAILED",
		},
		{
			name:      "xDS without a client certificate",
			tls:       mtls + fmt.Sprintf("  envoy: {ca_file: %q, cert_file: %q, key_file: %q}\n", pki.serverCA.file, pki.envoyCert, pki.envoyKey),
			bootstrap: goodXDS,
			listener:  "xds", reason: "client_cert_missing",
			envoyStat: "cluster.xds_cluster.ssl.connection_error",
			envoyLog:  "gRPC config stream to xds_cluster closed",
		},
		{
			name:      "xDS in plaintext",
			tls:       server + fmt.Sprintf("  envoy: {ca_file: %q}\n", pki.serverCA.file),
			bootstrap: nil,
			listener:  "xds", reason: "not_tls",
			envoyStat: "cluster.xds_cluster.upstream_cx_destroy_remote",
			envoyLog:  "gRPC config stream to xds_cluster closed",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
			var g *gateway
			if tc.listener == "xds" {
				// Envoy never gets its config, so it never becomes ready.
				// It logs the xDS stream's failures at debug level until
				// they have lasted 30 s, then at warning (docs/envoy-notes.md
				// §5.5): the config logger at debug shows them at once.
				g = tlsGateway(t, tc.tls+splitEndpoint(a, b), envoyOptions{Unready: true, Args: []string{"--component-log-level", "config:debug"}}, tc.bootstrap...)
			} else {
				g = tlsGateway(t, tc.tls+splitEndpoint(a, b), envoyOptions{}, tc.bootstrap...)
			}
			series := fmt.Sprintf(`modelsplit_tls_handshake_failures_total{listener=%q,reason=%q}`, tc.listener, tc.reason)
			if tc.listener == "extproc" {
				// xDS works, so Envoy routes; every decision fails open
				// to the weighted route (a), the beta rule never applies.
				g.client.waitRouted(t, "/model/predict", 30*time.Second, "x-user-id", "probe")
				for i := 0; i < 50; i++ {
					r, err := g.client.get("/model/predict", "x-user-id", fmt.Sprintf("user-%d", i), "x-group", "beta")
					if err != nil || r.status != 200 || r.body != "a" {
						t.Fatalf("request %d: status %d body %q err %v: want the fail-open answer a", i, r.status, r.body, err)
					}
				}
				// Each filter counts its own failures (stat_prefix).
				var failed []string
				for k, v := range g.envoy.stats() {
					if strings.HasPrefix(k, "http.modelsplit.ext_proc.") && v > 0 && !strings.HasSuffix(k, "streams_started") && !strings.HasSuffix(k, "stream_msgs_sent") {
						failed = append(failed, fmt.Sprintf("%s=%d", k, v))
					}
				}
				sort.Strings(failed)
				t.Logf("Envoy's ext_proc failure counters: %s", strings.Join(failed, " "))
				if v := g.envoy.stat("http.modelsplit.ext_proc.decide.streams_failed"); v == 0 {
					t.Errorf("Envoy's decide filter counted no failed stream")
				}
				if v := g.envoy.stat("cluster.modelsplit_extproc.health_check.failure"); v == 0 {
					t.Errorf("Envoy's ext_proc cluster counted no failed health check")
				}
			}
			g.envoy.waitStat(tc.envoyStat, 20*time.Second, func(v uint64) bool { return v > 0 })
			proc := g.serve.current()
			deadline := time.Now().Add(20 * time.Second)
			var fails float64
			for time.Now().Before(deadline) {
				if fails, _ = proc.metric(series); fails >= 2 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if fails < 2 {
				t.Fatalf("%s = %v, want >= 2", series, fails)
			}
			line := proc.waitLog(5*time.Second, "TLS handshake failed", `"listener":"`+tc.listener+`"`, `"reason":"`+tc.reason+`"`)
			logged := 0
			for _, l := range strings.Split(proc.Logs(), "\n") {
				if strings.Contains(l, "TLS handshake failed") && strings.Contains(l, `"listener":"`+tc.listener+`"`) && strings.Contains(l, `"reason":"`+tc.reason+`"`) {
					logged++
				}
			}
			// Once per peer and reason. The xDS port is shared by every
			// test in this process and was picked free, so a stale Envoy
			// of another test process could add one more line.
			if logged < 1 || (tc.listener == "extproc" && logged != 1) || logged > 2 {
				t.Errorf("modelsplit logged %d lines for %v failed handshakes, want 1 (once per peer and reason)", logged, fails)
			}
			if !strings.Contains(g.envoy.logs(), tc.envoyLog) {
				t.Errorf("Envoy's log has no %q:\n%s", tc.envoyLog, lastLines(g.envoy.logs(), 10))
			}
			t.Logf("modelsplit: %s = %v, logged once: %s", series, fails, line)
			if tc.fixed != "" {
				// tls.envoy is re-read on reload: the corrected CA reaches
				// Envoy over CDS and decisions resume, no restart.
				cfg, _ := os.ReadFile(g.cfg)
				writeFile(t, g.cfg, strings.Replace(string(cfg), tc.tls, tc.fixed, 1))
				deadline := time.Now().Add(20 * time.Second)
				for {
					r, err := g.client.get("/model/predict", "x-user-id", "after-fix", "x-group", "beta")
					if err == nil && r.body == "b" {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("decisions did not resume after the fix: %q %v", r.body, err)
					}
					time.Sleep(100 * time.Millisecond)
				}
				proc.waitLog(5*time.Second, "TLS handshakes succeed again", `"listener":"extproc"`)
				t.Logf("after the reload with the right CA: decided again (beta user on b), cluster.modelsplit_extproc.ssl.handshake = %d", g.envoy.stat("cluster.modelsplit_extproc.ssl.handshake"))
			}
			t.Logf("envoy: %s = %d; log: %s", tc.envoyStat, g.envoy.stat(tc.envoyStat), firstLine(g.envoy.logs(), tc.envoyLog, "ext_proc]", "config]"))
		})
	}
}

// firstLine returns the first line holding any of subs, or "".
func firstLine(s string, subs ...string) string {
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				return l
			}
		}
	}
	return ""
}
