package control

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// TestSyncIntervalDefault: an unset or negative sync interval is the
// documented 1 s (a ticker of 0 would panic in Run); a set one is kept.
func TestSyncIntervalDefault(t *testing.T) {
	for _, tc := range []struct{ set, want time.Duration }{{0, time.Second}, {-time.Millisecond, time.Second}, {time.Nanosecond, time.Nanosecond}, {250 * time.Millisecond, 250 * time.Millisecond}} {
		c := New(context.Background(), Options{SyncInterval: tc.set, Apply: func(*config.Config) error { return nil }})
		if got := c.opts.SyncInterval; got != tc.want {
			t.Errorf("SyncInterval %v: in use %v, want %v", tc.set, got, tc.want)
		}
	}
}

// TestWeightGaugesFollowChanges: modelsplit_control_weight shows the
// weights in force after each change, a reset and a reload that drops a
// variant (its series deleted).
func TestWeightGaugesFollowChanges(t *testing.T) {
	cfg, err := config.Parse("control.yaml", []byte(controlConfig))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	c := New(context.Background(), Options{Metrics: m, Apply: func(*config.Config) error { return nil }})
	if _, err := c.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	gauges := func(want map[string]float64) {
		t.Helper()
		for v, w := range want {
			if got := testutil.ToFloat64(m.ControlWeight.WithLabelValues("face", v)); got != w {
				t.Errorf("control_weight{face,%s} = %v, want %v", v, got, w)
			}
		}
	}
	gauges(map[string]float64{"stable": 90, "canary": 10})
	if _, err := c.SetWeights("face", map[string]int{"stable": 30, "canary": 70}, Requester{}); err != nil {
		t.Fatal(err)
	}
	gauges(map[string]float64{"stable": 30, "canary": 70})
	if _, err := c.Promote("face", "canary", Requester{}); err != nil {
		t.Fatal(err)
	}
	gauges(map[string]float64{"stable": 0, "canary": 100})
	if _, err := c.Reset("face", Requester{}); err != nil {
		t.Fatal(err)
	}
	gauges(map[string]float64{"stable": 90, "canary": 10})

	// A reload without canary: its series goes.
	one, err := config.Parse("control.yaml", []byte(strings.Replace(controlConfig,
		"      - {name: canary, weight: 10, backends: [\"10.0.0.2:80\"]}\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetFileConfig(one); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.ControlWeight); n != 1 {
		t.Errorf("%d control_weight series after canary was removed, want 1 (stable's)", n)
	}
}

// TestAuditLogNamesTheActor: each change is logged; an automated actor's
// with its actor, plan, step and count, a person's without them.
func TestAuditLogNamesTheActor(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	cfg, err := config.Parse("control.yaml", []byte(controlConfig))
	if err != nil {
		t.Fatal(err)
	}
	c := New(context.Background(), Options{Logger: zap.New(core), Apply: func(*config.Config) error { return nil }})
	if _, err := c.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetWeights("face", map[string]int{"stable": 50, "canary": 50}, Requester{Remote: "10.1.1.1:5"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyAutomated("face", AutoChange{Actor: "rollout", Plan: "p7", Step: 3, Action: "rollout_step",
		Weights: map[string]int{"stable": 40, "canary": 60}}); err != nil {
		t.Fatal(err)
	}
	changes := logs.FilterMessage("live change").All()
	if len(changes) != 2 {
		t.Fatalf("%d live change log entries, want 2", len(changes))
	}
	person, auto := changes[0].ContextMap(), changes[1].ContextMap()
	if person["action"] != "set_weights" || person["remote"] != "10.1.1.1:5" {
		t.Errorf("a person's change logged %v", person)
	}
	for _, k := range []string{"actor", "plan", "step", "count"} {
		if _, ok := person[k]; ok {
			t.Errorf("a person's change logged %s: %v", k, person)
		}
	}
	if auto["action"] != "rollout_step" || auto["actor"] != "rollout" || auto["plan"] != "p7" || auto["step"] != int64(3) || auto["count"] != int64(1) {
		t.Errorf("an automated change logged %v, want actor rollout, plan p7, step 3, count 1", auto)
	}
}

// TestSupersedingReloadRaisesTheRevision: a reload that supersedes an
// override saves the state at the next revision; one that supersedes
// nothing saves nothing.
func TestSupersedingReloadRaisesTheRevision(t *testing.T) {
	p := FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}
	c, _ := newController(t, p)
	if st, err := p.Load(context.Background()); err != nil || st != nil {
		t.Fatalf("after loading the file: stored %+v, %v; want nothing saved", st, err)
	}
	if _, err := c.SetWeights("face", map[string]int{"stable": 50, "canary": 50}, Requester{}); err != nil {
		t.Fatal(err)
	}
	same, _ := config.Parse("control.yaml", []byte(controlConfig))
	if _, err := c.SetFileConfig(same); err != nil {
		t.Fatal(err)
	}
	if st, _ := p.Load(context.Background()); st == nil || st.Revision != 1 {
		t.Fatalf("after reloading the same file: stored state present %v, want revision 1 still", st != nil)
	}
	edited, err := config.Parse("control.yaml", []byte(strings.Replace(controlConfig, "weight: 90", "weight: 85", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetFileConfig(edited); err != nil {
		t.Fatal(err)
	}
	st, err := p.Load(context.Background())
	if err != nil || st == nil {
		t.Fatalf("after a superseding reload: stored %v, %v", st, err)
	}
	if st.Revision != 2 {
		t.Fatalf("after a superseding reload: stored revision %d, want 2", st.Revision)
	}
	if st.Endpoints["face"] != nil && st.Endpoints["face"].Weights != nil {
		t.Errorf("the superseded override is still stored: %+v", st.Endpoints["face"])
	}
	c.mu.Lock()
	mem := c.state.Revision
	c.mu.Unlock()
	if mem != 2 {
		t.Errorf("revision in memory %d, want 2", mem)
	}
}

// TestStoreUnreadableAtStart: a store that cannot be read at start shows
// as not ready, with the stored revision unknown (-1) in the gauge and the
// readiness error; once it can be read the next sync clears both.
func TestStoreUnreadableAtStart(t *testing.T) {
	srv := testredis.Start(t)
	rc := newRedisClient(t, srv)
	p := RedisPersister{Client: rc, Key: "start:control"}
	srv.Kill()
	m := metrics.New()
	c := New(context.Background(), Options{Metrics: m, Persister: p, Apply: func(*config.Config) error { return nil }})
	cfg, _ := config.Parse("control.yaml", []byte(controlConfig))
	if _, err := c.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.ControlStateRevision.WithLabelValues("store")); got != -1 {
		t.Errorf("control_state_revision{store} = %v with the store unreadable, want -1", got)
	}
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "(revision 0 here, -1 stored)") {
		t.Errorf("readiness with the store unreadable: %v, want revision 0 here, -1 stored", err)
	}
	srv.Restart()
	// A sync reads the revision within a second; on a loaded machine the
	// first after the restart may not: sync until ready, with a wide
	// margin.
	for deadline := time.Now().Add(15 * time.Second); ; {
		c.sync(context.Background())
		err := c.Check()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness once the store is readable (and empty): %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.ControlStateRevision.WithLabelValues("store")); got != 0 {
		t.Errorf("control_state_revision{store} = %v once the store is readable and empty, want 0", got)
	}
}

func newRedisClient(t *testing.T, srv *testredis.Server) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rc.Close() })
	return rc
}
