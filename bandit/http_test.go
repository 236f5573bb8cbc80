package bandit

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/metrics"
)

// The bandit routes: the list, one bandit (404 for what has none), and
// rewards posts with every bad body refused by its status.
func TestBanditRoutes(t *testing.T) {
	cfg := banditConfig(t, "{reward: api}")
	r, _, m := rewardsFor(t, cfg)
	ctrl := control.New(context.Background(), control.Options{Metrics: m, Apply: func(*config.Config) error { return nil }})
	if _, err := ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	mgr := New(Options{Controller: ctrl, Metrics: m})
	h := admin.New(admin.Options{})
	Register(h, mgr, r, func() *config.Config { return cfg })
	for _, c := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/v1/bandits", "", 200, `"endpoint": "rec"`},
		{"GET", "/v1/endpoints/rec/bandit", "", 200, `"phase": "starting"`},
		{"GET", "/v1/endpoints/nope/bandit", "", 404, "unknown endpoint"},
		{"POST", "/v1/endpoints/rec/rewards", "", 400, "body: empty"},
		{"POST", "/v1/endpoints/rec/rewards", `{"rewards": [`, 400, "body: "},
		{"POST", "/v1/endpoints/rec/rewards", `{"rewards": }`, 400, "malformed JSON at byte"},
		{"POST", "/v1/endpoints/rec/rewards", `{"rewards": 3}`, 400, `field \"rewards\" must be`},
		{"POST", "/v1/endpoints/rec/rewards", `{"reward": []}`, 400, `unknown field \"reward\"`},
		{"POST", "/v1/endpoints/rec/rewards", `{"rewards": []} {}`, 400, "unexpected data after the JSON object"},
		{"POST", "/v1/endpoints/rec/rewards", `{"rewards": [], "x": "` + strings.Repeat("y", maxBody) + `"}`, 413, "larger than 1048576 bytes"},
		{"POST", "/v1/endpoints/rec/rewards", `{"rewards": []}`, 400, `\"rewards\" is required`},
		{"POST", "/v1/endpoints/nope/rewards", `{"rewards": [{"id": "1", "user": "u", "value": 1}]}`, 404, "unknown endpoint"},
		{"POST", "/v1/endpoints/rec/rewards", `{"rewards": [{"id": "1", "user": "u", "value": 1}]}`, 200, `"refused"`},
	} {
		req := httptest.NewRequest(c.method, "http://127.0.0.1"+c.path, strings.NewReader(c.body))
		if c.method != "GET" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%s %s %.40q: %d %.300s, want %d with %q", c.method, c.path, c.body, rec.Code, rec.Body.String(), c.code, c.want)
		}
	}
	rec := httptest.NewRecorder()
	writeErr(rec, errors.New("store down"))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("a plain error answered %d, want 500", rec.Code)
	}
}

type failingResults struct{}

func (failingResults) Settle() time.Duration { return 0 }
func (failingResults) Rewards(context.Context, string, time.Time, time.Time) (map[string]Arm, time.Time, error) {
	return nil, time.Time{}, errors.New("redis down")
}

// A manager built without a logger or metrics has working ones: a failed
// update is logged (not a crash) and retried at the next interval.
func TestManagerDefaultsLogAFailedUpdate(t *testing.T) {
	cfg := banditConfig(t, "{reward: header, interval: 10s}")
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ctrl := control.New(context.Background(), control.Options{Metrics: metrics.New(), Now: func() time.Time { return now }, Apply: func(*config.Config) error { return nil }})
	if _, err := ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	mgr := New(Options{Controller: ctrl, Results: failingResults{}, Now: func() time.Time { return now }})
	mgr.Tick(context.Background())
	now = now.Add(10 * time.Second)
	mgr.Tick(context.Background())
	if st, err := mgr.Status("rec"); err != nil || st.Updates != 0 || st.Phase != "warmup" {
		t.Fatalf("after a failed update: %+v %v, want still at the start", st, err)
	}
}

// A bandit that cannot start (another actor owns the endpoint) and an
// update that fails are each logged as a warning, and only then.
func TestManagerLogsWhatFails(t *testing.T) {
	cfg := banditConfig(t, "{reward: header, interval: 10s}")
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ctrl := control.New(context.Background(), control.Options{Metrics: metrics.New(), Now: func() time.Time { return now }, Apply: func(*config.Config) error { return nil }})
	if _, err := ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	var results fakeResults
	mgr := New(Options{Controller: ctrl, Results: &results, Logger: zap.New(core), Now: func() time.Time { return now }})
	mgr.Tick(context.Background()) // starts
	now = now.Add(10 * time.Second)
	mgr.Tick(context.Background()) // updates
	if n := logs.FilterLevelExact(zap.WarnLevel).Len(); n != 0 {
		t.Fatalf("%d warnings after a start and an update that worked: %v", n, logs.All())
	}
	mgr.opts.Results = failingResults{}
	now = now.Add(10 * time.Second)
	mgr.Tick(context.Background())
	if n := logs.FilterMessage("bandit update failed; retried at its next interval").Len(); n != 1 {
		t.Fatalf("a failed update logged %d times, want once", n)
	}
	// Another actor owns a second bandit endpoint: its start is refused.
	cfg2 := banditConfig(t, "{reward: header, interval: 10s}")
	other := cfg2.Endpoints[0]
	other.Name, other.Match = "rec2", config.Match{PathPrefix: "/rec2"}
	cfg2.Endpoints = append(cfg2.Endpoints, other)
	if _, err := ctrl.SetFileConfig(cfg2); err != nil {
		t.Fatal(err)
	}
	if _, err := ctrl.ApplyAutomated("rec2", control.AutoChange{Actor: "rollout", Plan: "p1", Action: "rollout_start", Owner: "rollout plan p1",
		State: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	mgr.Tick(context.Background())
	if n := logs.FilterMessage("bandit could not start").Len(); n != 1 {
		t.Fatalf("a refused start logged %d times, want once: %v", n, logs.All())
	}
}
