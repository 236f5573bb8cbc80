package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

// rewardBackend answers with its name and an x-modelsplit-reward of 1
// with probability rate, else 0.
func rewardBackend(t *testing.T, name string, rate float64, seed uint64) *httpBackend {
	b := startHTTPBackend(t, name)
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 1))
	b.setHandler(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hit := rng.Float64() < rate
		mu.Unlock()
		reward := "0"
		if hit {
			reward = "1"
		}
		w.Header().Set("x-modelsplit-reward", reward)
		_, _ = w.Write([]byte(name))
	})
	return b
}

func endpointWeights(t *testing.T, admin, endpoint string) map[string]int {
	t.Helper()
	var st api.EndpointStatus
	if code := getJSON(t, "http://"+admin+"/v1/endpoints/"+endpoint, "", &st); code != http.StatusOK {
		t.Fatalf("GET endpoint: HTTP %d", code)
	}
	out := map[string]int{}
	for _, v := range st.Variants {
		out[v.Name] = v.Weight
	}
	return out
}

// A bandit through real Envoy, rewards from the model servers' headers
// (Bernoulli 4%, 5%, 6%): the best arm's weight rises above 50% by itself,
// no returning user changes variant, and a second replica on the same
// Redis serves the same weights within one update interval.
func TestBanditMovesTrafficToTheBestArm(t *testing.T) {
	rs := testredis.Start(t)
	a, b, c := rewardBackend(t, "a", 0.04, 1), rewardBackend(t, "b", 0.05, 2), rewardBackend(t, "c", 0.06, 3)
	body := fmt.Sprintf(`store: {redis: %q, timeout: 1s}
endpoints:
  - name: rec
    match: {path_prefix: /rec}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: [%q]}
      - {name: b, weight: 1, backends: [%q]}
      - {name: c, weight: 1, backends: [%q]}
    bandit: {reward: header, interval: 1s, warmup: 2s, floor: 1}
`, rs.URL(), a.addr, b.addr, c.addr)
	args := []string{"-results-window", "1s"}
	g := startGatewayArgs(t, args, body, "extproc_timeout: 2s", "/rec/predict", "x-user-id", "probe")
	p2 := newPorts(t)
	var err error
	if p2.xds, err = freePort(); err != nil {
		t.Fatal(err)
	}
	replica := startServe(t, tempConfig(t, p2.listenYAML()+body), p2, args...)

	returning := userNames("ret", 300)
	first := g.route(t, "/rec/predict", returning)
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				r, err := g.client.get("/rec/predict", "x-user-id", fmt.Sprintf("new-%d-%d", w, i))
				sent.Add(1)
				if err != nil || r.status != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	var best map[string]int
	for time.Since(start) < 150*time.Second {
		best = endpointWeights(t, g.admin(), "rec")
		if best["c"] > 5000 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	reached := time.Since(start)
	cancel()
	wg.Wait()
	var st api.BanditStatus
	getJSON(t, "http://"+g.admin()+"/v1/endpoints/rec/bandit", "", &st)
	t.Logf("after %.1fs and %d requests (%d failed): weights %v; arms %+v", reached.Seconds(), sent.Load(), failed.Load(), best, st.Arms)
	if best["c"] <= 5000 {
		t.Fatalf("the best arm's weight is %d of 10,000 after %v, want above half", best["c"], reached)
	}
	if failed.Load() > 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	// Returning users kept their variant while the weights moved.
	moved := 0
	for u, v := range g.route(t, "/rec/predict", returning) {
		if first[u] != v {
			moved++
		}
	}
	if moved != 0 {
		t.Errorf("%d of %d returning users changed variant", moved, len(returning))
	}
	// The other replica serves the same weights within one interval (1s).
	deadline := time.Now().Add(2 * time.Second)
	for {
		w1, w2 := endpointWeights(t, g.admin(), "rec"), endpointWeights(t, replica.admin, "rec")
		if fmt.Sprint(w1) == fmt.Sprint(w2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas disagree after 2s: %v vs %v", w1, w2)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var audit api.AuditList
	getJSON(t, "http://"+g.admin()+"/v1/audit", "", &audit)
	updates := 0
	for _, e := range audit.Entries {
		if e.Actor == "bandit" {
			updates++
		}
	}
	if updates == 0 || updates > 5 {
		t.Errorf("%d bandit audit entries, want a few merged ones", updates)
	}
	out := mustCLI(t, g.admin(), "bandit", "status", "rec")
	if !strings.Contains(out, "P(BEST)") || !strings.Contains(out, "c ") {
		t.Errorf("modelsplit bandit status:\n%s", out)
	}
	if v, _ := g.serve.current().metric(`modelsplit_bandit_rewards_total{endpoint="rec",result="counted",source="header"}`); v == 0 {
		t.Errorf("no rewards counted in modelsplit_bandit_rewards_total")
	}
	g.envoy.assertNoRejections()
}
