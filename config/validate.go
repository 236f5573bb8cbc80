package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Defaults for fields the user may omit.
const (
	DefaultKeyPrefix      = "modelsplit:"
	DefaultStoreTimeout   = Duration(10 * time.Millisecond)
	DefaultCacheSize      = 100_000
	DefaultExtProcTimeout = Duration(50 * time.Millisecond)
	// DefaultTimeout is an endpoint's whole-request bound. Envoy's own
	// default (15s) cuts long generations off with a 504; five minutes
	// lets a large model write a few thousand tokens at a few tens of
	// tokens a second, and still frees a hung backend's connection.
	DefaultTimeout = Duration(300 * time.Second)
	// DefaultIdleTimeout is an endpoint's longest silence on a stream.
	// Token streams send a chunk every few tens of milliseconds and the
	// first one within seconds; a minute of silence is a stalled model
	// (or a non-streaming answer longer than that: raise it there).
	DefaultIdleTimeout = Duration(60 * time.Second)
	// MaxTimeout caps timeout and idle_timeout: longer is a typo (or
	// needs a job queue, not a held HTTP request).
	MaxTimeout = Duration(24 * time.Hour)
	// DefaultTokensHeader is where a model server reports its token count.
	DefaultTokensHeader = "x-modelsplit-tokens"
	// MaxWeight keeps weight sums far from overflow in Envoy's uint32 and in
	// the hash arithmetic.
	MaxWeight = 1_000_000
)

// ApplyDefaults fills the fields the user left empty. Parse calls it; code
// that builds a Config by hand calls it before Validate.
func (c *Config) ApplyDefaults() {
	if c.Listen.XDS == "" {
		c.Listen.XDS = DefaultXDSAddr
	}
	if c.Listen.ExtProc == "" {
		c.Listen.ExtProc = DefaultExtProcAddr
	}
	if c.Listen.Admin == "" {
		c.Listen.Admin = DefaultAdminAddr
	}
	if c.Store.KeyPrefix == "" {
		c.Store.KeyPrefix = DefaultKeyPrefix
	}
	if c.Store.Timeout == 0 {
		c.Store.Timeout = DefaultStoreTimeout
	}
	if c.Store.CacheSize == 0 {
		c.Store.CacheSize = DefaultCacheSize
	}
	if c.Gateway.Port == 0 {
		c.Gateway.Port = DefaultGatewayPort
	}
	if c.Gateway.Address == "" {
		c.Gateway.Address = "0.0.0.0"
	}
	if c.Gateway.ExtProcTimeout == 0 {
		c.Gateway.ExtProcTimeout = DefaultExtProcTimeout
	}
	c.applyGatewayDefaults()
	defer c.applyExtProcDefaults() // after the endpoints' timeouts
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		if e.Protocol == "" {
			e.Protocol = ProtocolHTTP1
		}
		if e.Protocol == ProtocolGRPC && len(e.Services) == 0 {
			if svc, ok := ServiceFromPrefix(e.Match.PathPrefix); ok {
				e.Services = []string{svc}
			}
		}
		if e.Sticky.Header != "" {
			e.Sticky.Header = strings.ToLower(e.Sticky.Header)
		}
		c.defaultTimeouts(i, e)
		for j := range e.Rules {
			e.Rules[j].Header = strings.ToLower(e.Rules[j].Header)
		}
		e.applyResilienceDefaults()
		for j := range e.Shadows {
			if c := e.Shadows[j].Compare; c != nil {
				if c.Timeout == 0 {
					c.Timeout = DefaultCompareTimeout
				}
				if c.MaxConcurrency == 0 {
					c.MaxConcurrency = DefaultCompareConcurrency
				}
				if c.MaxBytesInFlight == 0 {
					c.MaxBytesInFlight = DefaultCompareBytes
				}
				if c.Samples == 0 {
					c.Samples = DefaultCompareSamples
				}
			}
		}
	}
}

// defaultTimeouts fills an endpoint's timeouts. A field written in the
// file is kept as written, even 0 (refused by Validate: Envoy would read
// it as "no timeout"); only an absent one gets the default. The idle
// default never exceeds the endpoint's timeout.
func (c *Config) defaultTimeouts(i int, e *Endpoint) {
	f := fmt.Sprintf("endpoints[%d].", i)
	if e.Timeout == 0 && c.Line(f+"timeout") == 0 {
		e.Timeout = DefaultTimeout
	}
	if e.IdleTimeout == 0 && c.Line(f+"idle_timeout") == 0 {
		e.IdleTimeout = DefaultIdleTimeout
		if e.Timeout > 0 && e.Timeout < e.IdleTimeout {
			e.IdleTimeout = e.Timeout
		}
	}
	if e.TokensHeader == "" && c.Line(f+"tokens_header") == 0 {
		e.TokensHeader = DefaultTokensHeader
	}
	e.TokensHeader = strings.ToLower(e.TokensHeader)
}

// ServiceFromPrefix derives a gRPC service name from a "/package.Service/"
// path prefix.
func ServiceFromPrefix(prefix string) (string, bool) {
	s := strings.TrimSuffix(strings.TrimPrefix(prefix, "/"), "/")
	if s == "" || strings.Contains(s, "/") || !strings.Contains(s, ".") {
		return "", false
	}
	return s, serviceRE.MatchString(s)
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)
	headerRE  = regexp.MustCompile(`^[a-z0-9!#$%&'*+.^_|~-]+$`)
	cookieRE  = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)
	serviceRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)
)

// validator collects problems with their field paths.
type validator struct {
	c    *Config
	errs Errors
}

func (v *validator) add(field, format string, args ...any) {
	line := v.c.Line(field)
	// Fall back to the nearest enclosing field that has a line (the field
	// itself may be absent from the file, e.g. a missing required key).
	for p := field; line == 0 && p != ""; {
		p = parent(p)
		line = v.c.Line(p)
	}
	v.errs = append(v.errs, Error{File: v.c.Source, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func parent(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

// Validate checks the whole config and returns Errors listing every problem,
// or nil.
func (c *Config) Validate() error {
	v := &validator{c: c}
	v.listen()
	v.tls()
	v.admin()
	v.store()
	v.gateway()
	v.gatewayEdge()
	v.extProc()
	v.userLists()
	v.endpoints()
	v.statNames()
	v.pathPrefixes()
	if len(v.errs) == 0 {
		return nil
	}
	sortErrors(v.errs)
	return v.errs
}

func (v *validator) listen() {
	check := func(field, addr string, unixOK bool) {
		if unixOK && strings.HasPrefix(addr, "unix://") {
			if strings.TrimPrefix(addr, "unix://") == "" {
				v.add(field, "unix socket address %q has no path", addr)
			}
			return
		}
		if err := checkHostPort(addr, true); err != nil {
			v.add(field, "%v", err)
		}
	}
	check("listen.xds", v.c.Listen.XDS, false)
	check("listen.extproc", v.c.Listen.ExtProc, true)
	check("listen.admin", v.c.Listen.Admin, false)
	seen := map[string]string{}
	for _, a := range []struct{ field, addr string }{
		{"listen.xds", v.c.Listen.XDS}, {"listen.extproc", v.c.Listen.ExtProc}, {"listen.admin", v.c.Listen.Admin},
	} {
		if prev, dup := seen[a.addr]; dup && !strings.HasSuffix(a.addr, ":0") {
			v.add(a.field, "address %s is already used by %s", a.addr, prev)
		}
		seen[a.addr] = a.field
	}
}

func checkHostPort(addr string, allowZero bool) error {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if host != "" && !validHost(host) {
		return fmt.Errorf("%q: host %q is neither an IP address nor a DNS name", addr, host)
	}
	port, err := strconv.Atoi(portStr)
	min := 1
	if allowZero {
		min = 0
	}
	if err != nil || port < min || port > 65535 {
		return fmt.Errorf("%q: port must be %d-65535", addr, min)
	}
	return nil
}

func (v *validator) fileExists(field, path string) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		v.add(field, "cannot read %q: %v", path, err)
	}
}

func (v *validator) tls() {
	t := &v.c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add("tls", "cert_file and key_file must be set together")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		v.add("tls.client_ca_file", "client certificates need server TLS: set cert_file and key_file")
	}
	if cert, ok := v.readFile("tls.cert_file", t.CertFile); ok {
		if key, ok := v.readFile("tls.key_file", t.KeyFile); ok {
			v.keyPair("tls", cert, key)
		}
	}
	if ca, ok := v.readFile("tls.client_ca_file", t.ClientCAFile); ok {
		v.certPool("tls.client_ca_file", t.ClientCAFile, ca)
	}
	v.envoyTLS()
}

// envoyTLS checks tls.envoy — what Envoy's ext_proc cluster verifies and
// presents — and loads its files, whose contents go to Envoy inline.
func (v *validator) envoyTLS() {
	t := &v.c.TLS
	e := &t.Envoy
	e.CAPEM, e.CertPEM, e.KeyPEM = "", "", ""
	if !t.Enabled() {
		if e.CAFile != "" || e.CertFile != "" || e.KeyFile != "" || e.ServerName != "" {
			v.add("tls.envoy", "needs tls.cert_file and tls.key_file: without them modelsplit serves plaintext")
		}
		return
	}
	if e.CAFile == "" {
		v.add("tls.envoy.ca_file", "required with tls.cert_file: the CA bundle Envoy's ext_proc cluster verifies modelsplit's certificate with (Envoy cannot reach ext_proc over TLS without it)")
	}
	switch {
	case (e.CertFile == "") != (e.KeyFile == ""):
		v.add("tls.envoy", "cert_file and key_file must be set together")
	case e.CertFile == "" && t.ClientCAFile != "":
		v.add("tls.envoy.cert_file", "required with tls.client_ca_file: modelsplit asks every client for a certificate, so Envoy's ext_proc cluster needs one (cert_file and key_file)")
	case e.CertFile != "" && t.ClientCAFile == "":
		v.add("tls.envoy.cert_file", "modelsplit asks for no client certificate without tls.client_ca_file; set client_ca_file for mTLS or remove tls.envoy.cert_file and key_file")
	}
	if e.ServerName != "" {
		if net.ParseIP(e.ServerName) == nil && !validHost(e.ServerName) {
			v.add("tls.envoy.server_name", "%q is neither a DNS name nor an IP address", e.ServerName)
		}
	} else if host, ok := v.c.ExtProcHost(); !ok {
		v.add("tls.envoy.server_name", "required when Envoy dials ext_proc over a unix socket (%s): the name modelsplit's certificate holds", v.c.ExtProcTarget())
	} else if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		v.add("tls.envoy.server_name", "required when Envoy dials ext_proc at %s: no certificate holds an unspecified address (or set gateway.extproc_address)", host)
	}
	if ca, ok := v.readFile("tls.envoy.ca_file", e.CAFile); ok && v.certPool("tls.envoy.ca_file", e.CAFile, ca) {
		e.CAPEM = string(ca)
	}
	if cert, ok := v.readFile("tls.envoy.cert_file", e.CertFile); ok {
		if key, ok := v.readFile("tls.envoy.key_file", e.KeyFile); ok && v.keyPair("tls.envoy", cert, key) {
			e.CertPEM, e.KeyPEM = string(cert), string(key)
		}
	}
}

// readFile reads a file named by field; an empty path is not an error
// (ok is false).
func (v *validator) readFile(field, path string) ([]byte, bool) {
	if path == "" {
		return nil, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		v.add(field, "cannot read %q: %v", path, err)
		return nil, false
	}
	return b, true
}

// keyPair checks that prefix.cert_file and prefix.key_file hold a PEM
// certificate and its private key.
func (v *validator) keyPair(prefix string, cert, key []byte) bool {
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		field := prefix + ".key_file"
		if !bytes.Contains(cert, []byte("-----BEGIN CERTIFICATE-----")) {
			field = prefix + ".cert_file"
		}
		v.add(field, "%s.cert_file and %s.key_file are not a PEM certificate and its private key: %v", prefix, prefix, err)
		return false
	}
	return true
}

// certPool checks that a CA file holds at least one PEM certificate.
func (v *validator) certPool(field, path string, pem []byte) bool {
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		v.add(field, "no PEM certificate in %q", path)
		return false
	}
	return true
}

func (v *validator) admin() {
	v.fileExists("admin.token_file", v.c.Admin.TokenFile)
	for i, h := range v.c.Admin.AllowedHosts {
		f := fmt.Sprintf("admin.allowed_hosts[%d]", i)
		name := strings.TrimPrefix(h, "*.")
		switch {
		case strings.TrimSpace(h) == "":
			v.add(f, "must not be empty")
		case net.ParseIP(h) != nil: // IP literals are always allowed; harmless
		case strings.ContainsAny(name, "*/:@ ") || !validHost(name):
			v.add(f, "%q is not a host name or *.domain (no scheme, port or path)", h)
		}
	}
}

func (v *validator) store() {
	s := v.c.Store
	isTrue := func(s string) bool { b, err := strconv.ParseBool(s); return err == nil && b }
	if s.Redis != "" {
		// Messages never repeat the URL: it may hold a password. The forms
		// (single, Sentinel, Cluster) are described in cohort/redisurl.go.
		u, err := url.Parse(s.Redis)
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		q := url.Values{}
		if err == nil {
			q = u.Query()
		}
		_, clusterErr := strconv.ParseBool(q.Get("cluster"))
		switch {
		case err != nil:
			v.add("store.redis", "invalid URL: %v", err)
		case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
			v.add("store.redis", "URL scheme %q is not redis://, rediss:// or unix://", u.Scheme)
		case u.Scheme != "unix" && u.Host == "":
			v.add("store.redis", "URL names no host (want redis://host:port)")
		case u.Scheme == "unix" && u.Path == "":
			v.add("store.redis", "unix:// URL names no socket path (want unix:///path/redis.sock)")
		case q.Get("master_name") != "" && q.Has("cluster"):
			v.add("store.redis", "cluster and master_name (Sentinel) exclude each other")
		case q.Has("cluster") && clusterErr != nil:
			v.add("store.redis", "cluster=%q: want cluster=true", q.Get("cluster"))
		case q.Get("master_name") != "" && (isTrue(q.Get("route_by_latency")) || isTrue(q.Get("route_randomly"))):
			v.add("store.redis", "route_by_latency and route_randomly are not supported with Sentinel (master_name); assignments go to the master")
		case q.Get("master_name") != "" && isTrue(q.Get("replica_only")):
			v.add("store.redis", "replica_only cannot work: assignments are written, and replicas are read-only")
		}
		for _, name := range []string{"pool_size", "min_idle_conns", "max_idle_conns", "max_active_conns", "pipeline_pool_size"} {
			if n, err := strconv.ParseInt(q.Get(name), 10, 64); err == nil && (n > math.MaxInt32 || n < math.MinInt32) {
				v.add("store.redis", "%s=%d is too large", name, n)
			}
		}
	}
	if s.CAFile != "" && !strings.HasPrefix(s.Redis, "rediss://") {
		v.add("store.ca_file", "a CA file needs a rediss:// (TLS) URL")
	}
	v.fileExists("store.ca_file", s.CAFile)
	if s.Timeout < 0 {
		v.add("store.timeout", "must not be negative")
	}
	if s.CacheSize < 0 {
		v.add("store.cache_size", "must not be negative")
	}
	if strings.ContainsAny(s.KeyPrefix, " \t\r\n") {
		v.add("store.key_prefix", "must not contain white space")
	}
}

func (v *validator) gateway() {
	g := v.c.Gateway
	if g.Port < 1 || g.Port > 65535 {
		v.add("gateway.port", "must be 1-65535, got %d", g.Port)
	}
	if net.ParseIP(g.Address) == nil {
		v.add("gateway.address", "%q is not an IP address", g.Address)
	}
	if g.ExtProcAddress != "" {
		if err := checkHostPort(g.ExtProcAddress, false); err != nil {
			v.add("gateway.extproc_address", "%v", err)
		}
	} else if strings.HasPrefix(v.c.Listen.ExtProc, "unix://") {
		// Envoy can dial a unix socket, but then it must be told the path;
		// the socket address is used as-is.
	} else if h, p, err := net.SplitHostPort(v.c.Listen.ExtProc); err == nil && (h == "" || p == "0") {
		v.add("gateway.extproc_address", "listen.extproc %q is not dialable by Envoy; set gateway.extproc_address", v.c.Listen.ExtProc)
	}
	if g.ExtProcTimeout <= 0 || g.ExtProcTimeout.D() > time.Hour {
		v.add("gateway.extproc_timeout", "must be between 1ms and 1h")
	}
}

func (v *validator) userLists() {
	for name, users := range v.c.UserLists {
		f := "user_lists." + name
		if !nameRE.MatchString(name) {
			v.add(f, "list name %q must be lower-case letters, digits, '.', '_' or '-'", name)
		}
		if len(users) == 0 {
			v.add(f, "list is empty")
		}
	}
}

func (v *validator) endpoints() {
	if len(v.c.Endpoints) == 0 {
		v.add("endpoints", "at least one endpoint is required")
		return
	}
	names := map[string]int{}
	prefixes := map[string]int{}
	for i := range v.c.Endpoints {
		e := &v.c.Endpoints[i]
		f := fmt.Sprintf("endpoints[%d]", i)
		switch {
		case e.Name == "":
			v.add(f+".name", "required")
		case !nameRE.MatchString(e.Name):
			v.add(f+".name", "%q must be 1-64 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit", e.Name)
		default:
			if j, dup := names[e.Name]; dup {
				v.add(f+".name", "duplicate endpoint name %q (also endpoints[%d])", e.Name, j)
			}
			names[e.Name] = i
		}
		v.endpoint(f, e, prefixes, i)
	}
}

func (v *validator) endpoint(f string, e *Endpoint, prefixes map[string]int, i int) {
	p := e.Match.PathPrefix
	switch {
	case p == "":
		v.add(f+".match.path_prefix", "required")
	case !strings.HasPrefix(p, "/"):
		v.add(f+".match.path_prefix", "%q must start with '/'", p)
	default:
		if j, dup := prefixes[p]; dup {
			v.add(f+".match.path_prefix", "prefix %q is already used by endpoints[%d]", p, j)
		}
		prefixes[p] = i
	}
	v.protocol(f+".protocol", e.Protocol)
	if e.Protocol == ProtocolGRPC && len(e.Services) == 0 {
		v.add(f+".services", "a grpc endpoint needs its gRPC service name(s), e.g. [inference.GRPCInferenceService], or a /package.Service/ path prefix")
	}
	if e.RouteLookup && e.Protocol != ProtocolGRPC {
		v.add(f+".route_lookup", "needs protocol: grpc (the Route Lookup Service steers gRPC clients)")
	}
	for j, s := range e.Services {
		if !serviceRE.MatchString(s) {
			v.add(fmt.Sprintf("%s.services[%d]", f, j), "%q is not a fully qualified gRPC service name (package.Service)", s)
		}
	}
	v.sticky(f+".sticky", &e.Sticky)
	v.timeouts(f, e)

	members := map[string]string{}
	if len(e.Variants) == 0 {
		v.add(f+".variants", "at least one variant is required")
	}
	total := 0
	for j := range e.Variants {
		vr := &e.Variants[j]
		vf := fmt.Sprintf("%s.variants[%d]", f, j)
		v.memberName(vf, vr.Name, members)
		switch {
		case vr.Weight < 0:
			v.add(vf+".weight", "must not be negative, got %d", vr.Weight)
		case vr.Weight > MaxWeight:
			v.add(vf+".weight", "must be at most %d, got %d", MaxWeight, vr.Weight)
		default:
			total += vr.Weight
		}
		v.backends(vf+".backends", vr.Backends)
		if vr.Protocol != "" {
			v.protocol(vf+".protocol", vr.Protocol)
		}
	}
	if len(e.Variants) > 0 && total == 0 {
		v.add(f+".variants", "weights sum to zero: at least one variant needs a positive weight")
	}
	for j := range e.Shadows {
		s := &e.Shadows[j]
		sf := fmt.Sprintf("%s.shadows[%d]", f, j)
		v.memberName(sf, s.Name, members)
		if s.Percent <= 0 || s.Percent > 100 || math.IsNaN(s.Percent) {
			v.add(sf+".percent", "must be greater than 0 and at most 100, got %v", s.Percent)
		}
		v.backends(sf+".backends", s.Backends)
		if s.Protocol != "" {
			v.protocol(sf+".protocol", s.Protocol)
		}
		if s.Compare != nil {
			v.compare(sf+".compare", e, s)
		}
	}
	for j := range e.Rules {
		v.rule(fmt.Sprintf("%s.rules[%d]", f, j), e, &e.Rules[j])
	}
	if !e.Decided() {
		v.undecided(f, e)
	}
	v.resilience(f, e)
	if e.Rollout != nil {
		v.rollout(f+".rollout", e, e.Rollout)
	}
	if e.Bandit != nil {
		v.bandit(f+".bandit", e, e.Bandit)
	}
}

// timeouts checks an endpoint's timeout and idle_timeout: each between
// 1ms (Envoy counts whole milliseconds, and 0 means no timeout at all)
// and MaxTimeout, and the idle bound no longer than the whole.
func (v *validator) timeouts(f string, e *Endpoint) {
	check := func(field string, d Duration) bool {
		switch {
		case d < 0:
			v.add(field, "must not be negative, got %v", d)
		case d < Duration(time.Millisecond):
			v.add(field, "must be at least 1ms, got %v (Envoy counts whole milliseconds and reads 0 as no timeout at all)", d)
		case d > MaxTimeout:
			v.add(field, "must be at most %v, got %v", MaxTimeout.D(), d)
		default:
			return true
		}
		return false
	}
	okTimeout := check(f+".timeout", e.Timeout)
	okIdle := check(f+".idle_timeout", e.IdleTimeout)
	if okTimeout && okIdle && e.IdleTimeout > e.Timeout {
		v.add(f+".idle_timeout", "%v is longer than timeout %v: the request would end first, so it could never fire (make it at most %v)", e.IdleTimeout, e.Timeout, e.Timeout)
	}
	if e.TokensHeader == "" {
		v.add(f+".tokens_header", "must not be empty (omit it for %s)", DefaultTokensHeader)
	} else if !headerRE.MatchString(e.TokensHeader) {
		v.add(f+".tokens_header", "%q is not a valid header name", e.TokensHeader)
	}
}

// undecided refuses what only the decision can do on an endpoint with
// decide: false (nothing would happen, silently).
func (v *validator) undecided(f string, e *Endpoint) {
	const why = "needs the decision (remove decide: false)"
	if len(e.Rules) > 0 {
		v.add(f+".rules", why)
	}
	if e.AllowTarget {
		v.add(f+".allow_target", why)
	}
	if e.RouteLookup {
		v.add(f+".route_lookup", why)
	}
	if e.Sticky.MintCookie {
		v.add(f+".sticky.mint_cookie", why)
	}
	for j := range e.Shadows {
		if s := &e.Shadows[j]; !s.PerRequest && s.Compare == nil {
			v.add(fmt.Sprintf("%s.shadows[%d]", f, j), "a user-sampled shadow %s (or set per_request: true)", why)
		}
	}
}

func (v *validator) compare(f string, e *Endpoint, s *Shadow) {
	c := s.Compare
	if !e.Observed() {
		v.add(f, "needs the endpoint observed: compare mode reads answers through the observe filter (remove observe: false)")
	}
	grpc := e.ShadowProtocol(s) == ProtocolGRPC
	check := func(field, path string) {
		var err error
		if grpc {
			_, err = ParseProtoPath(path)
		} else {
			_, err = ParseJSONPath(path)
		}
		if err != nil {
			v.add(field, "%v", err)
		}
	}
	if c.Field != "" {
		check(f+".field", c.Field)
	}
	for i, r := range c.Redact {
		check(fmt.Sprintf("%s.redact[%d]", f, i), r)
	}
	if c.Tolerance < 0 || math.IsNaN(c.Tolerance) || math.IsInf(c.Tolerance, 0) {
		v.add(f+".tolerance", "must be a finite number >= 0, got %v", c.Tolerance)
	}
	if c.Timeout < 0 {
		v.add(f+".timeout", "must not be negative, got %v", c.Timeout)
	}
	if c.MaxConcurrency < 0 {
		v.add(f+".max_concurrency", "must not be negative, got %d", c.MaxConcurrency)
	}
	if c.MaxBytesInFlight < 0 {
		v.add(f+".max_bytes_in_flight", "must not be negative, got %d", c.MaxBytesInFlight)
	}
	if c.Samples < 0 || c.Samples > 10_000 {
		v.add(f+".samples", "must be between 0 and 10000, got %d", c.Samples)
	}
}

func (v *validator) memberName(f, name string, seen map[string]string) {
	switch {
	case name == "":
		v.add(f+".name", "required")
	case !nameRE.MatchString(name):
		v.add(f+".name", "%q must be 1-64 lower-case letters, digits, '.', '_' or '-'", name)
	default:
		if prev, dup := seen[name]; dup {
			v.add(f+".name", "duplicate name %q (also %s): variants and shadows of an endpoint share one namespace", name, prev)
		}
		seen[name] = f
	}
}

func (v *validator) protocol(f, p string) {
	switch p {
	case ProtocolHTTP1, ProtocolHTTP2, ProtocolGRPC:
	default:
		v.add(f, "unknown protocol %q (use http1, http2 or grpc)", p)
	}
}

func (v *validator) backends(f string, bs []Backend) {
	if len(bs) == 0 {
		v.add(f, "at least one backend (host:port) is required")
	}
	seen := map[Backend]bool{}
	for k, b := range bs {
		if seen[b] {
			v.add(fmt.Sprintf("%s[%d]", f, k), "duplicate backend %s", b)
		}
		seen[b] = true
	}
}

func (v *validator) sticky(f string, s *Sticky) {
	if s.Header != "" && s.Cookie != "" {
		v.add(f, "set header or cookie, not both")
	}
	if s.Header != "" && !headerRE.MatchString(s.Header) {
		v.add(f+".header", "%q is not a valid header name", s.Header)
	}
	if strings.HasPrefix(s.Header, "x-modelsplit-") {
		v.add(f+".header", "%q is reserved for modelsplit", s.Header)
	}
	if s.Cookie != "" && !cookieRE.MatchString(s.Cookie) {
		v.add(f+".cookie", "%q is not a valid cookie name", s.Cookie)
	}
	if s.MintCookie && s.Cookie == "" {
		v.add(f+".mint_cookie", "needs sticky.cookie: the minted id is stored in that cookie")
	}
	if s.TTL < 0 {
		v.add(f+".ttl", "must not be negative")
	}
}

func (v *validator) rule(f string, e *Endpoint, r *Rule) {
	conds := 0
	for _, set := range []bool{r.Equals != "", len(r.OneOf) > 0, r.Prefix != "", r.UserList != ""} {
		if set {
			conds++
		}
	}
	if conds != 1 {
		v.add(f, "a rule needs exactly one of equals, one_of, prefix or user_list (found %d)", conds)
	}
	switch {
	case r.UserList != "":
		if r.Header != "" {
			v.add(f+".header", "a user_list rule matches the sticky key; drop header")
		}
		if e.Sticky.Header == "" && e.Sticky.Cookie == "" {
			v.add(f+".user_list", "needs a sticky key (sticky.header or sticky.cookie) to look users up")
		}
		if _, ok := v.c.UserLists[r.UserList]; !ok && v.c.Store.Redis == "" {
			v.add(f+".user_list", "unknown user list %q: define it under user_lists (or keep it in Redis with store.redis)", r.UserList)
		}
	case conds > 0:
		if r.Header == "" {
			v.add(f+".header", "required for equals, one_of and prefix rules")
		} else if !headerRE.MatchString(r.Header) {
			v.add(f+".header", "%q is not a valid header name", r.Header)
		} else if strings.HasPrefix(r.Header, "x-modelsplit-") {
			v.add(f+".header", "%q is set by modelsplit and cannot be matched", r.Header)
		}
	}
	if r.Variant == "" {
		v.add(f+".variant", "required")
	} else if _, ok := e.Variant(r.Variant); !ok {
		v.add(f+".variant", "unknown variant %q in endpoint %q", r.Variant, e.Name)
	}
}
