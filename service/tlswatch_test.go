package service

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/metrics"
)

// selfSigned is a certificate that is its own CA.
func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, DNSNames: []string{name}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// handshake runs a real crypto/tls handshake over a pipe and returns the
// server's error.
func handshake(t *testing.T, server *tls.Config, client func(net.Conn)) error {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	go func() { client(c); c.Close() }()
	srv := tls.Server(s, server)
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	err := srv.Handshake()
	s.Close()
	return err
}

// The reasons come from real crypto/tls server errors, so a Go release
// that rewords them fails here rather than in production.
func TestTLSFailureReason(t *testing.T) {
	serverCert, serverPool := selfSigned(t, "modelsplit.test")
	clientCert, clientPool := selfSigned(t, "envoy")
	otherCert, otherPool := selfSigned(t, "other")
	mtls := &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: clientPool, ClientAuth: tls.RequireAndVerifyClientCert, NextProtos: []string{"h2"}}
	dial := func(cfg *tls.Config) func(net.Conn) {
		return func(c net.Conn) { _ = tls.Client(c, cfg).Handshake() }
	}
	for _, tc := range []struct {
		name   string
		client func(net.Conn)
		want   string
	}{
		{"no client certificate", dial(&tls.Config{RootCAs: serverPool, ServerName: "modelsplit.test", NextProtos: []string{"h2"}}), tlsClientCertMissing},
		// GetClientCertificate: a Go client would send no certificate the
		// server's CA list does not name; Envoy sends it anyway.
		{"client certificate from another CA", dial(&tls.Config{RootCAs: serverPool, ServerName: "modelsplit.test", NextProtos: []string{"h2"},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &otherCert, nil }}), tlsClientCertUntrusted},
		{"client distrusts the server", dial(&tls.Config{RootCAs: otherPool, ServerName: "modelsplit.test", Certificates: []tls.Certificate{clientCert}, NextProtos: []string{"h2"}}), tlsRejectedByPeer},
		{"plaintext", func(c net.Conn) { _, _ = c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) }, tlsNotTLS},
		{"closed", func(c net.Conn) {}, tlsClosed},
	} {
		err := handshake(t, mtls, tc.client)
		if err == nil {
			t.Fatalf("%s: handshake succeeded", tc.name)
		}
		if got := tlsFailureReason(err); got != tc.want {
			t.Errorf("%s: reason %q for %v, want %q", tc.name, got, err, tc.want)
		}
	}
	if got := tlsFailureReason(errors.New("credentials: cannot check peer: missing selected ALPN property")); got != tlsNoALPN {
		t.Errorf("grpc-go's ALPN error: %q", got)
	}
}

// A flood of failures from one peer is counted in full but logged once
// per reason; the first success after them is logged once.
func TestTLSWatchLogsOncePerPeerAndReason(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	m := metrics.New()
	w := newTLSWatch(zap.New(core), m)
	envoy := &net.TCPAddr{IP: net.ParseIP("10.0.0.7"), Port: 40000}
	alert := &net.OpError{Op: "remote error", Err: errors.New("tls: unknown certificate authority")}
	for i := 0; i < 100; i++ {
		envoy.Port++
		w.record("extproc", envoy, alert)
	}
	w.record("xds", envoy, alert) // another listener: its own state
	w.record("extproc", envoy, errors.New("tls: client didn't provide a certificate"))
	w.record("extproc", envoy, nil)
	w.record("extproc", envoy, nil) // no news
	if got := testutil.ToFloat64(m.TLSHandshakeFailures.WithLabelValues("extproc", tlsRejectedByPeer)); got != 100 {
		t.Errorf("counted %v rejected_by_peer, want 100", got)
	}
	if got := testutil.ToFloat64(m.TLSHandshakeFailures.WithLabelValues("extproc", tlsClientCertMissing)); got != 1 {
		t.Errorf("counted %v client_cert_missing, want 1", got)
	}
	var msgs []string
	for _, e := range logs.All() {
		msgs = append(msgs, fmt.Sprintf("%v %v %s", e.ContextMap()["listener"], e.ContextMap()["reason"], e.Message))
	}
	want := []string{"extproc rejected_by_peer TLS handshake failed", "xds rejected_by_peer TLS handshake failed",
		"extproc client_cert_missing TLS handshake failed", "extproc <nil> TLS handshakes succeed again"}
	if len(msgs) != len(want) {
		t.Fatalf("log lines %q, want %q", msgs, want)
	}
	for i := range want {
		if !strings.HasPrefix(msgs[i], want[i]) {
			t.Errorf("log line %d %q, want %q", i, msgs[i], want[i])
		}
	}
	if got := logs.All()[3].ContextMap()["failed_before"]; got != uint64(101) {
		t.Errorf("failed_before %v, want 101", got)
	}
}
