package config

import (
	"strings"
	"time"
)

// Edge settings of the gateway listener (gateway.* in the YAML). The
// defaults follow Envoy's "Configuring Envoy as an edge proxy" guide; the
// README's config reference says why each one is what it is.
//
//	AccessLog: where Envoy writes one JSON line per request: "" (off, the
//	  default), "stdout", "stderr" or an absolute file path on Envoy's host.
//	XFFNumTrustedHops: how many proxies in front of Envoy append to
//	  x-forwarded-for and are trusted to tell the client's address (0: the
//	  peer of the TCP connection is the client).
//	RequestHeadersTimeout: how long a client may take to send its request
//	  headers (default 10s).
//	TLS: optional downstream TLS on the gateway listener.
//	Limits: buffer, header and HTTP/2 limits per connection.

// Access log destinations other than a file path.
const (
	AccessLogStdout = "stdout"
	AccessLogStderr = "stderr"
)

// Gateway edge defaults and bounds.
const (
	DefaultRequestHeadersTimeout = Duration(10 * time.Second)
	// DefaultConnectionBufferBytes is Envoy's edge recommendation (32 KiB)
	// for the listener's per-connection buffer limit.
	DefaultConnectionBufferBytes = 32 << 10
	// DefaultMaxRequestHeadersKB is Envoy's own default, written out.
	DefaultMaxRequestHeadersKB = 60
	// HTTP/2 defaults recommended for an edge proxy: 100 streams per
	// connection, 64 KiB per stream window, 1 MiB per connection window.
	DefaultHTTP2MaxConcurrentStreams  = 100
	DefaultHTTP2StreamWindowBytes     = 64 << 10
	DefaultHTTP2ConnectionWindowBytes = 1 << 20

	MaxXFFNumTrustedHops     = 10
	minHTTP2WindowBytes      = 65535 // Envoy's (and RFC 9113's) bounds
	maxHTTP2Value            = 1<<31 - 1
	minConnectionBufferBytes = 1 << 10
	maxConnectionBufferBytes = 64 << 20
	maxRequestHeadersKB      = 8192 // Envoy's upper bound
	maxRequestHeadersTimeout = Duration(time.Hour)
)

// Field paths of the defaulted edge settings.
const (
	fieldRequestHeadersTimeout = "gateway.request_headers_timeout"
	fieldConnectionBuffer      = "gateway.limits.connection_buffer_bytes"
	fieldMaxRequestHeadersKB   = "gateway.limits.max_request_headers_kb"
	fieldMaxConcurrentStreams  = "gateway.limits.http2_max_concurrent_streams"
	fieldStreamWindow          = "gateway.limits.http2_initial_stream_window_bytes"
	fieldConnectionWindow      = "gateway.limits.http2_initial_connection_window_bytes"
)

// GatewayTLS terminates TLS on the gateway listener. Envoy reads the files
// itself (and NACKs a listener whose files it cannot load), so the paths
// are absolute and must be the same where modelsplit validates them and
// where Envoy runs (the same host, or the same mounted volume).
type GatewayTLS struct {
	CertFile string `yaml:"cert_file"` // PEM certificate chain
	KeyFile  string `yaml:"key_file"`  // PEM private key
	// ClientCAFile, when set, makes Envoy require a client certificate
	// signed by one of these CAs (mutual TLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the gateway listener terminates TLS.
func (t GatewayTLS) Enabled() bool { return t.CertFile != "" }

// GatewayLimits bound what one downstream connection may hold.
type GatewayLimits struct {
	// ConnectionBufferBytes is the listener's per_connection_buffer_limit_bytes:
	// how much Envoy reads from one connection before applying flow control.
	ConnectionBufferBytes int `yaml:"connection_buffer_bytes"`
	// MaxRequestHeadersKB is the largest request header block Envoy
	// accepts (431 for HTTP/1, a reset stream for HTTP/2).
	MaxRequestHeadersKB int `yaml:"max_request_headers_kb"`
	// HTTP2MaxConcurrentStreams caps the streams of one HTTP/2 connection.
	HTTP2MaxConcurrentStreams int `yaml:"http2_max_concurrent_streams"`
	// HTTP2InitialStreamWindowBytes and HTTP2InitialConnectionWindowBytes
	// are the HTTP/2 flow-control windows Envoy advertises to clients.
	HTTP2InitialStreamWindowBytes     int `yaml:"http2_initial_stream_window_bytes"`
	HTTP2InitialConnectionWindowBytes int `yaml:"http2_initial_connection_window_bytes"`
}

// applyGatewayDefaults fills the edge settings the file leaves out. A
// setting written in the file is kept as written, even 0: validation then
// says it is out of range instead of silently replacing it.
func (c *Config) applyGatewayDefaults() {
	g := &c.Gateway
	unset := func(field string, zero bool) bool { return zero && c.Line(field) == 0 }
	if unset(fieldRequestHeadersTimeout, g.RequestHeadersTimeout == 0) {
		g.RequestHeadersTimeout = DefaultRequestHeadersTimeout
	}
	l := &g.Limits
	for _, d := range []struct {
		field string
		v     *int
		def   int
	}{
		{fieldConnectionBuffer, &l.ConnectionBufferBytes, DefaultConnectionBufferBytes},
		{fieldMaxRequestHeadersKB, &l.MaxRequestHeadersKB, DefaultMaxRequestHeadersKB},
		{fieldMaxConcurrentStreams, &l.HTTP2MaxConcurrentStreams, DefaultHTTP2MaxConcurrentStreams},
		{fieldStreamWindow, &l.HTTP2InitialStreamWindowBytes, DefaultHTTP2StreamWindowBytes},
		{fieldConnectionWindow, &l.HTTP2InitialConnectionWindowBytes, DefaultHTTP2ConnectionWindowBytes},
	} {
		if unset(d.field, *d.v == 0) {
			*d.v = d.def
		}
	}
}

// StatName is a name as it appears in Envoy's stat names: Envoy splits stat
// names on '.', so a dot in an endpoint or variant name would cut the
// cluster_name tag short (cluster.llama-3.1/v2.upstream_rq_total would be
// tagged llama-3). Dots become underscores; validation refuses two names
// that would then collide.
func StatName(name string) string { return strings.ReplaceAll(name, ".", "_") }

// ClusterStatName is the alt_stat_name of a variant's or shadow's cluster:
// Envoy's stats for it are cluster.<ClusterStatName>.*.
func ClusterStatName(endpoint, member string) string {
	return ClusterName(StatName(endpoint), StatName(member))
}
