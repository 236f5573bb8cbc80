package translate

import (
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/modelsplit/modelsplit/config"
)

// The gateway logs requests to modelsplit over gRPC when some endpoint is
// observed, with every observed endpoint's token header as a response
// header and trailer; a gateway with nothing observed logs nothing.
func TestAccessLogOnlyWhenObserved(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/long.yaml"), KindEnvoy)
	hcm := listenerHCMs(res[resource.ListenerType][0].(*listenerv3.Listener))[0]
	if len(hcm.GetAccessLog()) != 1 {
		t.Fatalf("%d access logs, want 1", len(hcm.GetAccessLog()))
	}
	als := &grpcalsv3.HttpGrpcAccessLogConfig{}
	if err := hcm.GetAccessLog()[0].GetTypedConfig().UnmarshalTo(als); err != nil {
		t.Fatal(err)
	}
	// Headers: the variant that answered (a failover target's, after a
	// failover), then the token counts; trailers: the counts.
	want := []string{"x-modelsplit-tokens", "x-usage-completion-tokens"}
	if !slices.Equal(als.GetAdditionalResponseHeadersToLog(), append([]string{config.VariantHeader}, want...)) || !slices.Equal(als.GetAdditionalResponseTrailersToLog(), want) {
		t.Errorf("logged headers %v trailers %v, want %v (headers after %s)", als.GetAdditionalResponseHeadersToLog(), als.GetAdditionalResponseTrailersToLog(), want, config.VariantHeader)
	}
	cc := als.GetCommonConfig()
	if cc.GetLogName() != AccessLogName || cc.GetGrpcService().GetEnvoyGrpc().GetClusterName() != ExtProcClusterName {
		t.Errorf("access log %q to %v, want %q to %s", cc.GetLogName(), cc.GetGrpcService(), AccessLogName, ExtProcClusterName)
	}

	cfg := configFromYAML(t, `
endpoints:
  - name: m
    match: {path_prefix: /m}
    observe: false
    variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]
`)
	hcm = listenerHCMs(buildChecked(t, cfg, KindEnvoy)[resource.ListenerType][0].(*listenerv3.Listener))[0]
	if len(hcm.GetAccessLog()) != 0 {
		t.Errorf("unobserved gateway has access logs: %v", hcm.GetAccessLog())
	}
}

// Only observed endpoints' token headers are logged, once each, sorted (b
// has the default one): an unobserved endpoint's is not.
func TestAccessLogTokenHeadersOfObservedEndpointsOnly(t *testing.T) {
	cfg := configFromYAML(t, `
endpoints:
  - name: a
    match: {path_prefix: /a}
    tokens_header: x-a-tokens
    variants: [{name: v, weight: 1, backends: ["10.0.0.1:80"]}]
  - name: b
    match: {path_prefix: /b}
    variants: [{name: v, weight: 1, backends: ["10.0.0.2:80"]}]
  - name: c
    match: {path_prefix: /c}
    observe: false
    tokens_header: x-c-tokens
    variants: [{name: v, weight: 1, backends: ["10.0.0.3:80"]}]
  - name: d
    match: {path_prefix: /d}
    tokens_header: x-a-tokens
    variants: [{name: v, weight: 1, backends: ["10.0.0.4:80"]}]
`)
	hcm := listenerHCMs(buildChecked(t, cfg, KindEnvoy)[resource.ListenerType][0].(*listenerv3.Listener))[0]
	if len(hcm.GetAccessLog()) != 1 {
		t.Fatalf("%d access logs, want 1", len(hcm.GetAccessLog()))
	}
	als := &grpcalsv3.HttpGrpcAccessLogConfig{}
	if err := hcm.GetAccessLog()[0].GetTypedConfig().UnmarshalTo(als); err != nil {
		t.Fatal(err)
	}
	want := []string{"x-a-tokens", "x-modelsplit-tokens"}
	if !slices.Equal(als.GetAdditionalResponseHeadersToLog(), append([]string{config.VariantHeader}, want...)) || !slices.Equal(als.GetAdditionalResponseTrailersToLog(), want) {
		t.Errorf("logged headers %q trailers %q, want %q", als.GetAdditionalResponseHeadersToLog(), als.GetAdditionalResponseTrailersToLog(), want)
	}
}
