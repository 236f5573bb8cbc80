package cohort_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// Every source has its metric label; anything else is "unknown", never a
// panic.
func TestSourceNames(t *testing.T) {
	for s, want := range map[cohort.Source]string{
		cohort.SourceTarget: "target", cohort.SourceRule: "rule", cohort.SourceStore: "store",
		cohort.SourceHash: "hash", cohort.SourceRandom: "random", cohort.SourceFallback: "fallback", cohort.SourceRamp: "ramp",
		cohort.SourceRamp + 1: "unknown", 255: "unknown",
	} {
		if got := s.String(); got != want {
			t.Errorf("Source(%d) = %q, want %q", s, got, want)
		}
	}
}

// slowStoreEngine is an engine on a real Redis with its own generous
// client timeout, so only the decision budget (store.timeout) limits a
// read.
func slowStoreEngine(t *testing.T, timeout time.Duration) (*cohort.Engine, *testredis.Server) {
	t.Helper()
	r := testredis.Start(t)
	m := metrics.New()
	s, err := cohort.NewRedisStore(config.Store{Redis: r.URL(), KeyPrefix: "t:", Timeout: config.Duration(5 * time.Second)}, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Store.Timeout = config.Duration(timeout)
	e, _ := newEngine(t, s, cfg)
	decide(t, e, user("warm")) // connections open
	return e, r
}

// The decision waits for the store as long as store.timeout allows: a
// Redis that answers after 150 ms still decides within a 2 s budget.
func TestStoreBudgetIsTheConfiguredTimeout(t *testing.T) {
	e, r := slowStoreEngine(t, 2*time.Second)
	r.Pause()
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(150 * time.Millisecond)
		r.Resume()
	}()
	d := decide(t, e, user("slow-but-in-budget"))
	<-resumed
	if d.Source == cohort.SourceFallback {
		t.Fatalf("a read answered after 150 ms within a 2 s budget fell back to the hash: %+v", d)
	}
}

// A config that was not through Validate (store.timeout 0) gets the
// default budget, not a zero one that would make every read fail.
func TestUnsetStoreTimeoutMeansTheDefault(t *testing.T) {
	e, _ := slowStoreEngine(t, 0)
	decided := 0
	for i := 0; i < 30; i++ {
		if d := decide(t, e, user(fmt.Sprintf("u-%d", i))); d.Source != cohort.SourceFallback {
			decided++
		}
	}
	if decided == 0 {
		t.Fatalf("with store.timeout 0 every decision fell back: the budget was zero, want %v", config.DefaultStoreTimeout.D())
	}
}

// A cookie-sticky endpoint that does not mint ids splits users without
// the cookie at random and sets no cookie.
func TestCookieWithoutMintingSplitsAtRandom(t *testing.T) {
	cfg, err := config.Parse("c.yaml", []byte(`
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {cookie: uid}
    variants:
      - {name: a, weight: 50, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 50, backends: ["10.0.0.2:80"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newEngine(t, cohort.NewMemoryStore(0), cfg)
	for i := 0; i < 5; i++ {
		if d := decide(t, e, headers{}); d.Source != cohort.SourceRandom || d.SetCookie != "" {
			t.Fatalf("no cookie, minting off: %+v, want a random split and no Set-Cookie", d)
		}
	}
	if d := decide(t, e, headers{"cookie": "uid=someone"}); d.Source != cohort.SourceHash {
		t.Fatalf("with the cookie: %+v, want the hash", d)
	}
}

// An endpoint without variants (a config that skipped Validate) is left
// out, and the endpoints after it still decide.
func TestEndpointWithoutVariantsIsLeftOut(t *testing.T) {
	cfg, err := config.Parse("e.yaml", []byte(`
endpoints:
  - {name: empty, match: {path_prefix: /e}, variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]}
  - {name: m, match: {path_prefix: /m}, sticky: {header: x-user-id}, variants: [{name: a, weight: 1, backends: ["10.0.0.1:80"]}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Endpoints[0].Variants = nil
	e, _ := newEngine(t, cohort.NewMemoryStore(0), cfg)
	if _, err := e.Decide(context.Background(), "empty", user("u")); !errors.Is(err, cohort.ErrUnknownEndpoint) {
		t.Fatalf("endpoint without variants: %v, want ErrUnknownEndpoint", err)
	}
	if d := decide(t, e, user("u")); d.Variant != "a" {
		t.Fatalf("endpoint after it: %+v", d)
	}
}

// A rule naming an unknown variant (a config that skipped Validate) is
// ignored, and the rules after it still match.
func TestRuleForUnknownVariantIsIgnored(t *testing.T) {
	cfg := splitConfig(t, "", 50, 50)
	ep := &cfg.Endpoints[0]
	bad := ep.Rules[0]
	bad.Variant = "no-such-variant"
	ep.Rules = append([]config.Rule{bad}, ep.Rules...)
	e, _ := newEngine(t, cohort.NewMemoryStore(0), cfg)
	if d := decide(t, e, headers{"x-user-id": "u", "x-region": "eu"}); d.Source != cohort.SourceRule || d.Variant != "v0" {
		t.Fatalf("x-region: eu after a rule for an unknown variant: %+v, want rule → v0", d)
	}
	if d := decide(t, e, headers{"x-user-id": "u", "x-device": "ios"}); d.Source != cohort.SourceRule || d.Variant != "v1" {
		t.Fatalf("x-device: ios: %+v, want rule → v1", d)
	}
}
