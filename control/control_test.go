package control

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control/httpapi"
	"github.com/modelsplit/modelsplit/control/live"
)

const controlConfig = `
endpoints:
  - name: face
    match: {path_prefix: /face}
    sticky: {header: x-user-id}
    variants:
      - {name: stable, weight: 90, backends: ["10.0.0.1:80"]}
      - {name: canary, weight: 10, backends: ["10.0.0.2:80"]}
    shadows:
      - {name: mirror, percent: 10, backends: ["10.0.0.3:80"]}
      - {name: parked, percent: 10, paused: true, backends: ["10.0.0.4:80"]}
`

// newController is a Controller over controlConfig whose Apply records the
// configs it served (and refuses them while refuse is set).
type applied struct {
	configs []*config.Config
	refuse  error
}

func newController(t *testing.T, p Persister) (*Controller, *applied) {
	t.Helper()
	cfg, err := config.Parse("control.yaml", []byte(controlConfig))
	if err != nil {
		t.Fatal(err)
	}
	a := &applied{}
	c := New(context.Background(), Options{Persister: p, Apply: func(c *config.Config) error {
		if a.refuse != nil {
			return a.refuse
		}
		a.configs = append(a.configs, c)
		return nil
	}})
	if _, err := c.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return c, a
}

func weightsOf(t *testing.T, cfg *config.Config) map[string]int {
	t.Helper()
	e, ok := cfg.Endpoint("face")
	if !ok {
		t.Fatal("no endpoint face")
	}
	return live.WeightsOf(e)
}

func pausedOf(t *testing.T, cfg *config.Config) map[string]bool {
	t.Helper()
	e, _ := cfg.Endpoint("face")
	out := map[string]bool{}
	for _, s := range e.Shadows {
		out[s.Name] = s.Paused
	}
	return out
}

// status is the HTTP status the admin API answers err with.
func status(err error) int {
	if err == nil {
		return 0
	}
	return httpapi.Status(err)
}

func TestSetWeightsRollbackReset(t *testing.T) {
	c, a := newController(t, nil)
	file := map[string]int{"stable": 90, "canary": 10}
	who := Requester{Remote: "127.0.0.1:1", UserAgent: "test"}

	res, err := c.SetWeights("face", map[string]int{"stable": 50, "canary": 50}, who)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(res.Weights, map[string]int{"stable": 50, "canary": 50}) || !maps.Equal(res.Previous, file) || !res.Persisted {
		t.Fatalf("set_weights result %+v", res)
	}
	if got := weightsOf(t, a.configs[len(a.configs)-1]); got["canary"] != 50 {
		t.Fatalf("served weights %v after set_weights", got)
	}
	if got := weightsOf(t, c.Effective()); got["canary"] != 50 {
		t.Fatalf("effective weights %v", got)
	}
	if res.Audit.Action != "set_weights" || res.Audit.Endpoint != "face" || res.Audit.Remote != who.Remote || res.Audit.UserAgent != who.UserAgent {
		t.Fatalf("audit %+v", res.Audit)
	}

	if _, err := c.Promote("face", "canary", who); err != nil {
		t.Fatal(err)
	}
	if got := weightsOf(t, c.Effective()); got["canary"] != 100 || got["stable"] != 0 {
		t.Fatalf("after promote canary: %v, want canary 100 (the whole weight), stable 0", got)
	}
	if _, err := c.Rollback("face", who); err != nil {
		t.Fatal(err)
	}
	if got := weightsOf(t, c.Effective()); got["canary"] != 50 {
		t.Fatalf("after rollback: %v, want the 50/50 in force before promote", got)
	}
	if _, err := c.Reset("face", who); err != nil {
		t.Fatal(err)
	}
	if got := weightsOf(t, c.Effective()); !maps.Equal(got, file) {
		t.Fatalf("after reset: %v, want the file's %v", got, file)
	}
	if _, err := c.Reset("face", who); status(err) != 409 {
		t.Fatalf("reset with no override: %v, want 409", err)
	}
	// Reset kept the override in the history: rollback brings it back.
	if _, err := c.Rollback("face", who); err != nil {
		t.Fatal(err)
	}
	if got := weightsOf(t, c.Effective()); got["canary"] != 50 {
		t.Fatalf("rollback after reset: %v, want 50/50 back", got)
	}
	audit := c.Audit(0)
	var actions []string
	for _, e := range audit {
		actions = append(actions, e.Action)
	}
	if strings.Join(actions, " ") != "rollback reset rollback promote set_weights" {
		t.Fatalf("audit, newest first: %v", actions)
	}
	same := func(x, y int, two []api.AuditEntry) bool {
		return two[x].Action == audit[y].Action && two[x].Time.Equal(audit[y].Time)
	}
	if two := c.Audit(2); len(two) != 2 || !same(0, 0, two) || !same(1, 1, two) {
		t.Fatalf("Audit(2) = %+v, want the two newest", two)
	}
	if all := c.Audit(len(audit) + 10); len(all) != len(audit) {
		t.Fatalf("Audit(more than there are) = %d entries, want %d", len(all), len(audit))
	}
}

func TestSettingTheFileWeightsDropsTheOverride(t *testing.T) {
	c, _ := newController(t, nil)
	if _, err := c.SetWeights("face", map[string]int{"stable": 50, "canary": 50}, Requester{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetWeights("face", map[string]int{"stable": 90, "canary": 10}, Requester{}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	es := c.state.Endpoints["face"]
	c.mu.Unlock()
	if es == nil || es.Weights != nil || es.Since != nil {
		t.Fatalf("weights set back to the file's: state %+v, want no override", es)
	}
	if _, err := c.Reset("face", Requester{}); status(err) != 409 {
		t.Fatalf("reset: %v, want 409 (the file is in force)", err)
	}
}

func TestChangesRefused(t *testing.T) {
	c, a := newController(t, nil)
	if _, err := c.SetWeights("nope", map[string]int{"stable": 1, "canary": 1}, Requester{}); status(err) != 404 || !strings.Contains(err.Error(), "face") {
		t.Fatalf("unknown endpoint: %v, want 404 naming the endpoints", err)
	}
	if _, err := c.Promote("face", "", Requester{}); status(err) != 400 {
		t.Fatalf("promote without a variant: %v", err)
	}
	if _, err := c.Promote("face", "nope", Requester{}); status(err) != 400 {
		t.Fatalf("promote an unknown variant: %v", err)
	}
	if _, err := c.Rollback("face", Requester{}); status(err) != 409 {
		t.Fatalf("rollback without history: %v", err)
	}
	if _, err := c.SetShadowPaused("face", "nope", true, Requester{}); status(err) != 404 || !strings.Contains(err.Error(), "mirror, parked") {
		t.Fatalf("pause an unknown shadow: %v", err)
	}
	a.refuse = errors.New("not today")
	before := weightsOf(t, c.Effective())
	if _, err := c.SetWeights("face", map[string]int{"stable": 1, "canary": 1}, Requester{}); status(err) != 422 || !strings.Contains(err.Error(), "not today") {
		t.Fatalf("refused by Apply: %v, want 422", err)
	}
	if got := weightsOf(t, c.Effective()); !maps.Equal(got, before) {
		t.Fatalf("a refused change took effect: %v", got)
	}
	if len(c.Audit(0)) != 0 {
		t.Fatalf("refused changes audited: %+v", c.Audit(0))
	}
	none := New(context.Background(), Options{Apply: func(*config.Config) error { return nil }})
	if _, err := none.SetWeights("face", map[string]int{"stable": 1, "canary": 1}, Requester{}); err == nil {
		t.Fatal("a change before any config was loaded succeeded")
	}
}

func TestPauseAndResumeShadows(t *testing.T) {
	c, _ := newController(t, nil)
	res, err := c.SetShadowPaused("face", "mirror", true, Requester{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Paused, ",") != "mirror,parked" || res.Audit.Action != "pause" || res.Audit.Shadow != "mirror" {
		t.Fatalf("pause: %+v", res)
	}
	if p := pausedOf(t, c.Effective()); !p["mirror"] || !p["parked"] {
		t.Fatalf("effective paused %v", p)
	}
	res, err = c.SetShadowPaused("face", "parked", false, Requester{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Paused, ",") != "mirror" || res.Audit.Action != "resume" {
		t.Fatalf("resume parked: %+v", res)
	}
	// Resuming mirror brings it back to the file's value: no override left
	// for it, only parked's.
	if _, err := c.SetShadowPaused("face", "mirror", false, Requester{}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	shadows := maps.Clone(c.state.Endpoints["face"].Shadows)
	c.mu.Unlock()
	if len(shadows) != 1 || shadows["parked"] != (live.ShadowState{Paused: false, Base: true}) {
		t.Fatalf("shadow overrides %+v, want only parked resumed against a paused file", shadows)
	}
	// Reset drops shadow overrides too.
	if _, err := c.Reset("face", Requester{}); err != nil {
		t.Fatal(err)
	}
	if p := pausedOf(t, c.Effective()); p["mirror"] || !p["parked"] {
		t.Fatalf("after reset: %v, want the file's (parked paused)", p)
	}
}

func TestRollbackHistoryIsBounded(t *testing.T) {
	c, _ := newController(t, nil)
	for i := 1; i <= live.MaxHistory+5; i++ {
		if _, err := c.SetWeights("face", map[string]int{"stable": i, "canary": 1}, Requester{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < live.MaxHistory; i++ {
		if _, err := c.Rollback("face", Requester{}); err != nil {
			t.Fatalf("rollback %d of %d: %v", i+1, live.MaxHistory, err)
		}
	}
	if got := weightsOf(t, c.Effective()); got["stable"] != 5 {
		t.Fatalf("after %d rollbacks: %v, want stable 5 (the oldest weights kept)", live.MaxHistory, got)
	}
	if _, err := c.Rollback("face", Requester{}); status(err) != 409 {
		t.Fatalf("rollback past the kept history: %v, want 409", err)
	}
}

func TestLiveStateSurvivesARestart(t *testing.T) {
	p := FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}
	c, _ := newController(t, p)
	if _, err := c.SetWeights("face", map[string]int{"stable": 30, "canary": 70}, Requester{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetShadowPaused("face", "mirror", true, Requester{}); err != nil {
		t.Fatal(err)
	}
	again, _ := newController(t, p)
	if got := weightsOf(t, again.Effective()); got["canary"] != 70 {
		t.Fatalf("after a restart: %v, want the live 30/70", got)
	}
	if p := pausedOf(t, again.Effective()); !p["mirror"] {
		t.Fatalf("after a restart: paused %v, want mirror paused", p)
	}
	if n := len(again.Audit(0)); n != 2 {
		t.Fatalf("after a restart: %d audit entries, want 2", n)
	}
}
