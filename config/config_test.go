package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/config"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := config.Load("example.yaml")
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	e, ok := c.Endpoint("face-recognition")
	if !ok {
		t.Fatal("endpoint face-recognition missing")
	}
	if got := e.TotalWeight(); got != 100 {
		t.Errorf("total weight = %d, want 100", got)
	}
	if e.Sticky.TTL.D() != 720*time.Hour {
		t.Errorf("ttl = %v, want 720h", e.Sticky.TTL)
	}
	if c.Listen.XDS != config.DefaultXDSAddr || c.Gateway.Port != 10000 {
		t.Errorf("listen/gateway = %+v %+v", c.Listen, c.Gateway)
	}
}

func TestDefaults(t *testing.T) {
	c, err := config.Parse("min.yaml", []byte(`
endpoints:
  - name: m
    match: {path_prefix: /m}
    variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string][2]string{
		"listen.xds":      {c.Listen.XDS, config.DefaultXDSAddr},
		"listen.extproc":  {c.Listen.ExtProc, config.DefaultExtProcAddr},
		"listen.admin":    {c.Listen.Admin, config.DefaultAdminAddr},
		"store.prefix":    {c.Store.KeyPrefix, config.DefaultKeyPrefix},
		"protocol":        {c.Endpoints[0].Protocol, config.ProtocolHTTP1},
		"gateway.address": {c.Gateway.Address, "0.0.0.0"},
	}
	for name, v := range checks {
		if v[0] != v[1] {
			t.Errorf("%s = %q, want %q", name, v[0], v[1])
		}
	}
	if c.Gateway.ExtProcTimeout != config.DefaultExtProcTimeout {
		t.Errorf("extproc_timeout = %v", c.Gateway.ExtProcTimeout)
	}
	e := c.Endpoints[0]
	if e.Timeout != config.DefaultTimeout || e.IdleTimeout != config.DefaultIdleTimeout || e.TokensHeader != config.DefaultTokensHeader {
		t.Errorf("timeout %v idle_timeout %v tokens_header %q, want %v %v %q", e.Timeout, e.IdleTimeout, e.TokensHeader,
			config.DefaultTimeout, config.DefaultIdleTimeout, config.DefaultTokensHeader)
	}
}

// The idle default never exceeds the endpoint's timeout; written values
// are kept; a config built in code gets the defaults from ApplyDefaults.
func TestTimeoutDefaults(t *testing.T) {
	const variant = "    variants: [{name: a, weight: 1, backends: [\"10.0.0.1:80\"]}]\n"
	for _, tc := range []struct {
		extra         string
		timeout, idle time.Duration
		tokens        string
	}{
		{"", 300 * time.Second, 60 * time.Second, "x-modelsplit-tokens"},
		{"    timeout: 2s\n", 2 * time.Second, 2 * time.Second, "x-modelsplit-tokens"},
		{"    timeout: 10m\n", 10 * time.Minute, 60 * time.Second, "x-modelsplit-tokens"},
		{"    timeout: 10m\n    idle_timeout: 10m\n", 10 * time.Minute, 10 * time.Minute, "x-modelsplit-tokens"},
		{"    idle_timeout: 5s\n    tokens_header: X-Usage-Tokens\n", 300 * time.Second, 5 * time.Second, "x-usage-tokens"},
	} {
		c, err := config.Parse("t.yaml", []byte("endpoints:\n  - name: m\n    match: {path_prefix: /m}\n"+tc.extra+variant))
		if err != nil {
			t.Fatalf("%q: %v", tc.extra, err)
		}
		e := c.Endpoints[0]
		if e.Timeout.D() != tc.timeout || e.IdleTimeout.D() != tc.idle || e.TokensHeader != tc.tokens {
			t.Errorf("%q: timeout %v idle %v tokens %q, want %v %v %q", tc.extra, e.Timeout, e.IdleTimeout, e.TokensHeader, tc.timeout, tc.idle, tc.tokens)
		}
	}
	c := &config.Config{Endpoints: []config.Endpoint{{Name: "m"}}}
	c.ApplyDefaults()
	if e := c.Endpoints[0]; e.Timeout != config.DefaultTimeout || e.IdleTimeout != config.DefaultIdleTimeout {
		t.Errorf("built in code: timeout %v idle %v", e.Timeout, e.IdleTimeout)
	}
}

func TestGRPCServiceDerivedFromPrefix(t *testing.T) {
	c, err := config.Parse("g.yaml", []byte(`
endpoints:
  - name: triton
    protocol: grpc
    match: {path_prefix: /inference.GRPCInferenceService/}
    variants: [{name: a, weight: 1, backends: ["10.0.0.1:8001"]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Endpoints[0].Services; len(got) != 1 || got[0] != "inference.GRPCInferenceService" {
		t.Errorf("services = %v", got)
	}
}

// Each bad config must produce an error at the given line naming the field.
func TestInvalidConfigs(t *testing.T) {
	const variant = `    variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]` + "\n"
	cases := []struct {
		name, yaml string
		want       []string // "line:field:substring"
	}{
		{"unknown top-level field", "endpoint: []\n", []string{"1:endpoint:unknown field"}},
		{"unknown nested field", "endpoints:\n  - name: m\n    match: {path_prefix: /m, host: x}\n" + variant,
			[]string{"3:endpoints[0].match.host:unknown field"}},
		{"no endpoints", "listen: {xds: 127.0.0.1:1}\n", []string{"0:endpoints:at least one endpoint"}},
		{"duplicate endpoint", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant +
			"  - name: m\n    match: {path_prefix: /n}\n" + variant, []string{"5:endpoints[1].name:duplicate endpoint name"}},
		{"duplicate prefix", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant +
			"  - name: n\n    match: {path_prefix: /m}\n" + variant, []string{"6:endpoints[1].match.path_prefix:already used"}},
		{"negative weight", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    variants:\n      - {name: a, weight: -5, backends: [\"1.1.1.1:80\"]}\n      - {name: b, weight: 5, backends: [\"1.1.1.1:81\"]}\n",
			[]string{"5:endpoints[0].variants[0].weight:must not be negative"}},
		{"all-zero weights", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    variants:\n      - {name: a, weight: 0, backends: [\"1.1.1.1:80\"]}\n",
			[]string{"4:endpoints[0].variants:weights sum to zero"}},
		{"bad backend", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    variants:\n      - {name: a, weight: 1, backends: [\"nohost\"]}\n",
			[]string{"5:endpoints[0].variants[0].backends[0]:not host:port"}},
		{"bad port", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    variants:\n      - {name: a, weight: 1, backends: [\"1.1.1.1:0\"]}\n",
			[]string{"5:endpoints[0].variants[0].backends[0]:port must be"}},
		{"duplicate variant and shadow", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant +
			"    shadows: [{name: a, percent: 5, backends: [\"1.1.1.1:9\"]}]\n", []string{"5:endpoints[0].shadows[0].name:duplicate name"}},
		{"rule unknown variant", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant +
			"    rules: [{header: x-r, equals: eu, variant: zz}]\n", []string{"5:endpoints[0].rules[0].variant:unknown variant"}},
		{"rule two conditions", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant +
			"    rules: [{header: x-r, equals: eu, prefix: e, variant: a}]\n", []string{"5:endpoints[0].rules[0]:exactly one"}},
		{"rule unknown list", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    sticky: {header: x-user}\n" + variant +
			"    rules: [{user_list: beta, variant: a}]\n", []string{"6:endpoints[0].rules[0].user_list:unknown user list"}},
		{"shadow percent", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant +
			"    shadows: [{name: s, percent: 150, backends: [\"1.1.1.1:9\"]}]\n", []string{"5:endpoints[0].shadows[0].percent:at most 100"}},
		{"bad duration", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    sticky: {header: x-u, ttl: forever}\n" + variant,
			[]string{"4:endpoints[0].sticky.ttl:invalid duration"}},
		{"header and cookie", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    sticky: {header: x-u, cookie: uid}\n" + variant,
			[]string{"4:endpoints[0].sticky:not both"}},
		{"reserved sticky header", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    sticky: {header: x-modelsplit-target}\n" + variant,
			[]string{"4:endpoints[0].sticky.header:reserved"}},
		{"grpc without service", "endpoints:\n  - name: m\n    protocol: grpc\n    match: {path_prefix: /m}\n" + variant,
			[]string{"2:endpoints[0].services:grpc endpoint needs"}},
		{"bad protocol", "endpoints:\n  - name: m\n    protocol: http3\n    match: {path_prefix: /m}\n" + variant,
			[]string{"3:endpoints[0].protocol:unknown protocol"}},
		{"bad redis url", "store: {redis: \"http://x\"}\nendpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant,
			[]string{"1:store.redis:scheme"}},
		{"wrong type", "gateway: {port: abc}\nendpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant,
			[]string{"1:gateway.port:cannot unmarshal"}},
		{"syntax error", "endpoints: [\n", []string{"1::did not find expected"}},
		{"not a mapping", "- a\n- b\n", []string{"1::must be a YAML mapping"}},
		{"two documents", "endpoints: []\n---\nendpoints: []\n", []string{"more than one YAML document"}},
		{"duplicate key", "gateway: {port: 1}\ngateway: {port: 2}\n", []string{"already defined"}},
		{"bad admin.allowed_hosts", "admin:\n  allowed_hosts: [ok.example, \"*.ok.example\", \"::1\", \"http://x.example\", \"x.example:80\", \"a.*.example\", \"\"]\nendpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant,
			[]string{"2:admin.allowed_hosts[3]:not a host name", "2:admin.allowed_hosts[4]:not a host name", "2:admin.allowed_hosts[5]:not a host name", "2:admin.allowed_hosts[6]:must not be empty"}},
		{"listen clash", "listen: {xds: \"127.0.0.1:7\", admin: \"127.0.0.1:7\"}\nendpoints:\n  - name: m\n    match: {path_prefix: /m}\n" + variant,
			[]string{"1:listen.admin:already used"}},
		{"decide false with what needs the decision", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    decide: false\n    allow_target: true\n" +
			"    sticky: {cookie: uid, mint_cookie: true}\n" + variant +
			"    shadows: [{name: s, percent: 5, backends: [\"1.1.1.1:9\"]}, {name: p, percent: 5, per_request: true, backends: [\"1.1.1.1:10\"]}]\n" +
			"    rules: [{header: x-r, equals: eu, variant: a}]\n",
			[]string{"9:endpoints[0].rules:needs the decision", "5:endpoints[0].allow_target:needs the decision",
				"6:endpoints[0].sticky.mint_cookie:needs the decision", "8:endpoints[0].shadows[0]:user-sampled"}},
		{"negative timeout", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    timeout: -5s\n" + variant,
			[]string{"4:endpoints[0].timeout:must not be negative, got -5s"}},
		{"zero timeout", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    timeout: 0s\n    idle_timeout: 0s\n" + variant,
			[]string{"4:endpoints[0].timeout:must be at least 1ms, got 0s", "5:endpoints[0].idle_timeout:must be at least 1ms"}},
		{"sub-millisecond timeout", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    idle_timeout: 500us\n" + variant,
			[]string{"4:endpoints[0].idle_timeout:must be at least 1ms, got 500µs"}},
		{"absurd timeout", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    timeout: 48h\n    idle_timeout: 8760h\n" + variant,
			[]string{"4:endpoints[0].timeout:must be at most 24h0m0s, got 48h0m0s", "5:endpoints[0].idle_timeout:must be at most 24h0m0s, got 8760h0m0s"}},
		{"idle longer than timeout", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    timeout: 30s\n    idle_timeout: 2m\n" + variant,
			[]string{"5:endpoints[0].idle_timeout:2m0s is longer than timeout 30s: the request would end first"}},
		{"timeout not a duration", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    timeout: 300\n" + variant,
			[]string{"4:endpoints[0].timeout:invalid duration \"300\""}},
		{"bad tokens header", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    tokens_header: \"x tokens\"\n" + variant,
			[]string{"4:endpoints[0].tokens_header:not a valid header name"}},
		{"empty tokens header", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    tokens_header: \"\"\n" + variant,
			[]string{"4:endpoints[0].tokens_header:must not be empty"}},
		{"health check without a path", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    health_check: {interval: 1s}\n" + variant,
			[]string{"4:endpoints[0].health_check.path:required"}},
		{"health check timeout and thresholds", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n" +
			"    health_check:\n      path: healthz\n      interval: 1s\n      timeout: 2s\n      unhealthy_threshold: -1\n      grpc_service: x.Y\n" + variant,
			[]string{"5:endpoints[0].health_check.path:must start with '/'", "7:endpoints[0].health_check.timeout:longer than the interval",
				"8:endpoints[0].health_check.unhealthy_threshold:must be 1-100", "9:endpoints[0].health_check.grpc_service:no grpc variant"}},
		{"grpc health check with a path", "endpoints:\n  - name: m\n    protocol: grpc\n    services: [x.Y]\n    match: {path_prefix: /m}\n" +
			"    health_check: {path: /healthz}\n" + variant,
			[]string{"6:endpoints[0].health_check.path:gRPC health service"}},
		{"outlier detection out of range", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n" +
			"    outlier_detection: {consecutive_5xx: -2, max_ejection_percent: 101}\n" + variant,
			[]string{"4:endpoints[0].outlier_detection.consecutive_5xx:must be 1-1000", "4:endpoints[0].outlier_detection.max_ejection_percent:must be 0-100"}},
		{"retries out of range and unknown condition", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n" +
			"    retries:\n      attempts: 9\n      on: [connect-failure, retriable-4xx, connect-failure, unavailable]\n" + variant,
			[]string{"5:endpoints[0].retries.attempts:must be 0-5", "6:endpoints[0].retries.on[1]:unknown retry condition",
				"6:endpoints[0].retries.on[2]:listed twice", "6:endpoints[0].retries.on[3]:no grpc variant"}},
		{"streaming endpoint asks for replaying retries", "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    streaming: true\n" +
			"    retries: {attempts: 2, on: [connect-failure, 5xx, reset]}\n" + variant,
			[]string{"5:endpoints[0].retries.on[1]:streaming endpoint retries only failures before a backend took the request",
				"5:endpoints[0].retries.on[2]:can replay a request"}},
		{"empty", "", []string{"config is empty"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("bad.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error for:\n%s", tc.yaml)
			}
			var errs config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want config.Errors: %v", err, err)
			}
			for _, w := range tc.want {
				if !containsError(errs, w) {
					t.Errorf("want an error matching %q, got:\n%v", w, err)
				}
			}
			for _, e := range errs {
				if e.File != "bad.yaml" {
					t.Errorf("error without file name: %v", e)
				}
			}
		})
	}
}

// containsError matches "line:field:substring"; an empty line or field part
// matches anything, "0" requires line 0.
func containsError(errs config.Errors, spec string) bool {
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) == 1 {
		parts = []string{"", "", parts[0]}
	}
	for _, e := range errs {
		if parts[0] != "" && parts[0] != strconv.Itoa(e.Line) {
			continue
		}
		if parts[1] != "" && parts[1] != e.Field {
			continue
		}
		if strings.Contains(e.Msg, parts[2]) {
			return true
		}
	}
	return false
}

func TestAllErrorsReportedAtOnce(t *testing.T) {
	_, err := config.Parse("many.yaml", []byte(`
endpoints:
  - name: m
    bogus: true
    match: {path_prefix: /m}
    variants:
      - {name: a, weight: -1, backends: ["1.1.1.1:99999"]}
      - {name: a, weight: 0, backends: ["1.1.1.1:80"]}
    rules: [{header: x, equals: y, variant: nope}]
`))
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want config.Errors, got %v", err)
	}
	for _, want := range []string{"unknown field", "port must be", "must not be negative", "duplicate name", "unknown variant"} {
		found := false
		for _, e := range errs {
			found = found || strings.Contains(e.Msg, want)
		}
		if !found {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	// Sorted by line, each with file:line prefix.
	for i, e := range errs {
		if !strings.HasPrefix(e.Error(), "many.yaml:") {
			t.Errorf("error %d lacks file:line prefix: %q", i, e.Error())
		}
		if i > 0 && errs[i-1].Line > e.Line {
			t.Errorf("errors not sorted by line: %v", err)
		}
	}
}

// Health checks are off unless configured; outlier detection, retries and
// failover are on with defaults; a streaming endpoint keeps the default
// (safe) retries and may turn them off.
func TestResilienceDefaults(t *testing.T) {
	c, err := config.Parse("r.yaml", []byte(`
endpoints:
  - name: m
    match: {path_prefix: /m}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 1, backends: ["10.0.0.2:80"]}
      - {name: g, weight: 0, backends: ["10.0.0.3:80"], protocol: grpc}
  - name: s
    match: {path_prefix: /s}
    streaming: true
    failover: false
    health_check: {path: /healthz, interval: 500ms}
    retries: {attempts: 0}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 1, backends: ["10.0.0.2:80"]}
  - name: t
    match: {path_prefix: /t}
    streaming: true
    variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	m, s, st := &c.Endpoints[0], &c.Endpoints[1], &c.Endpoints[2]
	if m.HealthCheck != nil {
		t.Errorf("health checks on by default: %+v", m.HealthCheck)
	}
	if m.RetryAttempts() != 1 || strings.Join(m.Retries.On, ",") != "connect-failure,refused-stream,reset-before-request" {
		t.Errorf("default retries: %d on %v", m.RetryAttempts(), m.Retries.On)
	}
	o := m.OutlierDetection
	if o.Consecutive5xx != 5 || o.ConsecutiveGatewayFailure != 3 || o.BaseEjectionTime.D() != 30*time.Second || o.Interval.D() != 10*time.Second {
		t.Errorf("default outlier detection: %+v", o)
	}
	// a fails over to b only (g speaks gRPC); g has no target.
	if got := m.FailoverTargets(&m.Variants[0]); len(got) != 1 || got[0].Name != "b" {
		t.Errorf("a fails over to %v, want [b]", got)
	}
	if got := m.FailoverTargets(&m.Variants[2]); len(got) != 0 {
		t.Errorf("g (the only gRPC variant) fails over to %v", got)
	}
	if m.EjectionPercent(&m.Variants[0]) != 100 || m.EjectionPercent(&m.Variants[2]) != 50 || m.EjectionPercent(nil) != 50 {
		t.Errorf("max ejection percent: with failover %d, alone %d, shadow %d; want 100, 50, 50",
			m.EjectionPercent(&m.Variants[0]), m.EjectionPercent(&m.Variants[2]), m.EjectionPercent(nil))
	}
	h := s.HealthCheck
	if h == nil || h.Timeout.D() != 500*time.Millisecond || h.UnhealthyThreshold != 2 || h.HealthyThreshold != 2 {
		t.Errorf("health check defaults: %+v (timeout at most the interval)", h)
	}
	if s.RetryAttempts() != 0 || len(s.FailoverTargets(&s.Variants[0])) != 0 || s.EjectionPercent(&s.Variants[0]) != 50 {
		t.Errorf("retries %d, failover %v, ejection %d: want 0, none, 50", s.RetryAttempts(), s.FailoverTargets(&s.Variants[0]), s.EjectionPercent(&s.Variants[0]))
	}
	if st.RetryAttempts() != 1 {
		t.Errorf("a streaming endpoint keeps the safe retries: %d", st.RetryAttempts())
	}
	n := c.Clone()
	*n.Endpoints[1].Retries.Attempts = 3
	n.Endpoints[1].HealthCheck.Path = "/other"
	n.Endpoints[0].Retries.On[0] = "5xx"
	if s.RetryAttempts() != 0 || s.HealthCheck.Path != "/healthz" || m.Retries.On[0] != "connect-failure" {
		t.Error("Clone shares resilience settings with the original")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want not-exist error, got %v", err)
	}
}

func TestCloneIsDeep(t *testing.T) {
	c, err := config.Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := c.Clone()
	n.Endpoints[0].Variants[0].Weight = 1
	n.Endpoints[0].Variants[0].Backends[0].Port = 1
	n.UserLists["beta-testers"][0] = "mallory"
	if c.Endpoints[0].Variants[0].Weight == 1 || c.Endpoints[0].Variants[0].Backends[0].Port == 1 || c.UserLists["beta-testers"][0] == "mallory" {
		t.Fatal("Clone shares memory with the original")
	}
}

// FuzzParse: any input gives a config or an error, never a panic; a config
// that parses must validate again and carry no error.
func FuzzParse(f *testing.F) {
	seed, _ := os.ReadFile("example.yaml")
	f.Add(seed)
	f.Add([]byte("endpoints: [{name: a, match: {path_prefix: /}, variants: [{name: v, weight: 1, backends: ['1.2.3.4:5']}]}]"))
	f.Add([]byte("listen: {xds: ':'}\nendpoints: [{}]"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse("fuzz.yaml", data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config fails validation: %v", err)
		}
	})
}

// The extproc section: defaults (max_streams 10,000, first message 10s,
// idle the longest endpoint timeout plus 10s) and each bad value with its
// file:line.
func TestExtProcLimits(t *testing.T) {
	base := "endpoints:\n  - name: m\n    match: {path_prefix: /m}\n    timeout: 60s\n    variants:\n      - {name: a, weight: 1, backends: [\"10.0.0.1:80\"]}\n"
	c, err := config.Parse("ok.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if x := c.ExtProc; x.MaxStreams != 10000 || x.FirstMessageTimeout != config.Duration(10*time.Second) || x.IdleTimeout != config.Duration(70*time.Second) {
		t.Errorf("defaults %+v", x)
	}
	_, err = config.Parse("bad.yaml", []byte("extproc:\n  max_streams: 0\n  first_message_timeout: 0s\n  idle_timeout: 30s\n"+base))
	want := []string{
		"bad.yaml:2: extproc.max_streams: must be 1-1000000, got 0",
		"bad.yaml:3: extproc.first_message_timeout: must be between 1ms and 1h0m0s, got 0s",
		"bad.yaml:4: extproc.idle_timeout: 30s is shorter than the longest endpoint timeout 1m0s",
	}
	if err == nil {
		t.Fatal("bad extproc section accepted")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("errors\n%v\nlack %q", err, w)
		}
	}
}
