package translate

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamlogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/config"
)

// The gateway is an edge proxy: clients are untrusted. What it enforces
// follows Envoy's "Configuring Envoy as an edge proxy" guide; the values
// come from gateway.* in the config (config/gateway.go).

// hardenHCM applies the edge settings to the gateway's connection manager.
// It only sets fields (and sub-messages it finds empty), so settings others
// put on the same messages survive.
func hardenHCM(cfg *config.Config, hcm *hcmv3.HttpConnectionManager) {
	g := cfg.Gateway
	// The client is the TCP peer (or the address xff_num_trusted_hops
	// proxies vouch for): x-forwarded-for and the x-envoy-* headers that
	// steer Envoy (timeouts, retries) are not taken from clients, and a
	// client's x-request-id is replaced by a fresh one (preserve_external_
	// request_id stays false), so the id shadows compare under is Envoy's.
	// Envoy 1.33+ treats no address as internal unless
	// internal_address_config lists it; none is listed.
	hcm.UseRemoteAddress = wrapperspb.Bool(true)
	hcm.XffNumTrustedHops = uint32(g.XFFNumTrustedHops)
	hcm.RequestHeadersTimeout = durationpb.New(g.RequestHeadersTimeout.D())
	// One spelling per path before routes match: /a/../b is /b, //a is
	// /a, and %2F is unescaped and the client redirected to the result,
	// so no encoding slips past an endpoint's prefix.
	hcm.NormalizePath = wrapperspb.Bool(true)
	hcm.MergeSlashes = true
	hcm.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT
	if hcm.CommonHttpProtocolOptions == nil {
		hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{}
	}
	// x_user_id and x-user-id are one header to many backends; Envoy
	// matches and strips only the latter. Refuse the ambiguity (400).
	hcm.CommonHttpProtocolOptions.HeadersWithUnderscoresAction = corev3.HttpProtocolOptions_REJECT_REQUEST
	l := g.Limits
	hcm.MaxRequestHeadersKb = wrapperspb.UInt32(uint32(l.MaxRequestHeadersKB))
	if hcm.Http2ProtocolOptions == nil {
		hcm.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
	}
	hcm.Http2ProtocolOptions.MaxConcurrentStreams = wrapperspb.UInt32(uint32(l.HTTP2MaxConcurrentStreams))
	hcm.Http2ProtocolOptions.InitialStreamWindowSize = wrapperspb.UInt32(uint32(l.HTTP2InitialStreamWindowBytes))
	hcm.Http2ProtocolOptions.InitialConnectionWindowSize = wrapperspb.UInt32(uint32(l.HTTP2InitialConnectionWindowBytes))
	hcm.AccessLog = append(hcm.AccessLog, fileAccessLogs(g.AccessLog)...)
}

// hardenListener sets the listener's per-connection buffer limit and, with
// gateway.tls, terminates TLS on its filter chain.
func hardenListener(cfg *config.Config, l *listenerv3.Listener) {
	l.PerConnectionBufferLimitBytes = wrapperspb.UInt32(uint32(cfg.Gateway.Limits.ConnectionBufferBytes))
	if ts := downstreamTLS(cfg.Gateway.TLS); ts != nil {
		for _, fc := range l.FilterChains {
			fc.TransportSocket = ts
		}
	}
}

// downstreamTLS is the gateway listener's TLS transport socket, or nil.
// Envoy reads the files (absolute paths, checked by validation); ALPN
// offers h2 first so gRPC and HTTP/2 clients get HTTP/2 (the connection
// manager's codec is AUTO).
func downstreamTLS(t config.GatewayTLS) *corev3.TransportSocket {
	if !t.Enabled() {
		return nil
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(t.CertFile),
			PrivateKey:       fileSource(t.KeyFile),
		}},
		AlpnProtocols: []string{"h2", "http/1.1"},
		TlsParams:     &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
	}}
	if t.ClientCAFile != "" {
		ctx.RequireClientCertificate = wrapperspb.Bool(true)
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: fileSource(t.ClientCAFile)},
		}
	}
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)},
	}
}

// decideFilterStateField reads the decide filter's per-request ext_proc
// record (Envoy keeps one per ext_proc filter, under the filter's name).
func decideFilterStateField(field string) string {
	return "%FILTER_STATE(" + DecideFilterName + ":FIELD:" + field + ")%"
}

// AccessLogFormat is the JSON object Envoy writes per request on the
// gateway listener (gateway.access_log). "decision" is decided (modelsplit
// answered: the request carries the decided variant header, which clients
// cannot send), fail-open (the decide filter ran but got no answer in
// time, or an error: the weighted fallback route served it) or off (the
// decide filter did not run: decide: false, or a path no endpoint
// matches). decide_status is the gRPC status of the decide call (0 OK, 4
// timed out, 14 unreachable), decide_latency_us how long it took.
var AccessLogFormat = map[string]string{
	"start_time":            "%START_TIME%",
	"request_id":            "%REQ(X-REQUEST-ID)%",
	"client":                "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
	"method":                "%REQ(:METHOD)%",
	"path":                  "%PATH(NQ)%",
	"protocol":              "%PROTOCOL%",
	"route":                 "%ROUTE_NAME%",
	"upstream_cluster":      "%UPSTREAM_CLUSTER_RAW%",
	"upstream_host":         "%UPSTREAM_HOST%",
	"variant":               "%RESP(" + config.VariantHeader + ")%",
	"decided_variant":       "%REQ(" + config.VariantHeader + ")%",
	"decision":              decisionCEL,
	"decide_status":         decideFilterStateField("request_header_call_status"),
	"decide_latency_us":     decideFilterStateField("request_header_latency_us"),
	"response_code":         "%RESPONSE_CODE%",
	"response_flags":        "%RESPONSE_FLAGS%",
	"response_code_details": "%RESPONSE_CODE_DETAILS%",
	"duration_ms":           "%DURATION%",
	"bytes_received":        "%BYTES_RECEIVED%",
	"bytes_sent":            "%BYTES_SENT%",
}

// decisionCEL: the decided header is on the request only when modelsplit
// answered (clients' copies are stripped before any filter runs); else the
// decide filter's record holds a header call only if it asked and got no
// usable answer (timeout, error). The record exists, empty, even where the
// filter is disabled.
const decisionCEL = "%CEL('" + config.VariantHeader + "' in request.headers ? 'decided' : " +
	"('request_header_call_status' in filter_state['" + DecideFilterName + "'] ? 'fail-open' : 'off'))%"

// fileAccessLogs is the operator's access log: none, stdout, stderr or a file.
func fileAccessLogs(dest string) []*accesslogv3.AccessLog {
	if dest == "" {
		return nil
	}
	fields := make(map[string]*structpb.Value, len(AccessLogFormat))
	for k, v := range AccessLogFormat {
		fields[k] = structpb.NewStringValue(v)
	}
	format := &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{
		JsonFormat: &structpb.Struct{Fields: fields},
	}}
	var name string
	var typed *anypb.Any
	switch dest {
	case config.AccessLogStdout:
		name = "envoy.access_loggers.stdout"
		typed = mustAny(&streamlogv3.StdoutAccessLog{AccessLogFormat: &streamlogv3.StdoutAccessLog_LogFormat{LogFormat: format}})
	case config.AccessLogStderr:
		name = "envoy.access_loggers.stderr"
		typed = mustAny(&streamlogv3.StderrAccessLog{AccessLogFormat: &streamlogv3.StderrAccessLog_LogFormat{LogFormat: format}})
	default:
		name = "envoy.access_loggers.file"
		typed = mustAny(&filelogv3.FileAccessLog{Path: dest, AccessLogFormat: &filelogv3.FileAccessLog_LogFormat{LogFormat: format}})
	}
	return []*accesslogv3.AccessLog{{Name: name, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: typed}}}
}

// UnmatchedRouteName is the gateway's last route: a path no endpoint
// matches gets Envoy's 404 from it, without a decision or an observation.
const UnmatchedRouteName = "unmatched"

// unmatchedRoute answers 404 to every path no endpoint matched, with both
// ext_proc filters off: without it Envoy would still open a decide stream
// (and an observe stream) for a request it cannot route.
func unmatchedRoute() *routev3.Route {
	off := mustAny(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}})
	return &routev3.Route{
		Name:                 UnmatchedRouteName,
		Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action:               &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 404}},
		TypedPerFilterConfig: map[string]*anypb.Any{DecideFilterName: off, ObserveFilterName: off},
	}
}

// pathMatch is an endpoint's path_prefix as a route match. A prefix that
// does not end in '/' matches whole path segments only
// (path_separated_prefix): /face-recognition takes /face-recognition and
// /face-recognition/..., never /face-recognition-v2. A prefix ending in
// '/' (gRPC's /pkg.Service/) already ends at a segment and stays a prefix.
func pathMatch(prefix string) *routev3.RouteMatch {
	if prefix == "" || prefix[len(prefix)-1] == '/' {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}
	}
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: prefix}}
}

func withHeaders(m *routev3.RouteMatch, headers ...*routev3.HeaderMatcher) *routev3.RouteMatch {
	m.Headers = append(m.Headers, headers...)
	return m
}
