package cohort_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/cohort/picktest"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// headers is a map-backed cohort.Headers for tests.
type headers map[string]string

func (h headers) Get(name string) (string, bool) { v, ok := h[name]; return v, ok }

func user(id string) headers { return headers{"x-user-id": id} }

func splitConfig(t testing.TB, redisURL string, weights ...int) *config.Config {
	t.Helper()
	var b strings.Builder
	if redisURL != "" {
		// A generous budget: these tests are about stickiness, and under
		// -race on 2 busy cores a loopback read can take tens of ms (the
		// hash would then decide, correctly, but not what they check).
		fmt.Fprintf(&b, "store: {redis: %q, timeout: 1s, key_prefix: \"t:\"}\n", redisURL)
	}
	b.WriteString("user_lists:\n  vip: [vip-1, vip-2]\nendpoints:\n  - name: m\n    match: {path_prefix: /m}\n    sticky: {header: x-user-id}\n    allow_target: true\n    variants:\n")
	for i, w := range weights {
		fmt.Fprintf(&b, "      - {name: v%d, weight: %d, backends: [\"10.0.0.%d:80\"]}\n", i, w, i+1)
	}
	b.WriteString(`    rules:
      - {header: x-region, equals: eu, variant: v0}
      - {header: x-device, one_of: [ios, android], variant: v1}
      - {header: x-build, prefix: "2026.", variant: v1}
      - {user_list: vip, variant: v1}
`)
	if redisURL != "" {
		b.WriteString("      - {user_list: redis-beta, variant: v0}\n")
	}
	cfg, err := config.Parse("test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func newEngine(t testing.TB, store cohort.Store, cfg *config.Config) (*cohort.Engine, *metrics.Metrics) {
	t.Helper()
	m := metrics.New()
	e := cohort.NewEngine(store, cohort.Options{Metrics: m})
	e.SetConfig(cfg)
	t.Cleanup(func() { e.Close() })
	return e, m
}

func redisStore(t testing.TB, url string, m *metrics.Metrics) cohort.Store {
	t.Helper()
	s, err := cohort.NewRedisStore(config.Store{Redis: url, KeyPrefix: "t:", Timeout: config.Duration(50 * time.Millisecond)}, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func decide(t testing.TB, e *cohort.Engine, h cohort.Headers) cohort.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), "m", h)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func shares(t testing.TB, e *cohort.Engine, prefix string, n int) map[string]float64 {
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		counts[decide(t, e, user(fmt.Sprintf("%s-%d", prefix, i))).Variant]++
	}
	out := map[string]float64{}
	for k, v := range counts {
		out[k] = float64(v) / float64(n)
	}
	return out
}

func assertShares(t *testing.T, got map[string]float64, want map[string]float64, tol float64) {
	t.Helper()
	for k, w := range want {
		if math.Abs(got[k]-w) > tol {
			t.Errorf("share of %s = %.4f, want %.2f ± %.3f (all: %v)", k, got[k], w, tol, got)
		}
	}
	t.Logf("shares %v", got)
}

// Split accuracy two ways. Shares over 200,000 users are within 5 sigma
// of the weights (at 5%, sigma is 0.05 pp, so a variant given 5.76% instead
// of 5% — what an off-by-one weight does — is caught), with user names
// unlike those of any other test. And every one of 20,000 users gets
// exactly the variant the documented rule gives (picktest, written apart
// from the engine), which no lucky choice of names can fake.
func TestSplitAccuracy(t *testing.T) {
	const n = 200_000
	for _, w := range [][]int{{70, 30}, {33, 33, 34}, {90, 10}, {5, 15, 30, 50}, {1, 999}} {
		e, _ := newEngine(t, cohort.NewMemoryStore(0), splitConfig(t, "", w...))
		got := shares(t, e, fmt.Sprintf("acc%v", w), n)
		total := 0
		for _, x := range w {
			total += x
		}
		names := make([]string, len(w))
		for i, x := range w {
			names[i] = fmt.Sprintf("v%d", i)
			p := float64(x) / float64(total)
			tol := 5 * math.Sqrt(p*(1-p)/n)
			if math.Abs(got[names[i]]-p) > tol {
				t.Errorf("weights %v: share of %s = %.4f%%, want %.2f%% ± %.3f pp (5 sigma over %d users)", w, names[i], 100*got[names[i]], 100*p, 100*tol, n)
			}
		}
		t.Logf("weights %v: shares %v", w, got)
		for i := 0; i < 20_000; i++ {
			u := fmt.Sprintf("exact-%d", i)
			if v, want := decide(t, e, user(u)).Variant, picktest.Variant("", u, names, w); v != want {
				t.Fatalf("weights %v: user %s got %s, the rule says %s", w, u, v, want)
			}
		}
	}
}

// Raising one variant's weight only moves users onto it; lowering only
// moves users off it — for any number of variants, without a store.
func TestRampsAreMonotonic(t *testing.T) {
	steps := [][]int{{90, 5, 5}, {80, 15, 5}, {60, 15, 25}, {60, 35, 5}, {0, 50, 50}}
	prev := map[string]string{}
	for si, w := range steps {
		e, _ := newEngine(t, cohort.NewMemoryStore(0), splitConfig(t, "", w...))
		for i := 0; i < 5000; i++ {
			u := fmt.Sprintf("u%d", i)
			v := decide(t, e, user(u)).Variant
			if si > 0 && v != prev[u] {
				from, to := variantIndex(prev[u]), variantIndex(v)
				was, now := steps[si-1], w
				if !(now[to] > was[to] || now[from] < was[from]) {
					t.Fatalf("step %v→%v moved %s from %s to %s although neither weight moved that way", was, now, u, prev[u], v)
				}
			}
			prev[u] = v
		}
	}
}

func variantIndex(v string) int {
	var i int
	fmt.Sscanf(v, "v%d", &i)
	return i
}

func TestRulesAndTargets(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	e, _ := newEngine(t, store, splitConfig(t, r.URL(), 50, 50))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	redisAdd(t, r, "t:list:redis-beta", "beta-user")
	cases := []struct {
		name    string
		h       headers
		variant string
		source  cohort.Source
	}{
		{"equals", headers{"x-user-id": "a", "x-region": "eu"}, "v0", cohort.SourceRule},
		{"one_of", headers{"x-user-id": "a", "x-device": "android"}, "v1", cohort.SourceRule},
		{"prefix", headers{"x-user-id": "a", "x-build": "2026.11"}, "v1", cohort.SourceRule},
		{"config list", user("vip-2"), "v1", cohort.SourceRule},
		{"redis list", user("beta-user"), "v0", cohort.SourceRule},
		{"first rule wins", headers{"x-user-id": "vip-1", "x-region": "eu"}, "v0", cohort.SourceRule},
		{"target", headers{"x-user-id": "a", "x-region": "eu", config.TargetHeader: "v1"}, "v1", cohort.SourceTarget},
	}
	for _, tc := range cases {
		d, err := e.Decide(ctx, "m", tc.h)
		if err != nil {
			t.Fatal(err)
		}
		if d.Variant != tc.variant || d.Source != tc.source || d.Cluster != config.ClusterName("m", tc.variant) || d.Endpoint != "m" {
			t.Errorf("%s: got %s/%s, want %s/%s", tc.name, d.Variant, d.Source, tc.variant, tc.source)
		}
	}
	// An unknown target is ignored; the user gets their normal variant.
	normal := decide(t, e, user("zed"))
	if d := decide(t, e, headers{"x-user-id": "zed", config.TargetHeader: "nope"}); d.Variant != normal.Variant || d.Source == cohort.SourceTarget {
		t.Errorf("unknown target: got %+v, want %s not by target", d, normal.Variant)
	}
	if _, err := e.Decide(ctx, "missing", user("a")); err != cohort.ErrUnknownEndpoint {
		t.Errorf("unknown endpoint: %v", err)
	}
}

func TestTargetNotAllowed(t *testing.T) {
	cfg := splitConfig(t, "", 100, 0)
	cfg.Endpoints[0].AllowTarget = false
	e, _ := newEngine(t, cohort.NewMemoryStore(0), cfg)
	if d := decide(t, e, headers{"x-user-id": "a", config.TargetHeader: "v1"}); d.Variant != "v0" {
		t.Errorf("target honoured on an endpoint that does not allow it: %+v", d)
	}
}

func TestSaltResetsExperiment(t *testing.T) {
	store := cohort.NewMemoryStore(0)
	cfg := splitConfig(t, "", 50, 50)
	e, _ := newEngine(t, store, cfg)
	a := map[string]string{}
	for i := 0; i < 2000; i++ {
		a[fmt.Sprint(i)] = decide(t, e, user(fmt.Sprint(i))).Variant
	}
	salted := cfg.Clone()
	salted.Endpoints[0].Sticky.Salt = "experiment-2"
	e.SetConfig(salted)
	changed := 0
	for u, v := range a {
		d := decide(t, e, user(u))
		if d.Source == cohort.SourceStore {
			t.Fatalf("user %s served from an assignment of the old salt", u)
		}
		if d.Variant != v {
			changed++
		}
	}
	if changed < 800 || changed > 1200 { // a fresh 50/50 draw moves about half
		t.Errorf("%d of 2000 users changed variant after a new salt, want about 1000", changed)
	}
}

// A variant drained to 0 (blue-green switch) sends its users elsewhere; a
// rollback brings them back, because their stored assignment was kept.
func TestDrainAndRollback(t *testing.T) {
	e, _ := newEngine(t, cohort.NewMemoryStore(0), splitConfig(t, "", 50, 50))
	orig := map[string]string{}
	for i := 0; i < 1000; i++ {
		orig[fmt.Sprint(i)] = decide(t, e, user(fmt.Sprint(i))).Variant
	}
	e.SetConfig(splitConfig(t, "", 100, 0))
	for u, was := range orig {
		d := decide(t, e, user(u))
		if d.Variant != "v0" {
			t.Fatalf("after promote, user %s still on %s", u, d.Variant)
		}
		if want := map[string]cohort.Source{"v0": cohort.SourceStore, "v1": cohort.SourceHash}[was]; d.Source != want {
			t.Fatalf("after promote, user %s (was %s) decided by %s, want %s", u, was, d.Source, want)
		}
	}
	e.SetConfig(splitConfig(t, "", 50, 50))
	for u, v := range orig {
		if got := decide(t, e, user(u)).Variant; got != v {
			t.Fatalf("after rollback, user %s on %s, was %s", u, got, v)
		}
	}
}

// countingStore is a real memory store that counts writes.
type countingStore struct {
	cohort.Store
	puts atomic.Int64
}

func (c *countingStore) PutIfAbsent(a cohort.Assignment) { c.puts.Add(1); c.Store.PutIfAbsent(a) }

func TestCookieKeyAndMinting(t *testing.T) {
	cfg, err := config.Parse("c.yaml", []byte(`
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {cookie: uid, mint_cookie: true, ttl: 1h}
    variants:
      - {name: a, weight: 50, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 50, backends: ["10.0.0.2:80"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: cohort.NewMemoryStore(0)}
	e, _ := newEngine(t, store, cfg)
	d := decide(t, e, headers{})
	if !strings.HasPrefix(d.SetCookie, "uid=") || !strings.Contains(d.SetCookie, "Max-Age=3600") || !strings.Contains(d.SetCookie, "HttpOnly") {
		t.Fatalf("minted cookie = %q", d.SetCookie)
	}
	id := strings.SplitN(strings.TrimPrefix(d.SetCookie, "uid="), ";", 2)[0]
	if len(id) != 32 || d.Source != cohort.SourceHash {
		t.Fatalf("minted id %q (want 128 bits, hex), source %s (want hash)", id, d.Source)
	}
	// Nothing is stored (or cached) for a minted id until the client sends
	// it back: bots that never return leave no key behind.
	if n := store.puts.Load(); n != 0 {
		t.Fatalf("minting an id wrote %d assignments", n)
	}
	cfg2 := cfg.Clone()
	cfg2.Endpoints[0].Variants[0].Weight, cfg2.Endpoints[0].Variants[1].Weight = 1, 1_000_000
	if d.Variant == "b" {
		cfg2.Endpoints[0].Variants[0].Weight, cfg2.Endpoints[0].Variants[1].Weight = 1_000_000, 1
	}
	// Coming back with the cookie: the same variant (the pick hashes the
	// id), stored from now on, never a new cookie.
	for i := 0; i < 5; i++ {
		again := decide(t, e, headers{"cookie": "theme=dark; uid=" + id + "; x=1"})
		want := cohort.SourceStore
		if i == 0 {
			want = cohort.SourceHash
		}
		if again.Variant != d.Variant || again.SetCookie != "" || again.Source != want {
			t.Fatalf("returning user, visit %d: %+v, first %+v", i, again, d)
		}
	}
	if n := store.puts.Load(); n != 1 {
		t.Errorf("the returning minted user wrote %d assignments, want 1", n)
	}
	// Now it is stored: a fresh engine with weights that hash everyone to
	// the other variant returns it.
	e3, _ := newEngine(t, store, cfg2)
	if again := decide(t, e3, headers{"cookie": "uid=" + id}); again.Variant != d.Variant || again.Source != cohort.SourceStore {
		t.Fatalf("returned minted user on a fresh engine: %+v, first %+v", again, d)
	}
	// Distinct anonymous users get distinct ids.
	if other := decide(t, e, headers{}); other.SetCookie == d.SetCookie {
		t.Fatal("two anonymous users were minted the same id")
	}
}

func TestMemoryStoreIsBounded(t *testing.T) {
	s := cohort.NewMemoryStore(1000)
	for i := 0; i < 10000; i++ {
		s.PutIfAbsent(cohort.Assignment{Key: fmt.Sprint(i), Variant: "a"})
	}
	found := 0
	for i := 0; i < 10000; i++ {
		if _, ok, _ := s.Get(context.Background(), fmt.Sprint(i), 0); ok {
			found++
		}
	}
	if found > 1000 || found < 900 {
		t.Errorf("memory store of 1000 holds %d entries after 10,000 puts", found)
	}
}

func flush(t testing.TB, e *cohort.Engine) {
	t.Helper()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// Before any config, and after SetConfig(nil), every endpoint is unknown;
// nothing panics.
func TestNoConfigMeansUnknownEndpoint(t *testing.T) {
	e := cohort.NewEngine(cohort.NewMemoryStore(0), cohort.Options{})
	if _, err := e.Decide(context.Background(), "m", user("a")); err != cohort.ErrUnknownEndpoint {
		t.Fatalf("before SetConfig: %v, want ErrUnknownEndpoint", err)
	}
	e.SetConfig(splitConfig(t, "", 50, 50))
	decide(t, e, user("a"))
	e.SetConfig(nil)
	if _, err := e.Decide(context.Background(), "m", user("a")); err != cohort.ErrUnknownEndpoint {
		t.Fatalf("after SetConfig(nil): %v, want ErrUnknownEndpoint", err)
	}
}
