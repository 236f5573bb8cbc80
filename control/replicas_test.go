package control

import (
	"context"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/config"
)

// Two replicas sharing a store: a change made on one is adopted by the
// other at its next sync, in both directions (each change raises the
// revision).
func TestReplicaAdoptsNewerState(t *testing.T) {
	p := FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}
	a, _ := newController(t, p)
	b, served := newController(t, p)
	ctx := context.Background()

	if _, err := a.SetWeights("face", map[string]int{"stable": 30, "canary": 70}, Requester{}); err != nil {
		t.Fatal(err)
	}
	b.sync(ctx)
	if got := weightsOf(t, b.Effective()); got["canary"] != 70 {
		t.Fatalf("replica b after sync: %v, want a's 30/70", got)
	}
	if got := weightsOf(t, served.configs[len(served.configs)-1]); got["canary"] != 70 {
		t.Fatalf("replica b served %v, want a's 30/70", got)
	}
	if _, err := b.Promote("face", "stable", Requester{}); err != nil {
		t.Fatal(err)
	}
	a.sync(ctx)
	if got := weightsOf(t, a.Effective()); got["stable"] != 100 || got["canary"] != 0 {
		t.Fatalf("replica a after b promoted stable: %v", got)
	}
	if n := len(a.Audit(0)); n != 2 {
		t.Fatalf("replica a's audit after adopting: %d entries, want 2", n)
	}
	// Nothing newer: a sync changes nothing.
	before := weightsOf(t, a.Effective())
	a.sync(ctx)
	if got := weightsOf(t, a.Effective()); !maps.Equal(got, before) {
		t.Fatalf("sync without news changed %v to %v", before, got)
	}
}

// A config file that changes an endpoint's weights supersedes the live
// override made against the old ones: the file's weights are in force, the
// override is gone (also after a restart), and the audit says why.
func TestFileChangeSupersedesTheOverride(t *testing.T) {
	p := FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}
	c, _ := newController(t, p)
	if _, err := c.SetWeights("face", map[string]int{"stable": 50, "canary": 50}, Requester{}); err != nil {
		t.Fatal(err)
	}
	edited, err := config.Parse("control.yaml", []byte(strings.Replace(strings.Replace(controlConfig, "weight: 90", "weight: 80", 1), "weight: 10", "weight: 20", 1)))
	if err != nil {
		t.Fatal(err)
	}
	eff, err := c.SetFileConfig(edited)
	if err != nil {
		t.Fatal(err)
	}
	if got := weightsOf(t, eff); got["stable"] != 80 || got["canary"] != 20 {
		t.Fatalf("after the file changed the weights: %v, want the file's 80/20", got)
	}
	audit := c.Audit(1)
	if len(audit) != 1 || audit[0].Action != "superseded" || audit[0].Endpoint != "face" {
		t.Fatalf("newest audit entry %+v, want a superseded override", audit)
	}
	restarted := New(context.Background(), Options{Persister: p, Apply: func(*config.Config) error { return nil }})
	if eff, err := restarted.SetFileConfig(edited); err != nil || weightsOf(t, eff)["canary"] != 20 || len(restarted.Audit(0)) != 2 {
		t.Fatalf("after a restart: %v %v, audit %d entries; want the file's weights and both entries kept", eff, err, len(restarted.Audit(0)))
	}
}
