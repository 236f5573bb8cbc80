package translate

import (
	"path/filepath"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamlogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/modelsplit/modelsplit/internal/certgen"
)

// endpointRoutesOf is the gateway's routes without the final catch-all.
func endpointRoutesOf(res Resources) []*routev3.Route {
	routes := res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes()
	if n := len(routes); n > 0 && routes[n-1].GetName() == UnmatchedRouteName {
		return routes[:n-1]
	}
	return routes
}

func gatewayHCM(t *testing.T, res Resources) (*listenerv3.Listener, *hcmv3.HttpConnectionManager) {
	t.Helper()
	l := res[resource.ListenerType][0].(*listenerv3.Listener)
	hcms := listenerHCMs(l)
	if len(hcms) != 1 {
		t.Fatalf("listener %s: %d connection managers", l.GetName(), len(hcms))
	}
	return l, hcms[0]
}

// The edge defaults: Envoy's edge-proxy recommendations on the gateway's
// listener and connection manager.
func TestGatewayEdgeDefaults(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/ab.yaml"), KindEnvoy)
	l, hcm := gatewayHCM(t, res)
	if got := l.GetPerConnectionBufferLimitBytes().GetValue(); got != 32768 {
		t.Errorf("listener per_connection_buffer_limit_bytes %d, want 32768", got)
	}
	if l.GetFilterChains()[0].GetTransportSocket() != nil {
		t.Error("TLS on the listener without gateway.tls")
	}
	if !hcm.GetUseRemoteAddress().GetValue() || hcm.GetXffNumTrustedHops() != 0 || hcm.GetPreserveExternalRequestId() {
		t.Errorf("use_remote_address %v, xff_num_trusted_hops %d, preserve_external_request_id %v; want true, 0, false",
			hcm.GetUseRemoteAddress(), hcm.GetXffNumTrustedHops(), hcm.GetPreserveExternalRequestId())
	}
	if hcm.GetInternalAddressConfig() != nil {
		t.Errorf("internal_address_config %v: no client address is to be trusted", hcm.GetInternalAddressConfig())
	}
	if got := hcm.GetRequestHeadersTimeout().AsDuration().String(); got != "10s" {
		t.Errorf("request_headers_timeout %s, want 10s", got)
	}
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() ||
		hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT {
		t.Errorf("path normalisation: normalize_path %v merge_slashes %v escaped slashes %v",
			hcm.GetNormalizePath(), hcm.GetMergeSlashes(), hcm.GetPathWithEscapedSlashesAction())
	}
	if hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() != corev3.HttpProtocolOptions_REJECT_REQUEST {
		t.Error("headers with underscores are not rejected")
	}
	h2 := hcm.GetHttp2ProtocolOptions()
	if h2.GetMaxConcurrentStreams().GetValue() != 100 || h2.GetInitialStreamWindowSize().GetValue() != 65536 ||
		h2.GetInitialConnectionWindowSize().GetValue() != 1<<20 || hcm.GetMaxRequestHeadersKb().GetValue() != 60 {
		t.Errorf("HTTP/2 %v, max_request_headers_kb %v", h2, hcm.GetMaxRequestHeadersKb())
	}
	for _, l := range hcm.GetAccessLog() {
		if l.GetName() == "envoy.access_loggers.file" {
			t.Errorf("file access log on by default: %v", l)
		}
	}
}

func TestGatewayEdgeSettingsFromConfig(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := writeTestCert(t, dir)
	cfg := configFromYAML(t, `
gateway:
  xff_num_trusted_hops: 2
  request_headers_timeout: 3s
  access_log: `+filepath.Join(dir, "access.json")+`
  tls: {cert_file: `+certFile+`, key_file: `+keyFile+`, client_ca_file: `+caFile+`}
  limits:
    connection_buffer_bytes: 65536
    max_request_headers_kb: 16
    http2_max_concurrent_streams: 250
    http2_initial_stream_window_bytes: 131072
    http2_initial_connection_window_bytes: 4194304
endpoints:
  - name: m
    match: {path_prefix: /m}
    variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]
`)
	res := buildChecked(t, cfg, KindEnvoy)
	l, hcm := gatewayHCM(t, res)
	if hcm.GetXffNumTrustedHops() != 2 || hcm.GetRequestHeadersTimeout().AsDuration().String() != "3s" {
		t.Errorf("xff_num_trusted_hops %d request_headers_timeout %v", hcm.GetXffNumTrustedHops(), hcm.GetRequestHeadersTimeout())
	}
	h2 := hcm.GetHttp2ProtocolOptions()
	if l.GetPerConnectionBufferLimitBytes().GetValue() != 65536 || hcm.GetMaxRequestHeadersKb().GetValue() != 16 ||
		h2.GetMaxConcurrentStreams().GetValue() != 250 || h2.GetInitialStreamWindowSize().GetValue() != 131072 ||
		h2.GetInitialConnectionWindowSize().GetValue() != 4194304 {
		t.Errorf("limits not applied: buffer %v headers %v h2 %v", l.GetPerConnectionBufferLimitBytes(), hcm.GetMaxRequestHeadersKb(), h2)
	}
	ts := l.GetFilterChains()[0].GetTransportSocket()
	ctx := &tlsv3.DownstreamTlsContext{}
	if ts == nil || ts.GetTypedConfig().UnmarshalTo(ctx) != nil {
		t.Fatalf("no DownstreamTlsContext on the filter chain: %v", ts)
	}
	cc := ctx.GetCommonTlsContext()
	if c := cc.GetTlsCertificates(); len(c) != 1 || c[0].GetCertificateChain().GetFilename() != certFile || c[0].GetPrivateKey().GetFilename() != keyFile {
		t.Errorf("certificates %v", c)
	}
	if !ctx.GetRequireClientCertificate().GetValue() || cc.GetValidationContext().GetTrustedCa().GetFilename() != caFile {
		t.Errorf("client certificates not required against %s: %v", caFile, ctx)
	}
	if strings.Join(cc.GetAlpnProtocols(), ",") != "h2,http/1.1" {
		t.Errorf("ALPN %v", cc.GetAlpnProtocols())
	}
	// The operator's file log, beside modelsplit's own gRPC access log.
	var logs []*accesslogv3.AccessLog
	for _, l := range hcm.GetAccessLog() {
		if l.GetName() == "envoy.access_loggers.file" {
			logs = append(logs, l)
		}
	}
	fl := &filelogv3.FileAccessLog{}
	if len(logs) != 1 || logs[0].GetTypedConfig().UnmarshalTo(fl) != nil || fl.GetPath() != filepath.Join(dir, "access.json") {
		t.Fatalf("access log %v", hcm.GetAccessLog())
	}
	fields := fl.GetLogFormat().GetJsonFormat().GetFields()
	for _, k := range []string{"upstream_cluster", "response_code", "duration_ms", "variant", "decision", "decide_status", "decide_latency_us", "request_id"} {
		if fields[k].GetStringValue() == "" {
			t.Errorf("access log has no %s field", k)
		}
	}
}

func TestGatewayAccessLogDestinations(t *testing.T) {
	if fileAccessLogs("") != nil {
		t.Error("access log without gateway.access_log")
	}
	so, se := &streamlogv3.StdoutAccessLog{}, &streamlogv3.StderrAccessLog{}
	if l := fileAccessLogs("stdout"); len(l) != 1 || l[0].GetTypedConfig().UnmarshalTo(so) != nil || so.GetLogFormat().GetJsonFormat() == nil {
		t.Errorf("stdout: %v", l)
	}
	if l := fileAccessLogs("stderr"); len(l) != 1 || l[0].GetTypedConfig().UnmarshalTo(se) != nil || se.GetLogFormat().GetJsonFormat() == nil {
		t.Errorf("stderr: %v", l)
	}
}

// A path no endpoint matches ends at the last route: 404 from Envoy, with
// neither ext_proc filter running.
func TestUnmatchedPathsGet404WithoutExtProc(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/multi.yaml"), KindEnvoy)
	routes := res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes()
	last := routes[len(routes)-1]
	if last.GetName() != UnmatchedRouteName || last.GetMatch().GetPrefix() != "/" || last.GetDirectResponse().GetStatus() != 404 {
		t.Fatalf("last route %v, want %s: prefix / → 404", last, UnmatchedRouteName)
	}
	for _, f := range []string{DecideFilterName, ObserveFilterName} {
		per := &extprocv3.ExtProcPerRoute{}
		if a := last.GetTypedPerFilterConfig()[f]; a == nil || a.UnmarshalTo(per) != nil || !per.GetDisabled() {
			t.Errorf("filter %s is not disabled on the unmatched route", f)
		}
	}
}

// /face-recognition must not take /face-recognition-v2: whole path
// segments unless the prefix already ends in '/' (gRPC services).
func TestPrefixesMatchWholeSegments(t *testing.T) {
	for _, tc := range []struct{ prefix, separated, plain string }{
		{"/face-recognition", "/face-recognition", ""},
		{"/v1/chat", "/v1/chat", ""},
		{"/inference.GRPCInferenceService/", "", "/inference.GRPCInferenceService/"},
		{"/", "", "/"},
	} {
		m := pathMatch(tc.prefix)
		if m.GetPathSeparatedPrefix() != tc.separated || m.GetPrefix() != tc.plain {
			t.Errorf("%s: path_separated_prefix %q prefix %q", tc.prefix, m.GetPathSeparatedPrefix(), m.GetPrefix())
		}
		if err := m.ValidateAll(); err != nil {
			t.Errorf("%s: %v", tc.prefix, err)
		}
	}
}

// Dots in names would cut Envoy's cluster_name stat tag short: every
// cluster has an alt_stat_name with dots as underscores.
func TestClusterStatNamesHaveNoDots(t *testing.T) {
	cfg := configFromYAML(t, `
endpoints:
  - name: llama-3.1
    match: {path_prefix: /llama}
    variants:
      - {name: v1.2, weight: 1, backends: ["10.0.0.1:80"]}
      - {name: plain, weight: 1, backends: ["10.0.0.2:80"]}
    shadows: [{name: next.0, percent: 5, per_request: true, backends: ["10.0.0.3:80"]}]
`)
	res := buildChecked(t, cfg, KindEnvoy)
	want := map[string]string{"llama-3.1/v1.2": "llama-3_1/v1_2", "llama-3.1/plain": "llama-3_1/plain", "llama-3.1/next.0": "llama-3_1/next_0"}
	for _, r := range res[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		if c.GetName() == ExtProcClusterName {
			continue
		}
		if got := c.GetAltStatName(); got != want[c.GetName()] {
			t.Errorf("cluster %s: alt_stat_name %q, want %q", c.GetName(), got, want[c.GetName()])
		}
		delete(want, c.GetName())
	}
	if len(want) != 0 {
		t.Errorf("clusters missing: %v", want)
	}
}

// writeTestCert writes a CA, a certificate it issued and that
// certificate's key, for configs that name TLS files.
func writeTestCert(t *testing.T, dir string) (cert, key, ca string) {
	t.Helper()
	authority, err := certgen.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := authority.Issue("gateway", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if cert, key, err = pair.WriteFiles(dir, "gateway"); err != nil {
		t.Fatal(err)
	}
	if ca, err = authority.WriteFile(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	return cert, key, ca
}
