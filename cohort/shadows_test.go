package cohort_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
)

func shadowConfig(t *testing.T) *config.Config {
	cfg := splitConfig(t, "", 50, 50)
	be := []config.Backend{{Host: "127.0.0.1", Port: 9}}
	cfg.Endpoints[0].Shadows = []config.Shadow{
		{Name: "mirror", Percent: 10, Backends: be},
		{Name: "cmp", Percent: 30, Backends: be, Compare: &config.Compare{}},
		{Name: "paused", Percent: 100, Paused: true, Backends: be},
		{Name: "perreq", Percent: 50, PerRequest: true, Backends: be},
	}
	return cfg
}

// A user-sampled shadow takes the configured share of users, always the
// same users: a sampled user's whole session is mirrored or compared.
func TestShadowSamplingIsPerUser(t *testing.T) {
	e, _ := newEngine(t, cohort.NewMemoryStore(0), shadowConfig(t))
	const n = 20000
	mirrored, compared := 0, 0
	for i := 0; i < n; i++ {
		u := user(fmt.Sprintf("u%d", i))
		d := decide(t, e, u)
		m := d.Mirror.Has("mirror")
		if d.Mirror.Has("paused") || d.Mirror.Has("perreq") || d.Mirror.Has("cmp") {
			t.Fatalf("user %d: mirror set holds a paused, per-request or compare shadow", i)
		}
		c := e.CompareShadows("m", u).Has("cmp")
		for range 3 { // every later request of the session agrees
			if decide(t, e, u).Mirror.Has("mirror") != m || e.CompareShadows("m", u).Has("cmp") != c {
				t.Fatalf("user %d: shadow sampling changed between requests", i)
			}
		}
		if m {
			mirrored++
		}
		if c {
			compared++
		}
	}
	if got := float64(mirrored) / n; math.Abs(got-0.10) > 0.01 {
		t.Errorf("mirror sampled %.4f of users, want 0.10±0.01", got)
	}
	if got := float64(compared) / n; math.Abs(got-0.30) > 0.01 {
		t.Errorf("compare sampled %.4f of users, want 0.30±0.01", got)
	}
}

// Each sampled shadow's header carries its cluster, as Envoy's
// cluster_header mirror needs.
func TestShadowSetHeaders(t *testing.T) {
	cfg := shadowConfig(t)
	cfg.Endpoints[0].Shadows[0].Percent = 100
	e, _ := newEngine(t, cohort.NewMemoryStore(0), cfg)
	d := decide(t, e, user("x"))
	var got []string
	d.Mirror.Each(func(name, header, cluster string) { got = append(got, name+" "+header+" "+cluster) })
	if len(got) != 1 || got[0] != "mirror x-modelsplit-shadow-mirror m/mirror" {
		t.Errorf("mirror set = %q", got)
	}
	if !e.CompareShadows("unknown", user("x")).Empty() {
		t.Error("unknown endpoint sampled a shadow")
	}
}

// Users per variant: the memory store counts new assignments.
func TestUsersPerVariant(t *testing.T) {
	e, _ := newEngine(t, cohort.NewMemoryStore(0), splitConfig(t, "", 70, 30))
	want := map[string]int64{}
	for i := 0; i < 1000; i++ {
		d := decide(t, e, user(fmt.Sprintf("u%d", i)))
		want[d.Variant]++
		decide(t, e, user(fmt.Sprintf("u%d", i))) // a returning user is not counted twice
	}
	got, err := e.Users(context.Background(), "m")
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != want["v0"] || got[1] != want["v1"] {
		t.Errorf("users = %v, want v0=%d v1=%d", got, want["v0"], want["v1"])
	}
	if _, err := e.Users(context.Background(), "nope"); err == nil {
		t.Error("users of an unknown endpoint: no error")
	}
	// UsersMany (the admin API's status, one store call): the same counts,
	// unknown endpoints left out.
	many, err := e.UsersMany(context.Background(), []string{"nope", "m"})
	if err != nil {
		t.Fatal(err)
	}
	if len(many) != 1 || len(many["m"]) != 2 || many["m"][0] != got[0] || many["m"][1] != got[1] {
		t.Errorf("UsersMany = %v, want m=%v only", many, got)
	}
}
