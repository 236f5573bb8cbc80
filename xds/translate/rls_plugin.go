package translate

import (
	"errors"
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/rls/lookuppb"
)

// ClusterSpecifierTypeURL is the type grpc-go registers its RLS cluster
// specifier under. Our message has the same fields under a renamed proto
// package, so the Any is assembled from its bytes with this URL.
const ClusterSpecifierTypeURL = "type.googleapis.com/grpc.lookup.v1.RouteLookupClusterSpecifier"

// PluginName names the plugin inside a route configuration; routes point
// at it with cluster_specifier_plugin.
const PluginName = "modelsplit-rls"

// Limits grpc-go applies (balancer/rls/config.go): longer ages are clamped
// to 5 minutes and caches to 5 MB, so asking for more only misleads.
const (
	maxAge       = 5 * time.Minute
	maxCacheSize = 5 << 20
)

// PluginOptions tunes the client side of the lookup.
type PluginOptions struct {
	// LookupService is the gRPC target clients dial for lookups, e.g.
	// "dns:///127.0.0.1:18001". Required.
	LookupService string
	// LookupTimeout bounds one lookup; a new user's first call waits at
	// most this long before the default target serves it. Default 1s.
	LookupTimeout time.Duration
	// MaxAge is how long a client keeps an answer. While the lookup server
	// is unreachable, users with an answer younger than this stay on their
	// variant. Default and maximum 5m.
	MaxAge time.Duration
	// StaleAge is when a client re-asks in the background (without delaying
	// calls), so rule and config changes reach active users within about
	// this long. Default 30s; must be below MaxAge.
	StaleAge time.Duration
	// CacheSizeBytes bounds each client's answer cache; an evicted user is
	// simply looked up again (same answer). Default and maximum 5 MB.
	CacheSizeBytes int64
}

func (o PluginOptions) withDefaults() PluginOptions {
	if o.LookupTimeout == 0 {
		o.LookupTimeout = time.Second
	}
	if o.MaxAge == 0 {
		o.MaxAge = maxAge
	}
	if o.StaleAge == 0 {
		o.StaleAge = min(30*time.Second, o.MaxAge/2)
	}
	if o.CacheSizeBytes == 0 {
		o.CacheSizeBytes = maxCacheSize
	}
	return o
}

func (o PluginOptions) validate() error {
	var errs []error
	if o.LookupService == "" {
		errs = append(errs, errors.New("lookup service target is empty"))
	}
	if o.LookupTimeout < 0 {
		errs = append(errs, fmt.Errorf("lookup timeout %v is negative", o.LookupTimeout))
	}
	if o.MaxAge < 0 || o.MaxAge > maxAge {
		errs = append(errs, fmt.Errorf("max age %v is outside (0, %v] (grpc-go clamps longer ages)", o.MaxAge, maxAge))
	}
	if o.StaleAge < 0 || o.StaleAge >= o.MaxAge {
		errs = append(errs, fmt.Errorf("stale age %v must be below max age %v", o.StaleAge, o.MaxAge))
	}
	if o.CacheSizeBytes < 0 || o.CacheSizeBytes > maxCacheSize {
		errs = append(errs, fmt.Errorf("cache size %d bytes is outside (0, %d]", o.CacheSizeBytes, maxCacheSize))
	}
	return errors.Join(errs...)
}

// RouteLookupConfig is the RLS configuration for one gRPC endpoint: one key
// builder over the endpoint's services that extracts every header the
// decision reads (sticky header or cookie, rule headers, the explicit
// target when allowed) under the header's own name, plus the constant
// endpoint key. The default target is the weighted cluster, so a failed
// lookup still splits by weight.
func RouteLookupConfig(e *config.Endpoint, opts PluginOptions) (*lookuppb.RouteLookupConfig, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("endpoint %q: RLS plugin: %w", e.Name, err)
	}
	if len(e.Services) == 0 {
		return nil, fmt.Errorf("endpoint %q: RLS key builders match gRPC services, and the endpoint names none (set services or a /package.Service/ path prefix)", e.Name)
	}
	kb := &lookuppb.GrpcKeyBuilder{ConstantKeys: map[string]string{EndpointKey: e.Name}}
	for _, svc := range e.Services {
		kb.Names = append(kb.Names, &lookuppb.GrpcKeyBuilder_Name{Service: svc})
	}
	for _, h := range decisionHeaders(e) {
		kb.Headers = append(kb.Headers, &lookuppb.NameMatcher{Key: h, Names: []string{h}})
	}
	return &lookuppb.RouteLookupConfig{
		GrpcKeybuilders:      []*lookuppb.GrpcKeyBuilder{kb},
		LookupService:        opts.LookupService,
		LookupServiceTimeout: durationpb.New(opts.LookupTimeout),
		MaxAge:               durationpb.New(opts.MaxAge),
		StaleAge:             durationpb.New(opts.StaleAge),
		CacheSizeBytes:       opts.CacheSizeBytes,
		DefaultTarget:        WeightedCluster(e.Name),
	}, nil
}

// decisionHeaders lists, once each and in a stable order, the headers the
// decision engine may read for e.
func decisionHeaders(e *config.Endpoint) []string {
	var out []string
	seen := map[string]bool{EndpointKey: true} // the constant key owns this name
	add := func(h string) {
		if h != "" && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	if e.AllowTarget {
		add(config.TargetHeader)
	}
	add(e.Sticky.Header)
	if e.Sticky.Cookie != "" {
		add(CookieKey)
	}
	for _, r := range e.Rules {
		add(r.Header)
	}
	return out
}

// ClusterSpecifierPlugin wraps RouteLookupConfig for a route configuration.
// It is optional: an xDS client without RLS support then skips the route
// that uses it and falls through to the next one, which should be the
// endpoint's weighted route. (grpc-go registers the plugin type whenever
// its xds package is linked, so for grpc-go "optional" never applies: a
// client that did not also import google.golang.org/grpc/balancer/rls
// rejects the route configuration.)
func ClusterSpecifierPlugin(e *config.Endpoint, opts PluginOptions) (*routev3.ClusterSpecifierPlugin, error) {
	rlc, err := RouteLookupConfig(e, opts)
	if err != nil {
		return nil, err
	}
	a, err := clusterSpecifierAny(&lookuppb.RouteLookupClusterSpecifier{RouteLookupConfig: rlc})
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", e.Name, err)
	}
	return &routev3.ClusterSpecifierPlugin{
		Extension:  &corev3.TypedExtensionConfig{Name: PluginName, TypedConfig: a},
		IsOptional: true,
	}, nil
}

// clusterSpecifierAny marshals deterministically (constant_keys is a map)
// so the same config always yields the same bytes and snapshot.
func clusterSpecifierAny(m *lookuppb.RouteLookupClusterSpecifier) (*anypb.Any, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding RouteLookupClusterSpecifier: %w", err)
	}
	return &anypb.Any{TypeUrl: ClusterSpecifierTypeURL, Value: b}, nil
}

// UnmarshalClusterSpecifier decodes a plugin's Any into our message. The
// xDS checker needs it: the type URL does not resolve in the global proto
// registry unless grpc-go's RLS balancer is linked in.
func UnmarshalClusterSpecifier(a *anypb.Any) (*lookuppb.RouteLookupClusterSpecifier, error) {
	if a.GetTypeUrl() != ClusterSpecifierTypeURL {
		return nil, fmt.Errorf("type %q is not %q", a.GetTypeUrl(), ClusterSpecifierTypeURL)
	}
	m := &lookuppb.RouteLookupClusterSpecifier{}
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, fmt.Errorf("decoding RouteLookupClusterSpecifier: %w", err)
	}
	return m, nil
}

// CheckClusterSpecifier reports what grpc-go would reject in a plugin's
// config (balancer/rls/config.go, keys.MakeBuilderMap), so a bad config is
// refused before it is served rather than NACKed by every client.
func CheckClusterSpecifier(a *anypb.Any) error {
	m, err := UnmarshalClusterSpecifier(a)
	if err != nil {
		return err
	}
	c := m.GetRouteLookupConfig()
	var errs []error
	if c == nil {
		return errors.New("route_lookup_config is missing")
	}
	if c.GetLookupService() == "" {
		errs = append(errs, errors.New("lookup_service is empty"))
	}
	if c.GetCacheSizeBytes() <= 0 {
		errs = append(errs, errors.New("cache_size_bytes must be above 0"))
	}
	if c.GetStaleAge() != nil && c.GetMaxAge() == nil {
		errs = append(errs, errors.New("stale_age is set without max_age"))
	}
	if len(c.GetHttpKeybuilders()) > 0 {
		errs = append(errs, errors.New("http_keybuilders are not supported by gRPC clients"))
	}
	if len(c.GetGrpcKeybuilders()) == 0 {
		errs = append(errs, errors.New("grpc_keybuilders is empty"))
	}
	names := map[string]bool{}
	for i, kb := range c.GetGrpcKeybuilders() {
		if len(kb.GetNames()) == 0 {
			errs = append(errs, fmt.Errorf("grpc_keybuilders[%d] has no names", i))
		}
		for _, n := range kb.GetNames() {
			if n.GetService() == "" {
				errs = append(errs, fmt.Errorf("grpc_keybuilders[%d] has a name without service", i))
			}
			id := n.GetService() + "/" + n.GetMethod()
			if names[id] {
				errs = append(errs, fmt.Errorf("grpc_keybuilders[%d]: name %s appears twice", i, id))
			}
			names[id] = true
		}
		keys := map[string]bool{}
		for _, h := range kb.GetHeaders() {
			if h.GetRequiredMatch() {
				errs = append(errs, fmt.Errorf("grpc_keybuilders[%d]: header key %q sets required_match, which gRPC forbids", i, h.GetKey()))
			}
			if len(h.GetNames()) == 0 {
				errs = append(errs, fmt.Errorf("grpc_keybuilders[%d]: header key %q lists no header names", i, h.GetKey()))
			}
			if keys[h.GetKey()] {
				errs = append(errs, fmt.Errorf("grpc_keybuilders[%d]: key %q appears twice", i, h.GetKey()))
			}
			keys[h.GetKey()] = true
		}
		for k := range kb.GetConstantKeys() {
			if keys[k] {
				errs = append(errs, fmt.Errorf("grpc_keybuilders[%d]: constant key %q is also a header key", i, k))
			}
		}
	}
	return errors.Join(errs...)
}
