package service

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"

	"github.com/modelsplit/modelsplit/metrics"
)

// Reasons a TLS handshake failed, as counted in
// modelsplit_tls_handshake_failures_total{reason}.
const (
	tlsClientCertMissing   = "client_cert_missing"   // mTLS: the client sent no certificate
	tlsClientCertUntrusted = "client_cert_untrusted" // mTLS: not signed by tls.client_ca_file (or expired, wrong usage)
	tlsRejectedByPeer      = "rejected_by_peer"      // the client refused modelsplit's certificate (a TLS alert)
	tlsNoALPN              = "no_alpn"               // the client offered no ALPN "h2", which grpc-go requires
	tlsNotTLS              = "not_tls"               // plaintext (or another protocol) on a TLS listener
	tlsClosed              = "closed"                // the client closed or reset the connection mid-handshake
	tlsTimeout             = "timeout"
	tlsOther               = "other"
)

// maxTLSPeers bounds the per-peer state kept for logging; past it the
// state is forgotten, at worst logging one more line per peer.
const maxTLSPeers = 4096

// tlsWatch counts failed TLS handshakes on modelsplit's gRPC listeners and
// logs them once per peer and state change: the first failure from a
// peer (by IP address, per listener), a change of reason, and the first
// success after failures. Envoy reconnects every few hundred
// milliseconds, so logging every failure would flood the log.
type tlsWatch struct {
	log     *zap.Logger
	metrics *metrics.Metrics

	mu    sync.Mutex
	peers map[tlsPeer]*tlsPeerState
}

type tlsPeer struct{ listener, ip string }

type tlsPeerState struct {
	reason string
	failed uint64 // failures since the last success
}

func newTLSWatch(log *zap.Logger, m *metrics.Metrics) *tlsWatch {
	return &tlsWatch{log: log, metrics: m, peers: map[tlsPeer]*tlsPeerState{}}
}

// creds wraps a listener's credentials so its server handshakes are watched.
func (w *tlsWatch) creds(listener string, c credentials.TransportCredentials) credentials.TransportCredentials {
	if c == nil {
		return nil
	}
	return &watchedCreds{TransportCredentials: c, listener: listener, w: w}
}

type watchedCreds struct {
	credentials.TransportCredentials
	listener string
	w        *tlsWatch
}

func (c *watchedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	c.w.record(c.listener, conn.RemoteAddr(), err)
	return out, info, err
}

func (c *watchedCreds) Clone() credentials.TransportCredentials {
	return &watchedCreds{TransportCredentials: c.TransportCredentials.Clone(), listener: c.listener, w: c.w}
}

// record notes one handshake's outcome.
func (w *tlsWatch) record(listener string, addr net.Addr, err error) {
	ip := peerIP(addr)
	key := tlsPeer{listener, ip}
	if err == nil {
		w.mu.Lock()
		st := w.peers[key]
		delete(w.peers, key)
		w.mu.Unlock()
		if st != nil {
			w.log.Info("TLS handshakes succeed again", zap.String("listener", listener), zap.String("peer", ip),
				zap.Uint64("failed_before", st.failed))
		}
		return
	}
	reason := tlsFailureReason(err)
	w.metrics.TLSHandshakeFailures.WithLabelValues(listener, reason).Inc()
	w.mu.Lock()
	st := w.peers[key]
	first := st == nil
	if first {
		if len(w.peers) >= maxTLSPeers {
			clear(w.peers)
		}
		st = &tlsPeerState{}
		w.peers[key] = st
	}
	changed := st.reason != reason
	st.reason = reason
	st.failed++
	failed := st.failed
	w.mu.Unlock()
	if !changed {
		return
	}
	w.log.Warn("TLS handshake failed; further failures from this peer with the same reason are only counted (modelsplit_tls_handshake_failures_total)",
		zap.String("listener", listener), zap.String("peer", ip), zap.String("reason", reason),
		zap.String("hint", tlsHint(reason)), zap.Uint64("failed", failed), zap.Error(err))
}

func peerIP(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	if a.Network() == "unix" {
		return "unix"
	}
	return a.String()
}

// tlsFailureReason classifies a server handshake error from crypto/tls
// (or grpc-go's ALPN check) into a small, fixed set of reasons.
func tlsFailureReason(err error) string {
	var verr *tls.CertificateVerificationError
	var rerr tls.RecordHeaderError
	var nerr net.Error
	var operr *net.OpError
	msg := err.Error()
	switch {
	case strings.Contains(msg, "client didn't provide a certificate"):
		return tlsClientCertMissing
	case errors.As(err, &verr):
		return tlsClientCertUntrusted
	case errors.As(err, &operr) && operr.Op == "remote error":
		return tlsRejectedByPeer
	case strings.Contains(msg, "missing selected ALPN property") || strings.Contains(msg, "no application protocol"):
		return tlsNoALPN
	case errors.As(err, &rerr):
		return tlsNotTLS
	case errors.As(err, &nerr) && nerr.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return tlsTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return tlsClosed
	}
	var uerr x509.UnknownAuthorityError
	if errors.As(err, &uerr) {
		return tlsClientCertUntrusted
	}
	return tlsOther
}

// tlsHint says where to look, in the operator's terms.
func tlsHint(reason string) string {
	switch reason {
	case tlsClientCertMissing:
		return "the client presented no certificate but tls.client_ca_file requires one: set tls.envoy.cert_file/key_file (ext_proc) or `modelsplit bootstrap -xds-cert-file/-xds-key-file` (xDS)"
	case tlsClientCertUntrusted:
		return "the client's certificate is not signed by tls.client_ca_file (or has expired)"
	case tlsRejectedByPeer:
		return "the client does not trust modelsplit's certificate: check tls.envoy.ca_file/server_name (ext_proc) or `modelsplit bootstrap -xds-ca-file/-xds-server-name` (xDS) against tls.cert_file"
	case tlsNoALPN:
		return "the client offered no ALPN h2, which grpc-go requires over TLS"
	case tlsNotTLS:
		return "the client speaks plaintext: give Envoy a TLS bootstrap (`modelsplit bootstrap -xds-ca-file`) or remove tls:"
	}
	return ""
}
