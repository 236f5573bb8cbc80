package bandit

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/metrics"
)

// fakeResults stands in for the stats windows: the test adds rewards,
// the manager reads those added since its last update.
type fakeResults struct {
	mu   sync.Mutex
	adds []struct {
		at   time.Time
		arms map[string]Arm
	}
}

func (f *fakeResults) Settle() time.Duration { return 0 }

func (f *fakeResults) Rewards(_ context.Context, _ string, since, until time.Time) (map[string]Arm, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out, through := map[string]Arm{}, since
	for _, a := range f.adds {
		if a.at.After(since) && !a.at.After(until) {
			for k, v := range a.arms {
				o := out[k]
				o.N, o.Sum, o.SumSq = o.N+v.N, o.Sum+v.Sum, o.SumSq+v.SumSq
				out[k] = o
			}
			through = a.at
		}
	}
	return out, through, nil
}

func TestManagerMovesWeightToTheBestArm(t *testing.T) {
	cfg := banditConfig(t, "{reward: header, interval: 10s, warmup: 30s, floor: 2}")
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	m := metrics.New()
	ctrl := control.New(context.Background(), control.Options{Metrics: m, Now: func() time.Time { return now }, Apply: func(*config.Config) error { return nil }})
	if _, err := ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	res := &fakeResults{}
	mgr := New(Options{Controller: ctrl, Results: res, Metrics: m, Now: func() time.Time { return now }})
	rng := rand.New(rand.NewPCG(1, 2))
	rates := map[string]float64{"a": 0.04, "b": 0.05, "c": 0.06}
	weights := func() map[string]int {
		e, _ := ctrl.Effective().Endpoint("rec")
		return currentWeights(e)
	}
	mgr.Tick(context.Background())
	if w := weights(); w["a"]+w["b"]+w["c"] != 10000 || w["a"] < 3333 || w["b"] < 3333 || w["c"] < 3333 {
		t.Fatalf("at the start: %v, want equal weights", w)
	}
	if _, err := ctrl.SetWeights("rec", map[string]int{"a": 1, "b": 1, "c": 8}, control.Requester{}); err == nil || !strings.Contains(err.Error(), "bandit") {
		t.Errorf("a person's set-weights on a bandit endpoint: %v, want refused naming the bandit", err)
	}
	for step := range 60 {
		now = now.Add(10 * time.Second)
		w := weights()
		add := map[string]Arm{}
		for arm, p := range rates {
			n := 3000 * w[arm] / 10000
			var a Arm
			for range n {
				x := 0.0
				if rng.Float64() < p {
					x = 1
				}
				a.N++
				a.Sum += x
				a.SumSq += x * x
			}
			add[arm] = a
		}
		res.mu.Lock()
		res.adds = append(res.adds, struct {
			at   time.Time
			arms map[string]Arm
		}{now.Add(-time.Second), add})
		res.mu.Unlock()
		mgr.Tick(context.Background())
		st, err := mgr.Status("rec")
		if err != nil {
			t.Fatal(err)
		}
		if step < 2 && !st.Warmup {
			t.Fatalf("update %d: out of the 30s warm-up already", step)
		}
	}
	st, _ := mgr.Status("rec")
	w := weights()
	t.Logf("after 60 updates: weights %v; arms %+v", w, st.Arms)
	if w["c"] < 5000 || w["a"] < 200 || w["b"] < 200 {
		t.Errorf("weights %v: want c above 50%% and every arm at least the 2%% floor", w)
	}
	n := 0
	for _, a := range ctrl.Audit(500) {
		if a.Actor == Actor {
			n++
		}
	}
	if n > 4 {
		t.Errorf("%d bandit audit entries after 60 updates, want them merged", n)
	}
	// The bandit leaves the config: the weights before it are back.
	cfg2 := banditConfig(t, "{reward: header}")
	cfg2.Endpoints[0].Bandit = nil
	if _, err := ctrl.SetFileConfig(cfg2); err != nil {
		t.Fatal(err)
	}
	mgr.Tick(context.Background())
	if w := weights(); w["a"] != 1 || w["b"] != 1 || w["c"] != 1 {
		t.Errorf("after the bandit left the config: %v, want the file's 1/1/1", w)
	}
}

// The control arm keeps its share; the floor holds for the others.
func TestWeightsWithAControlArm(t *testing.T) {
	cfg := banditConfig(t, "{control: {variant: a, weight: 20}, floor: 5}")
	e, _ := cfg.Endpoint("rec")
	w := weightsFor(e, []float64{0, 1}) // b never best, c always
	if w["a"] != 2000 || w["b"] != 500 || w["c"] != 7500 {
		t.Fatalf("weights %v, want a (control) 2000, b at the 5%% floor 500, c the rest 7500", w)
	}
}

// Another actor's state (a rollout's) on an endpoint without a bandit is
// not the bandit's to end.
func TestBanditLeavesOtherActorsAlone(t *testing.T) {
	cfg := banditConfig(t, "{reward: header}")
	cfg.Endpoints[0].Bandit = nil
	m := metrics.New()
	ctrl := control.New(context.Background(), control.Options{Metrics: m, Apply: func(*config.Config) error { return nil }})
	if _, err := ctrl.SetFileConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := ctrl.ApplyAutomated("rec", control.AutoChange{Actor: "rollout", Plan: "rec@1", Step: 1, Action: "rollout_start",
		Weights: map[string]int{"a": 5, "b": 5, "c": 90}, State: []byte(`{"kind":"rollout","plan":"rec@1","phase":"running"}`), Owner: "rollout plan rec@1"}); err != nil {
		t.Fatal(err)
	}
	New(Options{Controller: ctrl, Metrics: m}).Tick(context.Background())
	raw, ok := ctrl.ActorState("rec")
	if !ok || !strings.Contains(string(raw), `"kind":"rollout"`) {
		t.Fatalf("the rollout's state after a bandit tick: %s %v", raw, ok)
	}
	if e, _ := ctrl.Effective().Endpoint("rec"); currentWeights(e)["c"] != 90 {
		t.Fatalf("the bandit changed the rollout's weights: %v", currentWeights(e))
	}
}
