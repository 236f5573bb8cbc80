package translate

import (
	"sort"
	"time"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	grpcstatsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_stats/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/config"
)

// gatewayListener is the Envoy listener on gateway.port.
func gatewayListener(cfg *config.Config) (*listenerv3.Listener, error) {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: GatewayStatPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		// Long generations: see build_timeouts.go and build_accesslog.go.
		StreamIdleTimeout: streamIdleTimeout(cfg),
		AccessLog:         accessLogs(cfg),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: GatewayRouteName,
			ConfigSource:    adsSource(),
		}},
		// Strip our headers before any filter or route sees them: only the
		// decision may set them (clients must not pick their own variant).
		EarlyHeaderMutationExtensions: []*corev3.TypedExtensionConfig{{
			Name:        "modelsplit.strip_client_headers",
			TypedConfig: mustAny(stripClientHeaders(cfg)),
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: DecideFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(decideFilter(cfg))}},
		},
	}
	if anyObserved(cfg) {
		hcm.HttpFilters = append(hcm.HttpFilters, &hcmv3.HttpFilter{Name: ObserveFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(observeFilter(cfg))}})
	}
	if anyGRPC(cfg) {
		hcm.HttpFilters = append(hcm.HttpFilters, grpcStatsFilter())
	}
	hcm.HttpFilters = append(hcm.HttpFilters, &hcmv3.HttpFilter{Name: routerFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}})
	hardenHCM(cfg, hcm)
	l := &listenerv3.Listener{
		Name:    GatewayListenerName,
		Address: socketAddress(cfg.Gateway.Address, cfg.Gateway.Port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
			}},
		}},
	}
	hardenListener(cfg, l)
	return l, nil
}

func stripClientHeaders(cfg *config.Config) *earlyv3.HeaderMutation {
	names := map[string]bool{config.VariantHeader: true, config.ShadowHeader: true, config.UnsampledHeader: true}
	for _, h := range clientTimeoutHeaders {
		names[h] = true
	}
	for _, e := range cfg.Endpoints {
		for _, s := range e.Shadows {
			names[config.ShadowHeaderFor(s.Name)] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	m := &earlyv3.HeaderMutation{}
	for _, n := range sorted {
		m.Mutations = append(m.Mutations, &mutationv3.HeaderMutation{Action: &mutationv3.HeaderMutation_Remove{Remove: n}})
	}
	return m
}

func anyObserved(cfg *config.Config) bool {
	for i := range cfg.Endpoints {
		if cfg.Endpoints[i].Observed() {
			return true
		}
	}
	return false
}

// grpcStatsFilter makes Envoy count gRPC statuses per cluster
// (cluster.<endpoint>/<variant>.grpc.<code>, .success, .failure, .total):
// its router counts HTTP statuses, and a gRPC answer is HTTP 200 whatever
// its grpc-status. Without service/method names, so clients cannot grow
// the stats. Requests that are not gRPC pass untouched.
func grpcStatsFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: grpcStatsFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&grpcstatsv3.FilterConfig{
		PerMethodStatSpecifier: &grpcstatsv3.FilterConfig_StatsForAllMethods{StatsForAllMethods: wrapperspb.Bool(false)},
	})}}
}

// anyGRPC: an endpoint, or a variant of one, is served over gRPC.
func anyGRPC(cfg *config.Config) bool {
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		for j := range e.Variants {
			if e.VariantProtocol(&e.Variants[j]) == config.ProtocolGRPC {
				return true
			}
		}
	}
	return false
}

// observeProcessingMode: headers both ways and the response trailers,
// no bodies. The routes of requests sampled for a compare-mode shadow
// override it to stream bodies as well.
func observeProcessingMode(bodies extprocv3.ProcessingMode_BodySendMode, trailers extprocv3.ProcessingMode_HeaderSendMode) *extprocv3.ProcessingMode {
	return &extprocv3.ProcessingMode{
		RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
		ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
		RequestBodyMode:     bodies,
		ResponseBodyMode:    bodies,
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseTrailerMode: trailers,
	}
}

// observeFilter is the second ext_proc filter: observability mode ("send
// and go"), so Envoy never waits for it and ignores anything it answers.
// It runs after the decision, so it sees the routing header, and on the
// response path it sees the variant header the route added.
func observeFilter(cfg *config.Config) *extprocv3.ExternalProcessor {
	return &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ExtProcClusterName}},
			InitialMetadata: []*corev3.HeaderValue{{Key: config.ClientMetadataKey, Value: "envoy"}},
		},
		StatPrefix:        ObserveStatPrefix,
		ObservabilityMode: true,
		// Close the side stream soon after the request ends (default 5s):
		// everything the observer needs has been sent by then.
		DeferredCloseTimeout: durationpb.New(time.Second),
		FailureModeAllow:     true,
		// Trailers: a gRPC answer's status is in them (only a trailers-only
		// answer has it in the headers). Envoy sends them only when the
		// answer has some, and adds none in observability mode.
		ProcessingMode: observeProcessingMode(extprocv3.ProcessingMode_NONE, extprocv3.ProcessingMode_SEND),
	}
}

// decideProcessingMode sends request headers only: one round trip per
// request, nothing on the response path (docs/envoy-notes.md §1.2).
func decideProcessingMode() *extprocv3.ProcessingMode {
	return &extprocv3.ProcessingMode{
		RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
		ResponseHeaderMode:  extprocv3.ProcessingMode_SKIP,
		RequestBodyMode:     extprocv3.ProcessingMode_NONE,
		ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
}

// cookieOverrideModes is the one override the decision may ask for:
// response headers SEND, nothing else. Envoy compares an override with
// this list by raw enum values, ignoring only request_header_mode
// (ext_proc allowed_override_modes_set.h), so trailer modes DEFAULT and
// SKIP — the same behaviour — are different keys: both are listed, so a
// server that leaves trailers unset is not silently refused.
func cookieOverrideModes() []*extprocv3.ProcessingMode {
	var out []*extprocv3.ProcessingMode
	for _, trailers := range []extprocv3.ProcessingMode_HeaderSendMode{extprocv3.ProcessingMode_DEFAULT, extprocv3.ProcessingMode_SKIP} {
		out = append(out, &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
			RequestTrailerMode:  trailers,
			ResponseTrailerMode: trailers,
		})
	}
	return out
}

// decideFilter is the ext_proc filter that asks modelsplit for the variant.
func decideFilter(cfg *config.Config) *extprocv3.ExternalProcessor {
	return &extprocv3.ExternalProcessor{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ExtProcClusterName}},
			InitialMetadata: []*corev3.HeaderValue{{Key: config.ClientMetadataKey, Value: "envoy"}},
		},
		StatPrefix: DecideStatPrefix,
		// Fail open: if the decision is slow or down, the fallback route
		// splits by weight and traffic keeps flowing.
		FailureModeAllow: true,
		MessageTimeout:   durationpb.New(cfg.Gateway.ExtProcTimeout.D()),
		ProcessingMode:   decideProcessingMode(),
		// The server asks for the response phase only to mint an id cookie
		// for an anonymous user's first request.
		AllowModeOverride:    true,
		AllowedOverrideModes: cookieOverrideModes(),
		// Envoy's default lets ext_proc mutate any non-system header, and
		// allow_expression only adds to that; disallow_all makes the
		// expression the whole list. Other mutations are ignored (counted
		// in rejected_header_mutations), not turned into errors.
		MutationRules: &mutationv3.HeaderMutationRules{
			DisallowAll:     boolValue(true),
			AllowExpression: &matcherv3.RegexMatcher{Regex: `^(x-modelsplit-(variant|shadow-[a-z0-9._-]+)|set-cookie)$`},
		},
		ForwardRules: &extprocv3.HeaderForwardingRules{AllowedHeaders: forwardedHeaders(cfg)},
	}
}

// forwardedHeaders is every header a decision can read, so Envoy sends
// nothing else to ext_proc.
func forwardedHeaders(cfg *config.Config) *matcherv3.ListStringMatcher {
	set := map[string]bool{config.TargetHeader: true}
	for _, e := range cfg.Endpoints {
		if e.Sticky.Header != "" {
			set[e.Sticky.Header] = true
		}
		if e.Sticky.Cookie != "" {
			set["cookie"] = true
		}
		for _, r := range e.Rules {
			if r.Header != "" {
				set[r.Header] = true
			}
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	m := &matcherv3.ListStringMatcher{}
	for _, n := range names {
		m.Patterns = append(m.Patterns, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}})
	}
	return m
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func socketAddress(host string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}
