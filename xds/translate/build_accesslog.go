package translate

import (
	"sort"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/config"
)

// AccessLogName is the gateway access log's log_name: what Envoy's first
// StreamAccessLogs message names, and what modelsplit's access log
// server accepts.
const AccessLogName = "modelsplit"

// Access-log batching: Envoy sends what it gathered every
// AccessLogFlushInterval, or sooner once AccessLogBufferBytes are
// waiting (Envoy's own defaults, written out so the config dump says
// them).
const (
	AccessLogFlushInterval = time.Second
	AccessLogBufferBytes   = 16 << 10
)

// accessLogs is the gateway's gRPC access log (envoy.access_loggers.http_grpc)
// to modelsplit, over the ext_proc cluster: per request the variant's
// cluster, time to the first upstream byte, time to the last byte sent to
// the client, and the endpoints' token headers and trailers. Envoy writes
// it when a request ends and sends it batched, off the request path; it
// feeds modelsplit_variant_time_to_first_byte_seconds,
// _duration_seconds and _response_tokens (see the accesslog package for
// why this and not the observe filter). Only when some endpoint is
// observed: an unobserved gateway (the bench-envoy baseline) logs nothing.
func accessLogs(cfg *config.Config) []*accesslogv3.AccessLog {
	if !anyObserved(cfg) {
		return nil
	}
	headers := tokensHeaders(cfg)
	als := &grpcalsv3.HttpGrpcAccessLogConfig{
		CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName: AccessLogName,
			GrpcService: &corev3.GrpcService{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ExtProcClusterName}},
			},
			TransportApiVersion: corev3.ApiVersion_V3,
			BufferFlushInterval: durationpb.New(AccessLogFlushInterval),
			BufferSizeBytes:     wrapperspb.UInt32(AccessLogBufferBytes),
		},
		// A server that streams its answer can only report the count at
		// the end: gRPC trailing metadata, HTTP/2 trailers. The variant
		// header names the variant that answered, which after a failover
		// is not the upstream cluster's (build_health.go).
		AdditionalResponseHeadersToLog:  append([]string{config.VariantHeader}, headers...),
		AdditionalResponseTrailersToLog: headers,
	}
	return []*accesslogv3.AccessLog{{
		Name:       "envoy.access_loggers.http_grpc",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(als)},
	}}
}

// tokensHeaders lists the observed endpoints' tokens_header names, once
// each, sorted.
func tokensHeaders(cfg *config.Config) []string {
	set := map[string]bool{}
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		if e.Observed() && e.TokensHeader != "" {
			set[e.TokensHeader] = true
		}
	}
	out := make([]string, 0, len(set))
	for h := range set {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}
