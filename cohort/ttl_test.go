package cohort_test

import (
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// sticky.ttl forgets users not seen for that long, never an active one:
// a user who keeps coming back keeps their variant well past the TTL
// (each store read renews it), while an idle user is forgotten — by the
// store and by the engine's cache — and hashed again at today's weights.
func TestStickyTTLSlides(t *testing.T) {
	const ttl = 2 * time.Second
	stores := map[string]func(t *testing.T) (cohort.Store, string){
		"memory": func(*testing.T) (cohort.Store, string) { return cohort.NewMemoryStore(0), "" },
		"redis": func(t *testing.T) (cohort.Store, string) {
			r := testredis.Start(t)
			return redisStore(t, r.URL(), metrics.New()), r.URL()
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			store, url := open(t)
			withTTL := func(weights ...int) *config.Config {
				cfg := splitConfig(t, url, weights...)
				cfg.Endpoints[0].Sticky.TTL = config.Duration(ttl)
				return cfg
			}
			e, _ := newEngine(t, store, withTTL(100, 0))
			for _, u := range []string{"active", "idle"} {
				if d := decide(t, e, user(u)); d.Variant != "v0" {
					t.Fatalf("%s at 100/0: %+v", u, d)
				}
			}
			flush(t, e)
			// Now the hash sends (almost) everyone to v1; only a stored
			// assignment keeps a user on v0.
			e.SetConfig(withTTL(1, 1_000_000))
			for end := time.Now().Add(ttl*2 + ttl/4); time.Now().Before(end); time.Sleep(ttl / 10) {
				if d := decide(t, e, user("active")); d.Variant != "v0" || d.Source != cohort.SourceStore {
					t.Fatalf("active user lost their variant before going idle: %s by %s", d.Variant, d.Source)
				}
			}
			if d := decide(t, e, user("idle")); d.Variant != "v1" || d.Source != cohort.SourceHash {
				t.Fatalf("user idle for more than the TTL: %s by %s, want v1 by hash (forgotten)", d.Variant, d.Source)
			}
		})
	}
}
