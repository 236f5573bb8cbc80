package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// HealthCheck configures Envoy's active health checks of an endpoint's
// variant backends. HTTP (http1, http2) backends are asked GET Path and
// are healthy on a 2xx; gRPC backends are asked grpc.health.v1 Check for
// GRPCService and are healthy when it says SERVING.
type HealthCheck struct {
	// Path is the HTTP path probed on http1/http2 backends, e.g. /healthz.
	Path string `yaml:"path"`
	// GRPCService is the service name sent in the gRPC health check of
	// grpc backends; empty asks about the server as a whole.
	GRPCService string `yaml:"grpc_service"`
	// Interval between two probes of one backend (also when the variant
	// gets no traffic, so a failover target's health is always current).
	Interval Duration `yaml:"interval"`
	// Timeout of one probe; at most Interval.
	Timeout Duration `yaml:"timeout"`
	// UnhealthyThreshold failed probes in a row mark a backend unhealthy.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
	// HealthyThreshold passed probes in a row mark it healthy again.
	HealthyThreshold int `yaml:"healthy_threshold"`
}

// OutlierDetection configures Envoy's passive ejection of backends that
// keep failing real requests. Connection failures count as both 5xx and
// gateway failures.
type OutlierDetection struct {
	// Consecutive5xx answers (any 5xx, or no answer) in a row eject a backend.
	Consecutive5xx int `yaml:"consecutive_5xx"`
	// ConsecutiveGatewayFailure 502/503/504s or connection failures in a
	// row eject a backend.
	ConsecutiveGatewayFailure int `yaml:"consecutive_gateway_failure"`
	// Interval between Envoy's ejection sweeps (when ejected backends
	// return).
	Interval Duration `yaml:"interval"`
	// BaseEjectionTime is how long a first ejection lasts; each further
	// ejection of the same backend lasts one more of it (Envoy caps it at
	// 300s). A passed active health check returns the backend at once.
	BaseEjectionTime Duration `yaml:"base_ejection_time"`
	// MaxEjectionPercent caps the share of a variant cluster's backends
	// (its own, plus its failover targets') ejected at once; 0 never
	// ejects. Default: 100 when the variant has failover targets (its users
	// move to them), else 50, which never ejects a variant's only backend.
	MaxEjectionPercent *int `yaml:"max_ejection_percent"`
}

// Retries is the retry policy of an endpoint's routes.
type Retries struct {
	// Attempts is how many times a failed try is retried (0-5); 0 turns
	// retries off. Default 1.
	Attempts *int `yaml:"attempts"`
	// On lists the failures retried (Envoy retry_on conditions). Default:
	// the ones a backend never saw the request for.
	On []string `yaml:"on"`
}

// Resilience defaults.
const (
	DefaultHealthInterval       = Duration(5 * time.Second)
	DefaultHealthTimeout        = Duration(time.Second)
	DefaultUnhealthyThreshold   = 2
	DefaultHealthyThreshold     = 2
	DefaultConsecutive5xx       = 5
	DefaultConsecutiveGateway   = 3
	DefaultOutlierInterval      = Duration(10 * time.Second)
	DefaultBaseEjectionTime     = Duration(30 * time.Second)
	DefaultRetryAttempts        = 1
	MaxRetryAttempts            = 5
	maxHealthThreshold          = 100
	maxConsecutiveFailures      = 1000
	ejectionPercentWithFailover = 100
	ejectionPercentAlone        = 50
)

// Retry conditions (Envoy's retry_on names).
const (
	// RetryConnectFailure: the connection to the backend failed.
	RetryConnectFailure = "connect-failure"
	// RetryRefusedStream: an HTTP/2 backend refused the stream
	// (REFUSED_STREAM: it did not process it).
	RetryRefusedStream = "refused-stream"
	// RetryResetBeforeRequest: the connection was reset before the request
	// was sent (e.g. a pooled keep-alive connection the backend had just
	// closed).
	RetryResetBeforeRequest = "reset-before-request"
)

// SafeRetryOn are the failures retried by default: in each the backend
// never received the request, so a retry cannot run it twice.
var SafeRetryOn = []string{RetryConnectFailure, RetryRefusedStream, RetryResetBeforeRequest}

// replayRetryOn are conditions a user may add that fire after a backend
// may have taken the request (and started working on it).
var replayRetryOn = []string{"reset", "5xx", "gateway-error", "unavailable"}

// RetryAttempts is the number of retries in force.
func (e *Endpoint) RetryAttempts() int {
	if e.Retries.Attempts == nil {
		return DefaultRetryAttempts
	}
	return *e.Retries.Attempts
}

// FailoverEnabled reports whether the endpoint fails over (default on).
func (e *Endpoint) FailoverEnabled() bool { return e.Failover == nil || *e.Failover }

// FailoverTargets are the variants that serve v's users while none of
// v's backends is healthy, in order of preference: the endpoint's other
// variants that speak v's protocol, in config order. A weight-0 variant is
// a target too (its backends still answer until they are taken away).
func (e *Endpoint) FailoverTargets(v *Variant) []*Variant {
	if !e.FailoverEnabled() {
		return nil
	}
	var out []*Variant
	for i := range e.Variants {
		o := &e.Variants[i]
		if o.Name != v.Name && e.VariantProtocol(o) == e.VariantProtocol(v) {
			out = append(out, o)
		}
	}
	return out
}

// EjectionPercent is the max_ejection_percent in force for a variant's
// cluster (nil: a shadow's, which has no failover).
func (e *Endpoint) EjectionPercent(v *Variant) int {
	if p := e.OutlierDetection.MaxEjectionPercent; p != nil {
		return *p
	}
	if v != nil && len(e.FailoverTargets(v)) > 0 {
		return ejectionPercentWithFailover
	}
	return ejectionPercentAlone
}

func (e *Endpoint) applyResilienceDefaults() {
	if h := e.HealthCheck; h != nil {
		if h.Interval == 0 {
			h.Interval = DefaultHealthInterval
		}
		if h.Timeout == 0 {
			h.Timeout = min(DefaultHealthTimeout, h.Interval)
		}
		if h.UnhealthyThreshold == 0 {
			h.UnhealthyThreshold = DefaultUnhealthyThreshold
		}
		if h.HealthyThreshold == 0 {
			h.HealthyThreshold = DefaultHealthyThreshold
		}
	}
	o := &e.OutlierDetection
	if o.Consecutive5xx == 0 {
		o.Consecutive5xx = DefaultConsecutive5xx
	}
	if o.ConsecutiveGatewayFailure == 0 {
		o.ConsecutiveGatewayFailure = DefaultConsecutiveGateway
	}
	if o.Interval == 0 {
		o.Interval = DefaultOutlierInterval
	}
	if o.BaseEjectionTime == 0 {
		o.BaseEjectionTime = DefaultBaseEjectionTime
	}
	if len(e.Retries.On) == 0 {
		e.Retries.On = append([]string(nil), SafeRetryOn...)
	}
}

func (e *Endpoint) cloneResilience() {
	if e.HealthCheck != nil {
		h := *e.HealthCheck
		e.HealthCheck = &h
	}
	if p := e.OutlierDetection.MaxEjectionPercent; p != nil {
		n := *p
		e.OutlierDetection.MaxEjectionPercent = &n
	}
	if a := e.Retries.Attempts; a != nil {
		n := *a
		e.Retries.Attempts = &n
	}
	e.Retries.On = append([]string(nil), e.Retries.On...)
	if e.Failover != nil {
		b := *e.Failover
		e.Failover = &b
	}
}

func (v *validator) resilience(f string, e *Endpoint) {
	if h := e.HealthCheck; h != nil {
		v.healthCheck(f+".health_check", e, h)
	}
	o := e.OutlierDetection
	of := f + ".outlier_detection"
	if o.Consecutive5xx < 1 || o.Consecutive5xx > maxConsecutiveFailures {
		v.add(of+".consecutive_5xx", "must be 1-%d, got %d", maxConsecutiveFailures, o.Consecutive5xx)
	}
	if o.ConsecutiveGatewayFailure < 1 || o.ConsecutiveGatewayFailure > maxConsecutiveFailures {
		v.add(of+".consecutive_gateway_failure", "must be 1-%d, got %d", maxConsecutiveFailures, o.ConsecutiveGatewayFailure)
	}
	if o.Interval < Duration(time.Millisecond) || o.Interval.D() > time.Hour {
		v.add(of+".interval", "must be between 1ms and 1h, got %v", o.Interval)
	}
	if o.BaseEjectionTime < Duration(time.Millisecond) || o.BaseEjectionTime.D() > time.Hour {
		v.add(of+".base_ejection_time", "must be between 1ms and 1h, got %v", o.BaseEjectionTime)
	}
	if p := o.MaxEjectionPercent; p != nil && (*p < 0 || *p > 100) {
		v.add(of+".max_ejection_percent", "must be 0-100, got %d", *p)
	}

	rf := f + ".retries"
	if n := e.RetryAttempts(); n < 0 || n > MaxRetryAttempts {
		v.add(rf+".attempts", "must be 0-%d, got %d", MaxRetryAttempts, n)
	}
	seen := map[string]bool{}
	for i, c := range e.Retries.On {
		cf := fmt.Sprintf("%s.on[%d]", rf, i)
		switch {
		case seen[c]:
			v.add(cf, "%q is listed twice", c)
		case slices.Contains(SafeRetryOn, c):
		case !slices.Contains(replayRetryOn, c):
			v.add(cf, "unknown retry condition %q (use %s)", c, strings.Join(append(append([]string(nil), SafeRetryOn...), replayRetryOn...), ", "))
		case c == "unavailable" && !e.hasGRPCVariant():
			v.add(cf, "%q is a gRPC status: the endpoint has no grpc variant", c)
		case e.Streaming && e.RetryAttempts() > 0:
			// Envoy never retries once it has sent a response byte, but a
			// streaming call's first byte can come long after the backend
			// took the request (time to first token): these conditions can
			// run that work twice.
			v.add(cf, "a streaming endpoint retries only failures before a backend took the request (%s); %q can replay a request a backend already started", strings.Join(SafeRetryOn, ", "), c)
		}
		seen[c] = true
	}
}

func (v *validator) healthCheck(f string, e *Endpoint, h *HealthCheck) {
	httpVariants, grpcVariants := false, false
	for i := range e.Variants {
		if e.VariantProtocol(&e.Variants[i]) == ProtocolGRPC {
			grpcVariants = true
		} else {
			httpVariants = true
		}
	}
	switch {
	case h.Path == "" && httpVariants:
		v.add(f+".path", "required: the HTTP path probed on the http1/http2 variants' backends, e.g. /healthz")
	case h.Path != "" && !httpVariants:
		v.add(f+".path", "grpc variants are checked with the gRPC health service (grpc_service); path is for http1/http2 variants")
	case h.Path != "" && (!strings.HasPrefix(h.Path, "/") || strings.ContainsAny(h.Path, " \t\r\n?#")):
		v.add(f+".path", "%q must start with '/' and hold no white space, query or fragment", h.Path)
	}
	if h.GRPCService != "" {
		if !grpcVariants {
			v.add(f+".grpc_service", "the endpoint has no grpc variant to ask")
		} else if !serviceRE.MatchString(h.GRPCService) {
			v.add(f+".grpc_service", "%q is not a fully qualified gRPC service name (package.Service)", h.GRPCService)
		}
	}
	if h.Interval < Duration(10*time.Millisecond) || h.Interval.D() > time.Hour {
		v.add(f+".interval", "must be between 10ms and 1h, got %v", h.Interval)
	}
	switch {
	case h.Timeout <= 0:
		v.add(f+".timeout", "must be positive, got %v", h.Timeout)
	case h.Timeout > h.Interval:
		v.add(f+".timeout", "%v is longer than the interval %v", h.Timeout, h.Interval)
	}
	if h.UnhealthyThreshold < 1 || h.UnhealthyThreshold > maxHealthThreshold {
		v.add(f+".unhealthy_threshold", "must be 1-%d, got %d", maxHealthThreshold, h.UnhealthyThreshold)
	}
	if h.HealthyThreshold < 1 || h.HealthyThreshold > maxHealthThreshold {
		v.add(f+".healthy_threshold", "must be 1-%d, got %d", maxHealthThreshold, h.HealthyThreshold)
	}
}

func (e *Endpoint) hasGRPCVariant() bool {
	for i := range e.Variants {
		if e.VariantProtocol(&e.Variants[i]) == ProtocolGRPC {
			return true
		}
	}
	return false
}
