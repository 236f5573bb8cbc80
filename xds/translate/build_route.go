package translate

import (
	"math"
	"sort"
	"strings"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/config"
)

// gatewayRouteConfig holds every endpoint's routes for Envoy nodes.
// Envoy takes the first matching route, so endpoints with longer path
// prefixes go first: /v1/chat must not be swallowed by /v1's fallback
// route (and named /v1 in the ext_proc metadata).
func gatewayRouteConfig(cfg *config.Config) *routev3.RouteConfiguration {
	rc := gatewayRouteShell()
	vh := rc.VirtualHosts[0]
	var routes []*routev3.Route
	for _, i := range gatewayRouteOrder(cfg.Endpoints) {
		routes = append(routes, gatewayEndpointRoutes(&cfg.Endpoints[i])...)
	}
	vh.Routes = append(routes, vh.Routes...)
	return rc
}

// gatewayRouteShell is the gateway route configuration without any
// endpoint's routes: one virtual host holding only the unmatched route,
// which stays last.
func gatewayRouteShell() *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: GatewayRouteName,
		// The served-variant headers are set once for the virtual host,
		// not on each route and cluster weight: Envoy applies them to
		// every answer from upstream, and an answer from a host without
		// modelsplit's metadata (or the unmatched route's 404) gets no
		// header, only the removal of any a backend sent. Once here
		// instead of 16 times per endpoint keeps 160,000 header
		// options out of the route table at 10,000 endpoints.
		VirtualHosts: []*routev3.VirtualHost{{
			Name:                    "modelsplit",
			Domains:                 []string{"*"},
			Routes:                  []*routev3.Route{unmatchedRoute()},
			ResponseHeadersToAdd:    servedVariantHeaders(),
			ResponseHeadersToRemove: servedVariantHeaderNames,
		}},
		// Our route → cluster references are checked before serving
		// (Check); Envoy need not hold requests for missing clusters.
		ValidateClusters: wrapperspb.Bool(false),
	}
}

// gatewayRouteOrder is the order of the endpoints' routes in the gateway
// route configuration, as indexes into endpoints: longer path prefixes
// first, equal lengths in config order.
func gatewayRouteOrder(endpoints []config.Endpoint) []int {
	order := make([]int, len(endpoints))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool {
		return len(endpoints[order[i]].Match.PathPrefix) > len(endpoints[order[j]].Match.PathPrefix)
	})
	return order
}

// gatewayEndpointRoutes is one endpoint's part of the gateway route
// configuration. It reads nothing but the endpoint.
func gatewayEndpointRoutes(e *config.Endpoint) []*routev3.Route {
	return withRetries(e, withTimeouts(e, endpointRoutes(e)))
}

// endpointRoutes: one header-match route per variant (what the decision's
// header selects after the route cache is cleared), then the fallback route
// that splits by weight when no decision was made (ext_proc down or slow).
//
// With compare-mode shadows, each variant route is preceded by one route per
// compare shadow that also matches the shadow's mark (the decision sets
// x-modelsplit-shadow-<s> on the requests it samples): only that route
// streams bodies to the observe filter, so unsampled requests cost it
// headers only. An endpoint without the decision (decide: false) has no
// marks: its fallback route streams every request's bodies and the
// observe filter samples them itself.
func endpointRoutes(e *config.Endpoint) []*routev3.Route {
	decide := mustAny(decidePerRoute(e))
	perRoute := map[string]*anypb.Any{DecideFilterName: decide, ObserveFilterName: mustAny(observePerRoute(e, ""))}
	comparePerRoute := map[string]*anypb.Any{DecideFilterName: decide, ObserveFilterName: mustAny(observePerRoute(e, config.CaptureMarked))}
	fallbackPerRoute := perRoute
	compare := compareShadows(e)
	if !e.Decided() {
		if len(compare) > 0 {
			fallbackPerRoute = map[string]*anypb.Any{DecideFilterName: decide, ObserveFilterName: mustAny(observePerRoute(e, config.CaptureSampled))}
		}
		compare = nil
	}
	mirrors := mirrorPolicies(e)
	var routes []*routev3.Route
	for _, v := range e.Variants {
		for _, s := range compare {
			routes = append(routes, &routev3.Route{
				Name: config.ClusterName(e.Name, v.Name) + "/compare/" + s,
				Match: &routev3.RouteMatch{
					PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: e.Match.PathPrefix},
					Headers: []*routev3.HeaderMatcher{
						exactHeader(config.VariantHeader, v.Name),
						{Name: config.ShadowHeaderFor(s), HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
					},
				},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier:      &routev3.RouteAction_Cluster{Cluster: config.ClusterName(e.Name, v.Name)},
					RequestMirrorPolicies: mirrors,
				}},
				TypedPerFilterConfig: comparePerRoute,
			})
		}
		routes = append(routes, &routev3.Route{
			Name:  config.ClusterName(e.Name, v.Name),
			Match: withHeaders(pathMatch(e.Match.PathPrefix), exactHeader(config.VariantHeader, v.Name)),
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier:      &routev3.RouteAction_Cluster{Cluster: config.ClusterName(e.Name, v.Name)},
				RequestMirrorPolicies: mirrors,
			}},
			TypedPerFilterConfig: perRoute,
		})
	}
	routes = append(routes, &routev3.Route{
		Name:  e.Name + "/fallback",
		Match: pathMatch(e.Match.PathPrefix),
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier:      &routev3.RouteAction_WeightedClusters{WeightedClusters: weightedClusters(e, true)},
			HashPolicy:            stickyHashPolicy(e),
			RequestMirrorPolicies: mirrors,
		}},
		TypedPerFilterConfig: fallbackPerRoute,
	})
	return routes
}

// weightedClusters splits over the variants.
//
// For grpc-go (envoy false) the weights are in the route: the variants
// with weight > 0, scaled (Envoy and grpc-go reject an all-zero set;
// validation guarantees one is positive).
//
// For Envoy the live weights are not in the route table but in the runtime
// layer modelsplit serves over RTDS (WeightsRuntime): the route names every
// variant, weight 0 ones included, with the placeholder weight
// RuntimeDefaultWeight and runtime_key_prefix WeightsRuntimePrefix, and
// Envoy reads cluster i's weight from the runtime key
// "<WeightsRuntimePrefix>.<cluster name>" on every pick
// (docs/envoy-notes.md §6.4). A weight change therefore changes the
// runtime resource only: the route configuration, megabytes at 1,000
// endpoints, stays byte for byte the same and Envoy does not reload it.
// Each pick also tells the client which variant answered, and the pick is
// hashed on the user key so a user stays put even when ext_proc cannot be
// reached.
//
// Weights are scaled to config.WeightScale, the same intervals the
// decision engine picks new users from, so Envoy's hashed pick and the
// decision agree user by user (cohort/hash.go): Envoy totals the runtime
// weights of the route's clusters on every pick, and they sum to exactly
// WeightScale.
func weightedClusters(e *config.Endpoint, envoy bool) *routev3.WeightedCluster {
	wc := &routev3.WeightedCluster{}
	scaled := config.ScaledWeights(e.Variants)
	for i, v := range e.Variants {
		if v.Weight <= 0 && !envoy {
			continue
		}
		cw := &routev3.WeightedCluster_ClusterWeight{
			Name:   config.ClusterName(e.Name, v.Name),
			Weight: wrapperspb.UInt32(scaled[i]),
		}
		if envoy {
			cw.Weight = wrapperspb.UInt32(RuntimeDefaultWeight)
		}
		wc.Clusters = append(wc.Clusters, cw)
	}
	if envoy {
		wc.RuntimeKeyPrefix = WeightsRuntimePrefix
		if stickyHashPolicy(e) != nil {
			wc.RandomValueSpecifier = &routev3.WeightedCluster_UseHashPolicy{UseHashPolicy: wrapperspb.Bool(true)}
		}
	}
	return wc
}

// stickyHashPolicy hashes the user key as the decision engine's new-user
// pick does: xxHash64 of salt + key. Envoy hashes the header value after
// an optional rewrite, so a salt is prepended by rewriting the empty match
// at the start; a cookie hash has no rewrite, so a salted cookie endpoint's
// fail-open pick agrees with the decision only by chance (documented).
func stickyHashPolicy(e *config.Endpoint) []*routev3.RouteAction_HashPolicy {
	switch {
	case e.Sticky.Header != "":
		h := &routev3.RouteAction_HashPolicy_Header{HeaderName: e.Sticky.Header}
		if e.Sticky.Salt != "" {
			h.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern: &matcherv3.RegexMatcher{Regex: "^"},
				// In a substitution \ is a backslash and \N a group.
				Substitution: strings.ReplaceAll(e.Sticky.Salt, `\`, `\\`),
			}
		}
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: h}}}
	case e.Sticky.Cookie != "":
		return []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{
			Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: e.Sticky.Cookie}}}}
	}
	return nil
}

// mirrorPolicies tees requests to shadows. Per-request shadows sample by
// runtime fraction; user-sampled shadows mirror only when the decision set
// x-modelsplit-shadow (cluster_header is read after ext_proc ran), so a
// sampled user's whole session is mirrored.
//
// Compare-mode shadows get no mirror: modelsplit replays their requests
// itself (it needs the answers), and paused shadows get nothing.
//
// The copy keeps the Host the primary gets: a shadow is deployed like the
// variants it may replace, and a backend behind virtual hosting (an
// ingress, Knative, a cloud load balancer) does not know Envoy's default
// "<host>-shadow" (Envoy 1.40 sent "127.0.0.1-shadow:8080" to a backend
// at 127.0.0.1:8080). Instead of the suffix, x-modelsplit-shadow names
// the shadow on every copy, so a backend can still tell mirrored traffic.
func mirrorPolicies(e *config.Endpoint) []*routev3.RouteAction_RequestMirrorPolicy {
	var out []*routev3.RouteAction_RequestMirrorPolicy
	for _, s := range e.Shadows {
		var p *routev3.RouteAction_RequestMirrorPolicy
		switch {
		case s.Paused || s.Compare != nil:
			continue
		case s.PerRequest:
			p = &routev3.RouteAction_RequestMirrorPolicy{
				Cluster: config.ClusterName(e.Name, s.Name),
				RuntimeFraction: &corev3.RuntimeFractionalPercent{
					DefaultValue: percent(s.Percent),
					RuntimeKey:   "modelsplit.shadow." + e.Name + "." + s.Name,
				},
			}
		default:
			p = &routev3.RouteAction_RequestMirrorPolicy{ClusterHeader: config.ShadowHeaderFor(s.Name)}
		}
		p.DisableShadowHostSuffixAppend = true
		p.RequestHeadersMutations = []*mutationv3.HeaderMutation{{Action: &mutationv3.HeaderMutation_Append{
			Append: &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: config.ShadowHeader, Value: s.Name},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			},
		}}}
		out = append(out, p)
	}
	return out
}

// compareShadows names the endpoint's compare-mode shadows the observe
// filter can capture for: none when the endpoint is not observed; paused
// ones are never sampled.
func compareShadows(e *config.Endpoint) []string {
	if !e.Observed() {
		return nil
	}
	var out []string
	for _, s := range e.Shadows {
		if s.Compare != nil && !s.Paused {
			out = append(out, s.Name)
		}
	}
	return out
}

// observePerRoute turns the observe filter off for endpoints that opted
// out, and names the endpoint otherwise. On routes that capture exchanges
// for compare-mode shadows (capture: config.CaptureMarked or
// CaptureSampled, passed on in the stream's metadata) it streams the bodies
// too (observability mode allows STREAMED).
func observePerRoute(e *config.Endpoint, capture string) *extprocv3.ExtProcPerRoute {
	if !e.Observed() {
		return &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}}
	}
	o := &extprocv3.ExtProcOverrides{
		GrpcInitialMetadata: []*corev3.HeaderValue{{Key: config.EndpointMetadataKey, Value: e.Name}},
	}
	if capture != "" {
		o.GrpcInitialMetadata = append(o.GrpcInitialMetadata, &corev3.HeaderValue{Key: config.CaptureMetadataKey, Value: capture})
		o.ProcessingMode = observeProcessingMode(extprocv3.ProcessingMode_STREAMED, extprocv3.ProcessingMode_SEND)
	}
	return &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: o}}
}

// percent is p% as Envoy's fraction: whole percents over HUNDRED (what an
// operator expects to read in a config dump), fractional ones exact over
// MILLION (0.5% is 5,000 per million).
func percent(p float64) *typev3.FractionalPercent {
	if p == math.Trunc(p) {
		return &typev3.FractionalPercent{Numerator: uint32(p), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return &typev3.FractionalPercent{Numerator: uint32(math.Round(p * 10_000)), Denominator: typev3.FractionalPercent_MILLION}
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}},
	}}
}

// decidePerRoute turns the decision off for an endpoint with decide:
// false (its requests take the weighted fallback route without a round
// trip), and names the endpoint otherwise.
func decidePerRoute(e *config.Endpoint) *extprocv3.ExtProcPerRoute {
	if !e.Decided() {
		return &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}}
	}
	return endpointExtProcPerRoute(e.Name)
}

// endpointExtProcPerRoute names the endpoint in the ext_proc stream's
// metadata, so the server never re-implements Envoy's route matching.
func endpointExtProcPerRoute(endpoint string) *extprocv3.ExtProcPerRoute {
	return &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{
		GrpcInitialMetadata: []*corev3.HeaderValue{{Key: config.EndpointMetadataKey, Value: endpoint}},
	}}}
}

func boolValue(b bool) *wrapperspb.BoolValue { return wrapperspb.Bool(b) }
