// Package config turns the user's declarative YAML model into validated Go
// structs. It knows nothing about Envoy: the xds package translates this model
// into Envoy resources, the cohort package decides with it.
package config

import (
	"net"
	"strconv"
	"strings"
	"time"
)

// Default listen addresses. All bind to loopback so that nothing is exposed
// until the operator asks for it.
const (
	DefaultXDSAddr     = "127.0.0.1:18000"
	DefaultExtProcAddr = "127.0.0.1:18001"
	DefaultAdminAddr   = "127.0.0.1:18002"
	DefaultGatewayPort = 10000
)

// Header names shared by the control plane and the decision server.
const (
	// VariantHeader carries the decided variant to Envoy's router and back to
	// the client. Envoy strips any client-sent copy before ext_proc runs.
	VariantHeader = "x-modelsplit-variant"
	// TargetHeader lets a trusted caller name a variant explicitly.
	TargetHeader = "x-modelsplit-target"
	// EndpointMetadataKey is the ext_proc stream metadata naming the endpoint
	// the request matched, so the server never re-implements route matching.
	EndpointMetadataKey = "x-modelsplit-endpoint"
	// ClientMetadataKey tells the ext_proc server which kind of client opened
	// the stream ("envoy" or "grpc"): they read different HeaderValue fields.
	ClientMetadataKey = "x-modelsplit-client"
	// ServedVariantMetadataKey tells the observe filter's server which
	// variant a proxyless gRPC call went to (per-route/cluster override).
	ServedVariantMetadataKey = "x-modelsplit-served-variant"
	// CaptureMetadataKey tells the observe filter's server (Envoy) that the
	// route streams bodies for compare-mode shadows, and which exchanges
	// to capture: CaptureMarked, those the decision marked with a shadow's
	// header; CaptureSampled, those the server samples itself (endpoints
	// without the decision). Without it nothing is captured.
	CaptureMetadataKey = "x-modelsplit-capture"
	CaptureMarked      = "marked"
	CaptureSampled     = "sampled"
	// ShadowHeader prefixes the per-shadow headers (ShadowHeaderFor) that
	// mark a request as sampled; Envoy strips client-sent copies.
	ShadowHeader = "x-modelsplit-shadow"
	// FailoverHeader names, on an answer, the variant the request was
	// routed to when another variant answered it (failover); absent
	// otherwise. x-modelsplit-variant always names the variant that
	// answered.
	FailoverHeader = "x-modelsplit-failover-from"
	// RequestIDHeader identifies a request in disagreement samples
	// (Envoy sets it).
	RequestIDHeader = "x-request-id"
)

// Protocols a backend can speak.
const (
	ProtocolHTTP1 = "http1"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
)

// Config is the whole declarative model of one modelsplit deployment.
type Config struct {
	Listen    Listen              `yaml:"listen"`
	TLS       TLS                 `yaml:"tls"`
	Admin     Admin               `yaml:"admin"`
	Store     Store               `yaml:"store"`
	Gateway   Gateway             `yaml:"gateway"`
	ExtProc   ExtProc             `yaml:"extproc"`
	UserLists map[string][]string `yaml:"user_lists"`
	Endpoints []Endpoint          `yaml:"endpoints"`

	// Source is the file the config was read from ("" when built in code).
	Source string `yaml:"-"`
	// lines maps a field path such as "endpoints[0].variants[1].weight" to
	// its line in Source, so validation errors can point at it.
	lines map[string]int
}

// Listen holds the addresses modelsplit serves on.
type Listen struct {
	XDS     string `yaml:"xds"`
	ExtProc string `yaml:"extproc"` // host:port or unix:///path
	Admin   string `yaml:"admin"`
}

// TLS configures TLS for the xDS and ext_proc gRPC listeners, and how
// Envoy's ext_proc cluster (which modelsplit sends over CDS) connects to
// them. Empty means plaintext (the loopback default).
type TLS struct {
	// CertFile and KeyFile are modelsplit's certificate (chain) and key.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, requires and verifies client certificates
	// (mTLS) on both listeners.
	ClientCAFile string `yaml:"client_ca_file"`
	// Envoy is what Envoy's ext_proc cluster verifies and presents.
	Envoy EnvoyTLS `yaml:"envoy"`
}

// EnvoyTLS is the upstream TLS of Envoy's ext_proc cluster. modelsplit
// reads the files (Validate loads them) and sends their contents inline
// with the cluster, so Envoy needs no copy of them. The xDS connection
// itself is configured in Envoy's bootstrap (`modelsplit bootstrap
// -xds-ca-file ...`), which names files on Envoy's host.
type EnvoyTLS struct {
	// CAFile verifies modelsplit's certificate; required with TLS.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are Envoy's client certificate and key;
	// required with TLS.ClientCAFile, refused without it.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the SNI Envoy sends and the name (DNS or IP subject
	// alternative name) modelsplit's certificate must hold. Default: the
	// host of the ext_proc address Envoy dials.
	ServerName string `yaml:"server_name"`

	// The files' contents, read by Validate.
	CAPEM   string `yaml:"-"`
	CertPEM string `yaml:"-"`
	KeyPEM  string `yaml:"-"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// Listeners is the part of the TLS settings the listeners use: changing
// it needs a restart (the Envoy part is re-read on every reload).
func (t TLS) Listeners() TLS {
	return TLS{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile}
}

// Admin configures the admin/metrics HTTP listener.
type Admin struct {
	// TokenFile holds the bearer token required on the admin API. It is
	// mandatory when listen.admin is not a loopback address. The environment
	// variable MODELSPLIT_ADMIN_TOKEN is used when this is empty.
	TokenFile string `yaml:"token_file"`
	// StateFile persists live changes (weights, shadow pauses) when no Redis
	// is configured.
	StateFile string `yaml:"state_file"`
	// AllowedHosts are the names clients may send in Host besides
	// localhost, *.localhost, IP literals and the host of listen.admin:
	// "name" or "*.domain". Any other Host is refused (DNS rebinding).
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// Store selects where sticky assignments live.
type Store struct {
	// Redis is a go-redis URL: redis://, rediss:// (TLS), redis-sentinel
	// style and cluster addresses are accepted (see cohort.NewRedisStore).
	// Empty selects the in-memory store (single replica).
	Redis string `yaml:"redis"`
	// KeyPrefix namespaces every key modelsplit writes.
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout is the budget for one Redis read on the decision path; past it
	// the hash decides.
	Timeout Duration `yaml:"timeout"`
	// CacheSize bounds the in-process assignment cache (entries).
	CacheSize int `yaml:"cache_size"`
	// CAFile verifies the Redis server certificate for rediss:// URLs.
	CAFile string `yaml:"ca_file"`
}

// Gateway describes the Envoy listener modelsplit programs.
type Gateway struct {
	Address string `yaml:"address"` // default 0.0.0.0
	Port    int    `yaml:"port"`
	// ExtProcAddress is where Envoy and gRPC clients reach the ext_proc
	// server; defaults to listen.extproc. Set it when Envoy runs elsewhere.
	ExtProcAddress string `yaml:"extproc_address"`
	// ExtProcTimeout is Envoy's per-message timeout for the decision; past
	// it Envoy fails open to the weighted route.
	ExtProcTimeout Duration `yaml:"extproc_timeout"`
	// The edge settings below are described in gateway.go.
	AccessLog             string        `yaml:"access_log"`
	XFFNumTrustedHops     int           `yaml:"xff_num_trusted_hops"`
	RequestHeadersTimeout Duration      `yaml:"request_headers_timeout"`
	TLS                   GatewayTLS    `yaml:"tls"`
	Limits                GatewayLimits `yaml:"limits"`
}

// Endpoint is one model served behind the gateway, split across variants.
type Endpoint struct {
	Name  string `yaml:"name"`
	Match Match  `yaml:"match"`
	// Protocol is the default protocol of the variants' backends.
	Protocol string `yaml:"protocol"`
	// Services are the fully qualified gRPC services of a grpc endpoint
	// (e.g. inference.GRPCInferenceService). Derived from a
	// /package.Service/ path prefix when empty.
	Services []string `yaml:"services"`
	Sticky   Sticky   `yaml:"sticky"`
	// AllowTarget lets callers pick a variant with x-modelsplit-target.
	AllowTarget bool `yaml:"allow_target"`
	// RouteLookup gives proxyless gRPC clients sticky cohorts through the
	// Route Lookup Service. Opt-in: a grpc-go client that does not import
	// google.golang.org/grpc/balancer/rls rejects such a route config.
	RouteLookup bool `yaml:"route_lookup"`
	// Observe feeds per-variant request counts, status classes and
	// latency (and compare-mode shadows) from an ext_proc filter in
	// observability mode, which adds no wait to the request. On unless
	// set to false.
	Observe  *bool     `yaml:"observe"`
	Variants []Variant `yaml:"variants"`
	Shadows  []Shadow  `yaml:"shadows"`
	Rules    []Rule    `yaml:"rules"`
	// Decide, when false, turns the decision off for this endpoint: Envoy
	// routes it by weight alone (hashed on the sticky header or cookie)
	// without asking modelsplit, and proxyless gRPC clients get no decide
	// filter. It is the baseline for measuring what the decision costs
	// (make bench-envoy); rules, targets, cookies and user-sampled shadows
	// need the decision and are refused with it. On unless set to false.
	Decide *bool `yaml:"decide"`
	// Rollout, when set, is a plan that moves traffic to a canary by
	// itself and rolls back on evidence (see package rollout).
	Rollout *Rollout `yaml:"rollout"`
	// Ramp is set at run time, never from YAML, while a rollout moves
	// traffic to a canary: see Ramp.
	Ramp *Ramp `yaml:"-" json:"ramp,omitempty"`
	// Bandit, when set, moves new users to the best-performing variant
	// by itself (see package bandit).
	Bandit *Bandit `yaml:"bandit"`
	// Timeout bounds a whole request on this endpoint's routes (variant,
	// fallback) and their mirrors: Envoy answers 504 past it (a stream
	// already under way is reset). For a grpc endpoint it is the longest
	// call, and a shorter grpc-timeout from the client wins. Default
	// DefaultTimeout; between 1ms and MaxTimeout.
	Timeout Duration `yaml:"timeout"`
	// IdleTimeout bounds the silence on a request's stream: no byte either
	// way for this long ends it (408 before the response started, a reset
	// after). It also bounds the wait for the first response byte. Default
	// DefaultIdleTimeout, or Timeout when that is shorter; at most Timeout.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// TokensHeader names the response header (or trailer) in which the
	// model server reports the tokens it generated for the request; the
	// gateway's access log carries it to modelsplit_variant_response_tokens.
	// Default DefaultTokensHeader.
	TokensHeader string `yaml:"tokens_header"`

	// Streaming marks an endpoint whose answers stream (server-sent
	// events, gRPC streams, token-by-token generation): it may only retry
	// failures that happen before a backend took the request.
	Streaming bool `yaml:"streaming"`
	// HealthCheck turns on Envoy's active health checks of the variants'
	// backends. Off unless set.
	HealthCheck *HealthCheck `yaml:"health_check"`
	// OutlierDetection tunes how Envoy ejects backends that keep failing.
	OutlierDetection OutlierDetection `yaml:"outlier_detection"`
	// Retries is Envoy's retry policy on the endpoint's routes.
	Retries Retries `yaml:"retries"`
	// Failover lets a variant's users be served by the endpoint's other
	// variants (same protocol, config order) while none of their own
	// variant's backends is healthy. On unless set to false.
	Failover *bool `yaml:"failover"`
}

// Match selects the requests that belong to an endpoint.
type Match struct {
	PathPrefix string `yaml:"path_prefix"`
}

// Sticky says how a user is recognised and how long an assignment lasts.
type Sticky struct {
	Header string `yaml:"header"`
	Cookie string `yaml:"cookie"`
	// TTL of a stored assignment; 0 keeps it forever.
	TTL Duration `yaml:"ttl"`
	// Salt seeds the hash. Changing it resets the experiment: every stored
	// assignment made under another salt is ignored.
	Salt string `yaml:"salt"`
	// MintCookie gives anonymous users an id cookie (named Cookie) on their
	// first response, so they become sticky from the next request.
	MintCookie bool `yaml:"mint_cookie"`
}

// Variant is one version of the model that serves users.
type Variant struct {
	Name     string    `yaml:"name"`
	Weight   int       `yaml:"weight"`
	Backends []Backend `yaml:"backends"`
	Protocol string    `yaml:"protocol"`
}

// Shadow is a candidate that receives copies of traffic; its answers never
// reach users.
type Shadow struct {
	Name string `yaml:"name"`
	// Percent of users (or requests, when PerRequest) that are mirrored.
	Percent    float64   `yaml:"percent"`
	PerRequest bool      `yaml:"per_request"`
	Backends   []Backend `yaml:"backends"`
	Protocol   string    `yaml:"protocol"`
	// Paused stops the shadow's traffic without removing it (the admin
	// API's pause sets it; it can also be written here).
	Paused bool `yaml:"paused"`
	// Compare, when set, replaces Envoy's fire-and-forget mirror: modelsplit
	// replays sampled requests to the shadow itself, off the request path,
	// and compares the shadow's answer with the primary's.
	Compare *Compare `yaml:"compare"`
}

// Compare configures how a shadow's answers are compared with the
// primary's, and the budget the replays may use.
type Compare struct {
	// Field is the part of the answer compared. JSON bodies: a dotted path
	// such as "label" or "predictions[0].score". gRPC: protobuf field
	// numbers such as "1" or "2.1". Empty compares the whole body.
	Field string `yaml:"field"`
	// Tolerance is the largest absolute difference of two numeric fields
	// that still agree; 0 asks for equality. Labels (strings) must be equal.
	Tolerance float64 `yaml:"tolerance"`
	// Redact lists fields (same syntax as Field) replaced by "[redacted]"
	// in the disagreement samples the admin API shows.
	Redact []string `yaml:"redact"`
	// Timeout bounds one replay; past it the replay is dropped and counted.
	Timeout Duration `yaml:"timeout"`
	// MaxConcurrency bounds replays in flight; more are dropped and counted.
	MaxConcurrency int `yaml:"max_concurrency"`
	// MaxBytesInFlight bounds request and response bytes held for replays
	// (captured or in flight); an exchange that would exceed it is dropped.
	MaxBytesInFlight int64 `yaml:"max_bytes_in_flight"`
	// Samples is how many recent disagreements are kept for the admin API.
	Samples int `yaml:"samples"`
}

// Compare defaults.
const (
	DefaultCompareTimeout     = Duration(5 * time.Second)
	DefaultCompareConcurrency = 64
	DefaultCompareBytes       = 32 << 20
	DefaultCompareSamples     = 100
)

// Observed reports whether the endpoint's traffic is observed (default on).
func (e *Endpoint) Observed() bool { return e.Observe == nil || *e.Observe }

// Decided reports whether the decision runs for the endpoint (default on).
func (e *Endpoint) Decided() bool { return e.Decide == nil || *e.Decide }

// Comparing reports whether the endpoint has a compare-mode shadow that
// is not paused (a paused one needs no bodies).
func (e *Endpoint) Comparing() bool {
	for i := range e.Shadows {
		if e.Shadows[i].Compare != nil && !e.Shadows[i].Paused {
			return true
		}
	}
	return false
}

// ShadowHeaderFor is the request header that marks a request as sampled
// for one shadow: the decision sets it to the shadow's cluster, and that
// shadow's mirror policy reads it through cluster_header.
func ShadowHeaderFor(shadow string) string { return ShadowHeader + "-" + shadow }

// Rule sends matching requests to a variant. The first matching rule wins.
// Exactly one condition is set: Equals, OneOf, Prefix (on Header) or UserList.
type Rule struct {
	Header   string   `yaml:"header"`
	Equals   string   `yaml:"equals"`
	OneOf    []string `yaml:"one_of"`
	Prefix   string   `yaml:"prefix"`
	UserList string   `yaml:"user_list"`
	Variant  string   `yaml:"variant"`
}

// Backend is one host:port serving a variant.
type Backend struct {
	Host string
	Port int
}

func (b Backend) String() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// Duration is a time.Duration written as "50ms", "1h" in YAML.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ClusterName is the Envoy cluster (and gRPC target) of a variant or shadow.
// It is deterministic so that routes, metrics and stored assignments agree
// across restarts and replicas.
func ClusterName(endpoint, variant string) string { return endpoint + "/" + variant }

// Endpoint returns the endpoint with the given name.
func (c *Config) Endpoint(name string) (*Endpoint, bool) {
	for i := range c.Endpoints {
		if c.Endpoints[i].Name == name {
			return &c.Endpoints[i], true
		}
	}
	return nil, false
}

// Variant returns the variant with the given name.
func (e *Endpoint) Variant(name string) (*Variant, bool) {
	for i := range e.Variants {
		if e.Variants[i].Name == name {
			return &e.Variants[i], true
		}
	}
	return nil, false
}

// TotalWeight is the sum of the variants' weights.
func (e *Endpoint) TotalWeight() int {
	t := 0
	for _, v := range e.Variants {
		t += v.Weight
	}
	return t
}

// VariantProtocol is the protocol a variant's backends speak.
func (e *Endpoint) VariantProtocol(v *Variant) string {
	if v.Protocol != "" {
		return v.Protocol
	}
	return e.Protocol
}

// ShadowProtocol is the protocol a shadow's backends speak.
func (e *Endpoint) ShadowProtocol(s *Shadow) string {
	if s.Protocol != "" {
		return s.Protocol
	}
	return e.Protocol
}

// ExtProcTarget is where Envoy and gRPC clients dial the ext_proc server.
func (c *Config) ExtProcTarget() string {
	if c.Gateway.ExtProcAddress != "" {
		return c.Gateway.ExtProcAddress
	}
	return c.Listen.ExtProc
}

// ExtProcHost is the host part of ExtProcTarget: what Envoy's ext_proc
// cluster checks modelsplit's certificate against when
// tls.envoy.server_name is empty. ok is false for a unix socket.
func (c *Config) ExtProcHost() (host string, ok bool) {
	t := c.ExtProcTarget()
	if strings.HasPrefix(t, "unix://") {
		return "", false
	}
	host, _, err := net.SplitHostPort(t)
	return host, err == nil && host != ""
}

// Line returns the line of a field path in the source file, or 0.
func (c *Config) Line(path string) int { return c.lines[path] }

// Clone returns a deep copy, so live changes never race with readers of the
// previous value.
func (c *Config) Clone() *Config {
	n := *c
	n.Admin.AllowedHosts = append([]string(nil), c.Admin.AllowedHosts...)
	n.Endpoints = make([]Endpoint, len(c.Endpoints))
	for i, e := range c.Endpoints {
		e.Services = append([]string(nil), e.Services...)
		e.Variants = append([]Variant(nil), e.Variants...)
		for j := range e.Variants {
			e.Variants[j].Backends = append([]Backend(nil), e.Variants[j].Backends...)
		}
		e.Shadows = append([]Shadow(nil), e.Shadows...)
		for j := range e.Shadows {
			e.Shadows[j].Backends = append([]Backend(nil), e.Shadows[j].Backends...)
			if c := e.Shadows[j].Compare; c != nil {
				cc := *c
				cc.Redact = append([]string(nil), c.Redact...)
				e.Shadows[j].Compare = &cc
			}
		}
		if e.Observe != nil {
			o := *e.Observe
			e.Observe = &o
		}
		if e.Decide != nil {
			d := *e.Decide
			e.Decide = &d
		}
		e.cloneResilience()
		e.Rules = append([]Rule(nil), e.Rules...)
		for j := range e.Rules {
			e.Rules[j].OneOf = append([]string(nil), e.Rules[j].OneOf...)
		}
		n.Endpoints[i] = e
	}
	if c.UserLists != nil {
		n.UserLists = make(map[string][]string, len(c.UserLists))
		for k, v := range c.UserLists {
			n.UserLists[k] = append([]string(nil), v...)
		}
	}
	return &n
}

// Ramp marks a rollout in progress on an endpoint. Without it a weight
// change moves only new users; with it, a returning user who was assigned
// by the hash moves to Canary as soon as the weights in force would hash
// them there, and never back while the canary keeps rising. New users are
// stored as Base (the weights before the rollout) would place them, so
// taking the ramp away (a rollback) restores exactly the earlier groups.
// Users placed by a rule or a target header are never moved.
type Ramp struct {
	Canary string         `json:"canary"`
	Base   map[string]int `json:"base"`
}
