package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/modelsplit/modelsplit/config"
)

// Timeouts for long and streaming inference.
//
// Envoy gives a route 15s by default (RouteAction.timeout), measured from
// the end of the request to the end of the response: a generation that
// streams for longer is cut off with a 504, and so is its mirror (a mirror
// gets the route's timeout). Every route an endpoint owns therefore
// carries the endpoint's timeout and idle_timeout (config defaults: 300s
// and 60s):
//
//   - HTTP endpoints: RouteAction.timeout (whole response; 504 before the
//     response started, a reset after) and RouteAction.idle_timeout (no
//     byte either way for that long; the timer runs from the request, so
//     it also bounds the wait for the first response byte). Mirrors get the
//     route's timeout from Envoy's router.
//   - gRPC endpoints: RouteAction.max_stream_duration with
//     grpc_timeout_header_max, both the endpoint's timeout: a call lasts
//     as long as the client's grpc-timeout says, never longer than the
//     endpoint allows, and the endpoint's timeout when the client sends
//     none (Envoy answers DEADLINE_EXCEEDED). A route with
//     max_stream_duration switches Envoy's router to these "new" timeouts
//     and ignores RouteAction.timeout, so it is not set — and a mirror, which
//     would get that (now zero, unbounded) router timeout, is bounded by
//     its shadow cluster's max_stream_duration instead (boundShadowStreams).
//     idle_timeout as for HTTP.
//   - proxyless grpc-go: max_stream_duration as above (grpc-go reads
//     grpc_timeout_header_max, else max_stream_duration, and makes it the
//     call's deadline when the caller's is later or missing). grpc-go
//     ignores timeout and idle_timeout.
//
// Envoy sets a stream's idle timer from the route matched when the
// request headers arrive — before the decision clears the route cache —
// so every route of an endpoint carries the same values (the variant
// routes, the fallback route, and any route added beside them).

// clientTimeoutHeaders would let a client replace an endpoint's bounds
// (x-envoy-upstream-rq-timeout-ms: 0 is "no timeout"); Envoy honours them
// unless it deems the request external, so the gateway strips them with
// its other client-sent headers. gRPC clients shorten their call with
// grpc-timeout instead, which the route caps.
var clientTimeoutHeaders = []string{
	"x-envoy-upstream-rq-timeout-ms",
	"x-envoy-upstream-rq-per-try-timeout-ms",
	"x-envoy-expected-rq-timeout-ms",
	"x-envoy-upstream-stream-duration-ms",
}

// endpointTimeout is the endpoint's whole-request bound; a config built
// without ApplyDefaults gets the default rather than Envoy's "0 = none".
func endpointTimeout(e *config.Endpoint) time.Duration {
	if e.Timeout <= 0 {
		return config.DefaultTimeout.D()
	}
	return e.Timeout.D()
}

// endpointIdleTimeout is the endpoint's longest silence, never longer than
// its timeout.
func endpointIdleTimeout(e *config.Endpoint) time.Duration {
	d := e.IdleTimeout.D()
	if d <= 0 {
		d = config.DefaultIdleTimeout.D()
	}
	return min(d, endpointTimeout(e))
}

// grpcTimeouts: an endpoint whose routes bound calls with
// max_stream_duration (the client's grpc-timeout, capped).
func grpcTimeouts(e *config.Endpoint) bool { return e.Protocol == config.ProtocolGRPC }

// withTimeouts sets the endpoint's timeouts on each of its Envoy routes.
func withTimeouts(e *config.Endpoint, routes []*routev3.Route) []*routev3.Route {
	for _, r := range routes {
		a := r.GetRoute()
		if a == nil {
			continue
		}
		a.IdleTimeout = durationpb.New(endpointIdleTimeout(e))
		if grpcTimeouts(e) {
			a.MaxStreamDuration = maxStreamDuration(e)
		} else {
			a.Timeout = durationpb.New(endpointTimeout(e))
		}
	}
	return routes
}

// withGRPCTimeouts bounds every call of a proxyless endpoint's route
// configuration (variant, lookup and weighted routes).
func withGRPCTimeouts(e *config.Endpoint, rc *routev3.RouteConfiguration) {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if a := r.GetRoute(); a != nil {
				a.MaxStreamDuration = maxStreamDuration(e)
			}
		}
	}
}

// maxStreamDuration: the client's grpc-timeout, capped at the endpoint's
// timeout, which also applies when the client sends none.
func maxStreamDuration(e *config.Endpoint) *routev3.RouteAction_MaxStreamDuration {
	t := durationpb.New(endpointTimeout(e))
	return &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: t, GrpcTimeoutHeaderMax: durationpb.New(t.AsDuration())}
}

// streamIdleTimeout is the gateway's stream_idle_timeout: the longest idle
// timeout of any endpoint (Envoy's default is 5 minutes). Each endpoint's
// routes set their own, which replaces this one once a route matched;
// this one covers a stream before routing and requests no endpoint
// matches, and never cuts an endpoint's stream sooner than it asked.
func streamIdleTimeout(cfg *config.Config) *durationpb.Duration {
	var d time.Duration
	for i := range cfg.Endpoints {
		d = max(d, endpointIdleTimeout(&cfg.Endpoints[i]))
	}
	if d == 0 {
		d = config.DefaultIdleTimeout.D()
	}
	return durationpb.New(d)
}

// boundShadowStreams limits how long a gRPC endpoint's mirror may run:
// its route uses max_stream_duration, which leaves Envoy's router (and so
// the mirror it starts) without a timeout. The shadow cluster's upstream
// max_stream_duration resets the mirror at the endpoint's timeout.
func boundShadowStreams(c *clusterv3.Cluster, e *config.Endpoint) {
	if !grpcTimeouts(e) {
		return
	}
	opts := &httpv3.HttpProtocolOptions{}
	if a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; a != nil {
		if err := a.UnmarshalTo(opts); err != nil {
			panic("xds: " + c.GetName() + ": " + err.Error()) // we packed it ourselves
		}
	} else {
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}}
	}
	if opts.CommonHttpProtocolOptions == nil {
		opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{}
	}
	opts.CommonHttpProtocolOptions.MaxStreamDuration = durationpb.New(endpointTimeout(e))
	if c.TypedExtensionProtocolOptions == nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{}
	}
	c.TypedExtensionProtocolOptions[httpProtocolOptionsKey] = mustAny(opts)
}
