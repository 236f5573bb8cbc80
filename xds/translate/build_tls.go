package translate

import (
	"errors"
	"net"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/modelsplit/modelsplit/config"
)

// tlsTransportSocketName is Envoy's TLS transport socket extension.
const tlsTransportSocketName = "envoy.transport_sockets.tls"

// upstreamTLS is how Envoy reaches one of modelsplit's gRPC listeners over
// TLS: it verifies modelsplit's certificate against ca — the chain, and
// the name, which Envoy does not check unless told to (docs/envoy-notes.md
// §5.1) — and presents cert and key when both are set (mTLS). The ALPN
// "h2" is required by grpc-go servers (§5.2). The TLS version stays at
// Envoy's client default, at most 1.2, which keeps a refused client
// certificate a named TLS error in Envoy's log (§5.3).
type upstreamTLS struct {
	ca, cert, key *corev3.DataSource
	serverName    string
}

func (u upstreamTLS) transportSocket() *corev3.TransportSocket {
	san := &tlsv3.SubjectAltNameMatcher{
		SanType: tlsv3.SubjectAltNameMatcher_DNS,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: u.serverName}},
	}
	sni := u.serverName
	if net.ParseIP(u.serverName) != nil {
		san.SanType = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
		sni = "" // SNI carries host names only (RFC 6066 §3)
	}
	common := &tlsv3.CommonTlsContext{
		AlpnProtocols: []string{"h2"},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:                 u.ca,
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
		}},
	}
	if u.cert != nil && u.key != nil {
		common.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: u.cert, PrivateKey: u.key}}
	}
	return &corev3.TransportSocket{
		Name:       tlsTransportSocketName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: sni})},
	}
}

// extProcTLS is the ext_proc cluster's TLS from the config's tls.envoy,
// with the files' contents inline (Validate read them), or nil without
// TLS.
func extProcTLS(cfg *config.Config) (*corev3.TransportSocket, error) {
	t := cfg.TLS
	if !t.Enabled() {
		return nil, nil
	}
	e := t.Envoy
	if e.CAPEM == "" {
		return nil, errors.New("tls.envoy.ca_file: not loaded (Config.Validate reads it)")
	}
	u := upstreamTLS{ca: inline(e.CAPEM), serverName: e.ServerName}
	if u.serverName == "" {
		host, ok := cfg.ExtProcHost()
		if !ok {
			return nil, errors.New("tls.envoy.server_name: required when Envoy dials ext_proc over a unix socket")
		}
		u.serverName = host
	}
	if t.ClientCAFile != "" {
		if e.CertPEM == "" || e.KeyPEM == "" {
			return nil, errors.New("tls.envoy.cert_file: not loaded (Config.Validate reads it)")
		}
		u.cert, u.key = inline(e.CertPEM), inline(e.KeyPEM)
	}
	return u.transportSocket(), nil
}

func inline(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}

func fileSource(path string) *corev3.DataSource {
	if path == "" {
		return nil
	}
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// redactedKey replaces inline private keys in rendered output.
const redactedKey = "[redacted]"

// redactPrivateKeys replaces the value of every private_key in a plain
// (protoToPlain) tree, so `modelsplit render` and the golden files never
// print the key the ext_proc cluster carries inline. Envoy's own
// /config_dump redacts it too (docs/envoy-notes.md §5.4).
func redactPrivateKeys(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if k == "private_key" {
				if m, ok := c.(map[string]any); ok && (m["inline_string"] != nil || m["inline_bytes"] != nil) {
					x[k] = map[string]any{"inline_string": redactedKey}
					continue
				}
			}
			redactPrivateKeys(c)
		}
	case []any:
		for _, c := range x {
			redactPrivateKeys(c)
		}
	}
}
