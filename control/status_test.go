package control

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/metrics"
)

// statusConfig has two endpoints, so that a view of one must leave the
// other out, and shadows of every kind: compare mode with results, compare
// mode with none yet, and a plain mirror.
const statusConfig = `
endpoints:
  - name: face
    match: {path_prefix: /face}
    sticky: {header: x-user-id}
    variants:
      - {name: stable, weight: 90, backends: ["10.0.0.1:80"]}
      - {name: canary, weight: 10, backends: ["10.0.0.2:80"]}
    shadows:
      - {name: judge, percent: 10, backends: ["10.0.0.3:80"], compare: {}}
      - {name: mirror, percent: 25, per_request: true, backends: ["10.0.0.4:80"]}
      - {name: fresh, percent: 5, backends: ["10.0.0.5:80"], compare: {}}
  - name: voice
    match: {path_prefix: /voice}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 30, backends: ["10.0.1.1:80"]}
      - {name: b, weight: 70, backends: ["10.0.1.2:80"]}
    shadows:
      - {name: tap, percent: 50, backends: ["10.0.1.3:80"]}
`

// fakeUsers counts users as cohort.Engine.UsersMany answers: one count
// per variant of each endpoint asked for, nothing for the others, and an
// error once the context is done (a store round trip cannot be made).
type fakeUsers struct {
	mu     sync.Mutex
	counts map[string][]int64
	asked  [][]string
}

func (u *fakeUsers) UsersMany(ctx context.Context, endpoints []string) (map[string][]int64, error) {
	u.mu.Lock()
	u.asked = append(u.asked, slices.Clone(endpoints))
	u.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[string][]int64{}
	for _, e := range endpoints {
		if c, ok := u.counts[e]; ok {
			out[e] = c
		}
	}
	return out, nil
}

func (u *fakeUsers) lastAsked() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.asked) == 0 {
		return nil
	}
	return u.asked[len(u.asked)-1]
}

// fakeShadows answers for the compare-mode shadows it knows, as
// shadow.Manager does, and nothing for the others.
type fakeShadows struct {
	samples map[string][]api.Sample // "endpoint/shadow"
	stats   map[string][4]uint64    // compared, agreed, errors, dropped
}

func (s *fakeShadows) Samples(endpoint, shadow string) ([]api.Sample, bool) {
	v, ok := s.samples[endpoint+"/"+shadow]
	return v, ok
}

func (s *fakeShadows) Stats(endpoint, shadow string) (compared, agreed, errs, dropped uint64, ok bool) {
	v, ok := s.stats[endpoint+"/"+shadow]
	return v[0], v[1], v[2], v[3], ok
}

func newStatusController(t *testing.T, users UserCounter, shadows ShadowReader) (*Controller, *metrics.Metrics) {
	t.Helper()
	cfg, err := config.Parse("status.yaml", []byte(statusConfig))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	c := New(context.Background(), Options{Metrics: m, Users: users, Shadows: shadows, Apply: func(*config.Config) error { return nil }})
	if _, err := c.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return c, m
}

func ptr[T any](v T) *T { return &v }

// describe prints a status with its pointers followed, for failure messages.
func describe(st api.EndpointStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s override=%v since=%v depth=%d source=%s", st.Name, st.Override, st.OverrideSince, st.RollbackDepth, st.LiveSource)
	for _, v := range st.Variants {
		fmt.Fprintf(&b, "\n  variant %s configured=%d weight=%d share=%v live=%s window=%v decisions=%d requests=%d users=%s",
			v.Name, v.ConfiguredWeight, v.Weight, v.WeightShare, deref(v.LiveShare), v.LiveWindowSeconds, v.Decisions, v.Requests, deref(v.Users))
	}
	for _, s := range st.Shadows {
		fmt.Fprintf(&b, "\n  shadow %s percent=%v per_request=%v compare=%v paused=%v compared=%d agreed=%d agreement=%s errors=%d dropped=%d",
			s.Name, s.Percent, s.PerRequest, s.Compare, s.Paused, s.Compared, s.Agreed, deref(s.Agreement), s.Errors, s.Dropped)
	}
	return b.String()
}

func deref[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// TestStatusFieldByField: every field of the endpoint statuses that the
// admin API, the CLI and the end-to-end tests read, for the whole list and
// for one endpoint, after a live change on one endpoint and a shadow
// pause on the other.
func TestStatusFieldByField(t *testing.T) {
	users := &fakeUsers{counts: map[string][]int64{"face": {120, 7}, "voice": {5, 6}}}
	shadows := &fakeShadows{stats: map[string][4]uint64{
		"face/judge": {8, 6, 1, 2},
		"face/fresh": {0, 0, 0, 3},
	}}
	c, m := newStatusController(t, users, shadows)
	if _, err := c.SetWeights("face", map[string]int{"stable": 40, "canary": 60}, Requester{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetShadowPaused("voice", "tap", true, Requester{}); err != nil {
		t.Fatal(err)
	}
	stable, canary := m.Stats.Variant("face", "stable"), m.Stats.Variant("face", "canary")
	for range 3 {
		stable.Decided()
	}
	canary.Decided()

	c.mu.Lock()
	since := c.state.Endpoints["face"].Since
	c.mu.Unlock()
	if since == nil {
		t.Fatal("face's override has no since")
	}
	wantFace := api.EndpointStatus{
		Name: "face", Override: true, OverrideSince: since, RollbackDepth: 1, LiveSource: "decisions",
		Variants: []api.VariantStatus{
			{Name: "stable", ConfiguredWeight: 90, Weight: 40, WeightShare: 0.4, LiveShare: ptr(0.75), Decisions: 3, Users: ptr[int64](120)},
			{Name: "canary", ConfiguredWeight: 10, Weight: 60, WeightShare: 0.6, LiveShare: ptr(0.25), Decisions: 1, Users: ptr[int64](7)},
		},
		Shadows: []api.ShadowStatus{
			{Name: "judge", Percent: 10, Compare: true, Compared: 8, Agreed: 6, Agreement: ptr(0.75), Errors: 1, Dropped: 2},
			{Name: "mirror", Percent: 25, PerRequest: true},
			{Name: "fresh", Percent: 5, Compare: true, Dropped: 3}, // nothing compared yet: no agreement
		},
	}
	// voice: a shadow paused live (state kept for the endpoint, but no
	// weight override), no traffic (no live shares).
	wantVoice := api.EndpointStatus{
		Name: "voice", LiveSource: "decisions",
		Variants: []api.VariantStatus{
			{Name: "a", ConfiguredWeight: 30, Weight: 30, WeightShare: 0.3, Users: ptr[int64](5)},
			{Name: "b", ConfiguredWeight: 70, Weight: 70, WeightShare: 0.7, Users: ptr[int64](6)},
		},
		Shadows: []api.ShadowStatus{{Name: "tap", Percent: 50, Paused: true}},
	}
	check := func(how string, got, want api.EndpointStatus) {
		t.Helper()
		// The live window's length depends on the clock: at most a
		// minute, the same for every variant.
		for i := range got.Variants {
			if s := got.Variants[i].LiveWindowSeconds; s < 0 || s > 60 {
				t.Errorf("%s: %s/%s live window %v s, want 0..60", how, got.Name, got.Variants[i].Name, s)
			}
			got.Variants[i].LiveWindowSeconds = 0
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", how, describe(got), describe(want))
		}
	}

	list := c.ListEndpoints(context.Background())
	if len(list.Endpoints) != 2 {
		t.Fatalf("list has %d endpoints, want 2", len(list.Endpoints))
	}
	check("list", list.Endpoints[0], wantFace)
	check("list", list.Endpoints[1], wantVoice)
	if got := users.lastAsked(); !slices.Equal(got, []string{"face", "voice"}) {
		t.Errorf("list asked users of %v, want both endpoints", got)
	}

	for _, want := range []api.EndpointStatus{wantFace, wantVoice} {
		got, err := c.GetEndpoint(context.Background(), want.Name)
		if err != nil {
			t.Fatal(err)
		}
		check("get "+want.Name, got, want)
		if asked := users.lastAsked(); !slices.Equal(asked, []string{want.Name}) {
			t.Errorf("get %s asked users of %v, want only it", want.Name, asked)
		}
	}
	if _, err := c.GetEndpoint(context.Background(), "nope"); !errors.Is(err, live.ErrUnknownEndpoint) {
		t.Errorf("get an unknown endpoint: %v, want ErrUnknownEndpoint", err)
	}
}

// TestStatusWithoutUsersOrShadowReader: without a user counter or a
// shadow reader a status has no user counts and no comparison results,
// also for compare-mode shadows.
func TestStatusWithoutUsersOrShadowReader(t *testing.T) {
	c, _ := newStatusController(t, nil, nil)
	st, err := c.GetEndpoint(context.Background(), "face")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.Variants {
		if v.Users != nil || v.LiveShare != nil {
			t.Errorf("variant %s: users %s, live share %s; want both null", v.Name, deref(v.Users), deref(v.LiveShare))
		}
	}
	want := []api.ShadowStatus{{Name: "judge", Percent: 10, Compare: true}, {Name: "mirror", Percent: 25, PerRequest: true}, {Name: "fresh", Percent: 5, Compare: true}}
	if !reflect.DeepEqual(st.Shadows, want) {
		t.Errorf("shadows %+v, want %+v", st.Shadows, want)
	}
}

// TestDisagreements: a compare-mode shadow's samples; every other case
// refused with the code the admin API maps to its status.
func TestDisagreements(t *testing.T) {
	sample := api.Sample{RequestID: "r1", Path: "/face", Reason: "status", PrimaryStatus: 200, ShadowStatus: 500}
	shadows := &fakeShadows{samples: map[string][]api.Sample{"face/judge": {sample}}}

	none := New(context.Background(), Options{Shadows: shadows, Apply: func(*config.Config) error { return nil }})
	if _, err := none.Disagreements("face", "judge"); !errors.Is(err, live.ErrUnknownEndpoint) {
		t.Errorf("before any config: %v, want ErrUnknownEndpoint", err)
	}

	c, _ := newStatusController(t, nil, shadows)
	d, err := c.Disagreements("face", "judge") // the endpoint's first shadow
	if err != nil {
		t.Fatal(err)
	}
	if d.Endpoint != "face" || d.Shadow != "judge" || !reflect.DeepEqual(d.Samples, []api.Sample{sample}) {
		t.Errorf("judge's disagreements %+v", d)
	}
	// Compare mode but nothing recorded yet: an empty list (JSON []), not null.
	d, err = c.Disagreements("face", "fresh")
	if err != nil {
		t.Fatal(err)
	}
	if d.Samples == nil || len(d.Samples) != 0 {
		t.Errorf("fresh's disagreements %#v, want an empty non-nil list", d.Samples)
	}
	if _, err := c.Disagreements("face", "mirror"); !errors.Is(err, live.ErrConflict) {
		t.Errorf("a shadow not in compare mode: %v, want ErrConflict", err)
	}
	if _, err := c.Disagreements("face", "nope"); !errors.Is(err, live.ErrUnknownShadow) {
		t.Errorf("an unknown shadow: %v, want ErrUnknownShadow", err)
	}
	if _, err := c.Disagreements("nope", "judge"); !errors.Is(err, live.ErrUnknownEndpoint) {
		t.Errorf("an unknown endpoint: %v, want ErrUnknownEndpoint", err)
	}
	noReader, _ := newStatusController(t, nil, nil)
	if _, err := noReader.Disagreements("face", "judge"); !errors.Is(err, live.ErrConflict) {
		t.Errorf("no shadow reader: %v, want ErrConflict", err)
	}
}
