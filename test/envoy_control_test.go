package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Scenario: clients cannot choose. With ext_proc up and with it stopped,
// client-sent x-modelsplit-variant and x-modelsplit-shadow-<s> change
// neither the route nor a mirror, and the upstream sees only modelsplit's
// values. Nor can a backend claim another variant or a failover: the
// served-variant headers it sends are replaced by the answering host's
// (variant routes and the weighted fallback alike).
func TestEnvoyClientsCannotChoose(t *testing.T) {
	a := startHTTPBackend(t, "a", "x-modelsplit-variant", "x-modelsplit-shadow-s")
	b := startHTTPBackend(t, "b", "x-modelsplit-variant", "x-modelsplit-shadow-s")
	s := startHTTPBackend(t, "s")
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 50, backends: [%q]}
      - {name: b, weight: 50, backends: [%q]}
    shadows:
      - {name: s, percent: 20, backends: [%q]}
`, a.addr, b.addr, s.addr), "extproc_timeout: 2s", "/model/predict", "x-user-id", "probe")
	for _, be := range []*httpBackend{a, b} {
		name := be.name
		be.setHandler(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("x-modelsplit-variant", "forged")
			w.Header().Set("x-modelsplit-failover-from", "forged")
			_, _ = io.WriteString(w, name)
		})
	}
	users := userNames("u", 1000)
	honest := g.route(t, "/model/predict", users)
	waitMirrored(t, s, 0)
	sampled := s.users()
	if len(sampled) < 100 || len(sampled) > 300 {
		t.Fatalf("%d of 1,000 users mirrored at 20%%", len(sampled))
	}

	spoof := func(u string) []string {
		other := map[string]string{"a": "b", "b": "a"}[honest[u]]
		return []string{"x-modelsplit-variant", other, "x-modelsplit-shadow-s", "model/s", "X-Modelsplit-Variant", other}
	}
	check := func(phase string, want func(u string) string) {
		t.Helper()
		before, countBefore := s.users(), s.count()
		got := map[string]string{}
		var mu sync.Mutex
		forEach(users, 16, func(u string) {
			r, err := g.client.get("/model/predict", append([]string{"x-user-id", u}, spoof(u)...)...)
			if err != nil || r.status != 200 {
				t.Errorf("%s: user %s: %v %d", phase, u, err, r.status)
				return
			}
			if r.variant != r.body || r.header.Get("x-modelsplit-failover-from") != "" {
				t.Errorf("%s: user %s answered by %s with x-modelsplit-variant %q, x-modelsplit-failover-from %q: the backend's own",
					phase, u, r.body, r.variant, r.header.Get("x-modelsplit-failover-from"))
			}
			mu.Lock()
			got[u] = r.body
			mu.Unlock()
		})
		for _, u := range users {
			if w := want(u); got[u] != w {
				t.Fatalf("%s: user %s sent x-modelsplit-variant %s and landed on %s, want %s", phase, u, spoof(u)[1], got[u], w)
			}
		}
		// Mirrors: only the sampled users again (with ext_proc up), nobody
		// (with it down). Mirrors are fire-and-forget: let them land.
		if phase == "ext_proc up" {
			waitMirrored(t, s, countBefore)
		} else {
			time.Sleep(300 * time.Millisecond)
		}
		after := s.users()
		for _, u := range users {
			n := after[u] - before[u]
			switch {
			case n > 0 && (phase == "ext_proc down" || sampled[u] == 0):
				t.Errorf("%s: user %s (not sampled) reached the shadow by sending x-modelsplit-shadow-s", phase, u)
			case phase == "ext_proc up" && sampled[u] > 0 && n != 1:
				t.Errorf("%s: sampled user %s reached the shadow %d times for one request", phase, u, n)
			}
		}
	}
	check("ext_proc up", func(u string) string { return honest[u] })
	// Every value the variants saw is modelsplit's own: their name.
	for _, be := range []*httpBackend{a, b} {
		for v, n := range be.headerValues("x-modelsplit-variant") {
			if v != be.name {
				t.Errorf("backend %s saw x-modelsplit-variant %q on %d requests", be.name, v, n)
			}
		}
		for v, n := range be.headerValues("x-modelsplit-shadow-s") {
			if v != "" && v != "model/s" {
				t.Errorf("backend %s saw x-modelsplit-shadow-s %q on %d requests", be.name, v, n)
			}
		}
	}

	// ext_proc down: Envoy's hash decides (the same users, since weights did
	// not change), the upstream sees no routing header at all, and no
	// mirror is made.
	g.serve.current().kill()
	aBefore, bBefore := a.headerValues("x-modelsplit-variant")[""], b.headerValues("x-modelsplit-variant")[""]
	check("ext_proc down", func(u string) string { return honest[u] })
	if n := a.headerValues("x-modelsplit-variant")[""] - aBefore + b.headerValues("x-modelsplit-variant")[""] - bBefore; n != len(users) {
		t.Errorf("with ext_proc down %d of %d requests reached a variant without any x-modelsplit-variant (a client value got through?)", n, len(users))
	}
	for _, be := range []*httpBackend{a, b} {
		for v, n := range be.headerValues("x-modelsplit-variant") {
			if v != be.name && v != "" {
				t.Errorf("backend %s saw x-modelsplit-variant %q on %d requests", be.name, v, n)
			}
		}
	}
	g.envoy.assertNoRejections()
}

// waitMirrored waits until the shadow's request count stops growing above
// `above` (mirrors are asynchronous) and returns it.
func waitMirrored(t testing.TB, s *httpBackend, above int) int {
	t.Helper()
	last, stable := -1, 0
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n := s.count()
		if n == last && n > above {
			stable++
			if stable >= 5 {
				return n
			}
		} else {
			stable = 0
		}
		last = n
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("shadow count not settled above %d (last %d)", above, last)
	return last
}

// Scenario: live control through Envoy. set-weights, promote, rollback and
// reset reach Envoy's config (config_dump version) and its traffic; a
// variant at weight 0 takes nothing new.
func TestEnvoyLiveControl(t *testing.T) {
	a, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 80, backends: [%q]}
      - {name: b, weight: 20, backends: [%q]}
`, a.addr, b.addr), "extproc_timeout: 2s", "/model/predict", "x-user-id", "probe")
	step := func(what string, args []string, users string, want map[string]float64) {
		t.Helper()
		mustCLI(t, g.admin(), args...)
		waitEnvoyWeights(t, g.envoy, map[string]float64{"model/a": 10000 * want["a"], "model/b": 10000 * want["b"]})
		got := sharesOf(g.route(t, "/model/predict", userNames(users, 4000)))
		assertSharesPP(t, what, got, want, 3)
	}
	old := g.route(t, "/model/predict", userNames("old", 2000))
	step("set-weights 30/70", []string{"set-weights", "model", "a=30", "b=70"}, "s1", map[string]float64{"a": .3, "b": .7})
	// promote a: b goes to 0 and takes nothing new, old users included.
	bBefore := b.count()
	step("promote a", []string{"promote", "model", "a"}, "s2", map[string]float64{"a": 1})
	g.route(t, "/model/predict", userNames("old", 2000))
	if n := b.count() - bBefore; n != 0 {
		t.Errorf("b at weight 0 served %d requests after promote a", n)
	}
	step("rollback (to 30/70)", []string{"rollback", "model"}, "s3", map[string]float64{"a": .3, "b": .7})
	// After the rollback old users are back on their first variant.
	back := g.route(t, "/model/predict", userNames("old", 2000))
	for u, v := range old {
		if back[u] != v {
			t.Fatalf("old user %s was on %s, after promote+rollback on %s", u, v, back[u])
		}
	}
	step("reset (file: 80/20)", []string{"reset", "model"}, "s4", map[string]float64{"a": .8, "b": .2})
	// Envoy's fallback route carries the weights in force.
	if w := fallbackWeights(t, g.envoy); w["model/a"] != 8000 || w["model/b"] != 2000 {
		t.Errorf("Envoy's fallback weights after reset: %v, want model/a 8000, model/b 2000", w)
	}
	g.envoy.assertNoRejections()
}

// fallbackWeights reads the weights Envoy's fallback routes split by
// (cluster name → weight): each weighted cluster's weight in the loaded
// route configuration, or, for a route with runtime_key_prefix, the
// runtime key <prefix>.<cluster> when Envoy holds it (its /runtime), as
// Envoy itself reads them.
func fallbackWeights(t testing.TB, e *envoyProc) map[string]float64 {
	t.Helper()
	rt := e.runtime()
	out := map[string]float64{}
	for _, c := range asList(e.configDump()["configs"]) {
		for _, r := range asList(c["dynamic_route_configs"]) {
			rc, _ := r["route_config"].(map[string]any)
			for _, vh := range asList(rc["virtual_hosts"]) {
				for _, route := range asList(vh["routes"]) {
					ra, _ := route["route"].(map[string]any)
					wc, _ := ra["weighted_clusters"].(map[string]any)
					prefix, _ := wc["runtime_key_prefix"].(string)
					for _, cw := range asList(wc["clusters"]) {
						name, _ := cw["name"].(string)
						w, _ := cw["weight"].(float64)
						if v, ok := rt[prefix+"."+name]; ok && prefix != "" {
							w, _ = strconv.ParseFloat(v, 64)
						}
						out[name] = w
					}
				}
			}
		}
	}
	return out
}

// waitEnvoyWeights waits until Envoy's fallback routes split by the given
// weights (cluster name → weight scaled to 10,000), through its runtime.
func waitEnvoyWeights(t testing.TB, e *envoyProc, want map[string]float64) {
	t.Helper()
	var got map[string]float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got = fallbackWeights(t, e)
		ok := true
		for k, w := range want {
			if got[k] != w {
				ok = false
			}
		}
		if ok {
			return
		}
	}
	t.Fatalf("Envoy's fallback weights %v after 10s, want %v", got, want)
}

// Scenario: restarts. modelsplit restarted under load: Envoy keeps its
// config, no request fails, and it reconnects and ACKs the new process's
// version. Envoy restarted: it gets the current config (live weights
// included) when it connects.
func TestEnvoyRestarts(t *testing.T) {
	a, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    allow_target: true
    variants:
      - {name: a, weight: 50, backends: [%q]}
      - {name: b, weight: 50, backends: [%q]}
`, a.addr, b.addr), "", "/model/predict", "x-user-id", "probe")
	// Load: 8 callers, new user every request, until stopped.
	ctx, cancel := context.WithCancel(context.Background())
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				r, err := g.client.get("/model/predict", "x-user-id", fmt.Sprintf("load-%d-%d", w, i))
				sent.Add(1)
				if err != nil || r.status != http.StatusOK {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%v status %d %q", err, r.status, r.body))
				}
			}
		}(w)
	}
	stopLoad := func() {
		cancel()
		wg.Wait()
	}
	defer stopLoad()

	time.Sleep(500 * time.Millisecond)
	before := g.envoy.statText("cluster_manager.cds.version_text")
	if c := g.envoy.stat("control_plane.connected_state"); c != 1 || before == "" {
		t.Fatalf("before the restart: Envoy's control_plane.connected_state = %d, CDS version %q", c, before)
	}
	g.serve.restart() // SIGTERM, then the same config on the same ports
	// Envoy reconnects and accepts a version the new process has never
	// used. (Identical resources leave config_dump's versions alone: Envoy
	// skips an update whose content it already holds; the CDS version
	// readout shows what it accepted.)
	deadline := time.Now().Add(30 * time.Second)
	for {
		after := g.envoy.statText("cluster_manager.cds.version_text")
		if after != before && g.envoy.stat("control_plane.connected_state") == 1 {
			t.Logf("Envoy reconnected: CDS version %s → %s", before, after)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Envoy did not accept the restarted modelsplit's config within 30s: CDS version %q → %q", before, after)
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.waitDecisions(t, "/model/predict", "a", "b")
	stopLoad()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed across the modelsplit restart; first: %v", n, sent.Load(), firstErr.Load())
	}
	t.Logf("%d requests across the modelsplit restart, %d failed", sent.Load(), failed.Load())

	// A live change, then Envoy restarted: it comes back with the change.
	mustCLI(t, g.admin(), "set-weights", "model", "a=10", "b=90")
	waitEnvoyWeights(t, g.envoy, map[string]float64{"model/a": 1000, "model/b": 9000})
	g.envoy.restart()
	g.client = newGatewayClient(g.port)
	g.client.waitRouted(t, "/model/predict", 30*time.Second, "x-user-id", "probe")
	if w := fallbackWeights(t, g.envoy); w["model/a"] != 1000 || w["model/b"] != 9000 {
		t.Errorf("restarted Envoy's fallback weights: %v, want model/a 1000, model/b 9000", w)
	}
	got := sharesOf(g.route(t, "/model/predict", userNames("after", 4000)))
	assertSharesPP(t, "after Envoy restart at 10/90", got, map[string]float64{"a": .1, "b": .9}, 3)
	g.envoy.assertNoRejections()
	_ = syscall.SIGTERM
}
