package cohort_test

import (
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
)

// A request sampled into several mirror shadows carries every one of them,
// in config order, and Has answers for each; per-request shadows (Envoy
// samples those) and paused ones
// are never in the set.
func TestShadowSetHoldsEverySampledShadow(t *testing.T) {
	cfg, err := config.Parse("shadows.yaml", []byte(`
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
    shadows:
      - {name: s1, percent: 100, backends: ["10.0.0.2:80"]}
      - {name: never, percent: 100, per_request: true, backends: ["10.0.0.3:80"]}
      - {name: s3, percent: 100, backends: ["10.0.0.4:80"]}
      - {name: s4, percent: 100, backends: ["10.0.0.5:80"]}
      - {name: off, percent: 100, paused: true, backends: ["10.0.0.6:80"]}
      - {name: s6, percent: 100, backends: ["10.0.0.7:80"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newEngine(t, cohort.NewMemoryStore(0), cfg)
	for _, h := range []headers{user("someone"), {}} { // keyed and anonymous
		d := decide(t, e, h)
		var got []string
		d.Mirror.Each(func(name, header, cluster string) {
			got = append(got, name+" "+header+" "+cluster)
		})
		want := []string{
			"s1 x-modelsplit-shadow-s1 m/s1", "s3 x-modelsplit-shadow-s3 m/s3",
			"s4 x-modelsplit-shadow-s4 m/s4", "s6 x-modelsplit-shadow-s6 m/s6",
		}
		if strings.Join(got, "; ") != strings.Join(want, "; ") {
			t.Fatalf("headers %v: mirror set %q, want %q", h, got, want)
		}
		for name, in := range map[string]bool{"s1": true, "s3": true, "s4": true, "s6": true, "never": false, "off": false, "nope": false} {
			if d.Mirror.Has(name) != in {
				t.Errorf("headers %v: Has(%q) = %v, want %v", h, name, !in, in)
			}
		}
	}
}

// Requests without a user key are sampled into a user-sampled shadow per
// request, at random: about the shadow's percent of them, not all or none.
func TestAnonymousRequestsSampledPerRequest(t *testing.T) {
	cfg, err := config.Parse("shadows.yaml", []byte(`
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
    shadows:
      - {name: half, percent: 50, backends: ["10.0.0.2:80"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newEngine(t, cohort.NewMemoryStore(0), cfg)
	const n = 2000
	sampled := 0
	for i := 0; i < n; i++ {
		if decide(t, e, headers{}).Mirror.Has("half") {
			sampled++
		}
	}
	// 5 sigma of a fair coin over 2,000 draws is about 112.
	if sampled < n/2-112 || sampled > n/2+112 {
		t.Fatalf("%d of %d anonymous requests sampled into a 50%% shadow, want about %d", sampled, n, n/2)
	}
}

// An empty sticky header is no user key: such requests are split at
// random, not all stuck to the variant of the empty key.
func TestEmptyStickyHeaderIsNoKey(t *testing.T) {
	e, _ := newEngine(t, cohort.NewMemoryStore(0), splitConfig(t, "", 50, 50))
	for i := 0; i < 5; i++ {
		if d := decide(t, e, headers{"x-user-id": ""}); d.Source != cohort.SourceRandom {
			t.Fatalf("empty x-user-id: %+v, want a random split", d)
		}
	}
}

// A minted-id cookie without sticky.ttl is a session cookie: no Max-Age
// (Max-Age=0 would make the browser drop it at once).
func TestMintedCookieWithoutTTLHasNoMaxAge(t *testing.T) {
	cfg, err := config.Parse("c.yaml", []byte(`
endpoints:
  - name: m
    match: {path_prefix: /m}
    sticky: {cookie: uid, mint_cookie: true}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newEngine(t, cohort.NewMemoryStore(0), cfg)
	d := decide(t, e, headers{})
	if !strings.HasPrefix(d.SetCookie, "uid=") || strings.Contains(d.SetCookie, "Max-Age") {
		t.Fatalf("minted cookie without a TTL: %q, want uid=<id> without Max-Age", d.SetCookie)
	}
}
