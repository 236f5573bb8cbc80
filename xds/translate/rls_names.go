package translate

import "github.com/modelsplit/modelsplit/config"

// Key names in RouteLookupRequest.key_map. Header keys are the header names
// themselves, so the key map reads like the request's headers and the
// decision engine can consume it directly.
const (
	// EndpointKey is a constant key every key builder adds, naming the
	// endpoint: one lookup server serves many endpoints, and the RLS
	// request carries nothing else that identifies it reliably.
	EndpointKey = config.EndpointMetadataKey
	// CookieKey carries the Cookie header for cookie-sticky endpoints.
	CookieKey = "cookie"
)

// AliasCluster is the cluster a lookup answers for a variant. It is a
// second CDS resource over the variant's endpoints, not the variant's own
// cluster: in grpc-go 1.85 an RLS target that a route also references
// never becomes ready (docs/envoy-notes.md §4.4), and the variant clusters stay
// referenced by the route config to keep them warm.
func AliasCluster(endpoint, variant string) string {
	return config.ClusterName(endpoint, variant) + "/rls"
}

// WeightedCluster is the endpoint's fallback target: one cluster holding
// every serving variant's backends, one locality per variant weighted by
// the variant's weight, so grpc-go's locality picker splits requests by
// weight. Clients use it when a lookup fails (default_target), as the
// second choice when the decided variant is unhealthy, and for anonymous
// requests. The "_" cannot start a variant name, so it never clashes with
// an alias.
func WeightedCluster(endpoint string) string {
	return endpoint + "/_weighted/rls"
}
