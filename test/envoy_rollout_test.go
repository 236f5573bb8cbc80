package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

// rolloutYAML is an endpoint chat (stable 90 / canary 10) with a rollout
// plan; %q the two backends, then the steps and the gates.
const rolloutYAML = `endpoints:
  - name: chat
    match: {path_prefix: /chat}
    sticky: {header: x-user-id}
    variants:
      - {name: stable, weight: 90, backends: [%q]}
      - {name: canary, weight: 10, backends: [%q]}
    rollout:
      canary: canary
      steps: %s
      interval: 1s
      min_requests: 100
%s`

const errorRatioGates = `      gates:
        - {metric: error_ratio, max_increase: 0}
        - {metric: srm}
`

// traffic sends requests for users round-robin from `workers` goroutines
// until stopped, counting answers per variant and status.
type traffic struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	counts map[string]map[int]int // variant → status → answers
	failed atomic.Int64           // transport errors
}

func startTraffic(g *gateway, path string, users []string, workers int) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{cancel: cancel, counts: map[string]map[int]int{}}
	var next atomic.Int64
	for range workers {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for ctx.Err() == nil {
				u := users[int(next.Add(1))%len(users)]
				r, err := g.client.get(path, "x-user-id", u)
				if err != nil {
					tr.failed.Add(1)
					continue
				}
				tr.mu.Lock()
				if tr.counts[r.variant] == nil {
					tr.counts[r.variant] = map[int]int{}
				}
				tr.counts[r.variant][r.status]++
				tr.mu.Unlock()
			}
		}()
	}
	return tr
}

func (tr *traffic) answered(variant string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, c := range tr.counts[variant] {
		n += c
	}
	return n
}

func (tr *traffic) stop() {
	tr.cancel()
	tr.wg.Wait()
}

func rolloutStatus(t testing.TB, admin string) api.RolloutStatus {
	t.Helper()
	var st api.RolloutStatus
	if code := getJSON(t.(*testing.T), "http://"+admin+"/v1/endpoints/chat/rollout", "", &st); code != http.StatusOK {
		t.Fatalf("GET rollout status: HTTP %d", code)
	}
	return st
}

// waitRollout polls the status until ok holds or timeout passes.
func waitRollout(t *testing.T, admin string, timeout time.Duration, what string, ok func(api.RolloutStatus) bool) api.RolloutStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := rolloutStatus(t, admin)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; status %+v", what, timeout, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A canary answering 20% 5xx is rolled back by itself: within one gate
// interval of having the minimum sample, every user is back on the
// baseline, and the change is audited with the gate and its p-value.
func TestRolloutRollsBackAFailingCanary(t *testing.T) {
	stable, canary := startHTTPBackend(t, "stable"), startHTTPBackend(t, "canary")
	var n atomic.Int64
	canary.setHandler(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%5 == 0 {
			http.Error(w, "model failed", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("canary"))
	})
	// Before the rollout the canary takes no traffic: after the rollback
	// every user is on the baseline again.
	cfg := strings.Replace(fmt.Sprintf(rolloutYAML, stable.addr, canary.addr, "[{weight: 50, bake: 1m}, {weight: 100, bake: 1m}]", errorRatioGates),
		"weight: 90,", "weight: 100,", 1)
	cfg = strings.Replace(cfg, "weight: 10,", "weight: 0,", 1)
	g := startGateway(t, cfg, "extproc_timeout: 2s", "/chat/predict", "x-user-id", "probe")
	users := userNames("u", 2000)
	out := mustCLI(t, g.admin(), "rollout", "start", "chat")
	if !strings.Contains(out, "step 1 of 2") {
		t.Errorf("rollout start printed %q", out)
	}
	started := time.Now()
	tr := startTraffic(g, "/chat/predict", users, 8)
	defer tr.stop()
	// The moment both variants have the minimum sample, as the clients saw it.
	var enough time.Time
	st := waitRollout(t, g.admin(), 60*time.Second, "automatic rollback", func(st api.RolloutStatus) bool {
		if enough.IsZero() && tr.answered("canary") >= 100 && tr.answered("stable") >= 100 {
			enough = time.Now()
		}
		return st.Phase != api.PhaseRunning
	})
	rolledBack := time.Now()
	tr.stop()
	if st.Phase != api.PhaseRolledBack {
		t.Fatalf("phase %s (%s), want rolled_back", st.Phase, st.Reason)
	}
	if enough.IsZero() {
		enough = rolledBack
	}
	t.Logf("rolled back %.2fs after the start, %.2fs after both variants had 100 answers (gate interval 1s); canary answers %v; reason: %s",
		rolledBack.Sub(started).Seconds(), rolledBack.Sub(enough).Seconds(), tr.counts["canary"], st.Reason)
	// One gate interval (1s), plus the manager's 1s tick and the status poll.
	if d := rolledBack.Sub(enough); d > 2500*time.Millisecond {
		t.Errorf("rolled back %v after the minimum sample was there; want within one gate interval (1s) plus one tick", d)
	}
	if !strings.Contains(st.Reason, "error_ratio") || !strings.Contains(st.Reason, "p=") {
		t.Errorf("reason %q lacks the gate and its p-value", st.Reason)
	}
	// Every user back on the baseline, through Envoy.
	for u, v := range g.route(t, "/chat/predict", users) {
		if v != "stable" {
			t.Fatalf("after the rollback user %s is on %s", u, v)
		}
	}
	var audit api.AuditList
	getJSON(t, "http://"+g.admin()+"/v1/audit", "", &audit)
	found := false
	for _, a := range audit.Entries {
		if a.Action == "auto_rollback" && a.Actor == "rollout" && strings.Contains(a.Detail, "error_ratio") && a.After["stable"] == 100 && a.After["canary"] == 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("no auto_rollback audit entry by the rollout with the gate and the restored weights (stable 100): %+v", audit.Entries)
	}
	if v, _ := g.serve.current().metric(`modelsplit_rollout_rollbacks_total{endpoint="chat",gate="error_ratio"}`); v != 1 {
		t.Errorf("modelsplit_rollout_rollbacks_total = %v, want 1", v)
	}
	if !strings.Contains(g.serve.current().Logs(), "rollout ended") {
		t.Errorf("no log line for the rollback")
	}
	g.envoy.assertNoRejections()
}

// A healthy canary reaches 100% by itself through every step; at 50% the
// returning users are split 50/50, none leaves the canary.
func TestRolloutHealthyCanaryReachesFullTraffic(t *testing.T) {
	stable, canary := startHTTPBackend(t, "stable"), startHTTPBackend(t, "canary")
	g := startGateway(t, fmt.Sprintf(rolloutYAML, stable.addr, canary.addr, "[{weight: 50, bake: 4s}, {weight: 80, bake: 3s}, {weight: 100, bake: 2s}]", errorRatioGates),
		"extproc_timeout: 2s", "/chat/predict", "x-user-id", "probe")
	returning := userNames("ret", 2000)
	before := g.route(t, "/chat/predict", returning)
	mustCLI(t, g.admin(), "rollout", "start", "chat")
	waitEnvoyWeights(t, g.envoy, map[string]float64{"chat/stable": 5000, "chat/canary": 5000})
	// Step 1: 90/10 → 50/50 moves returning users onto the canary.
	at50 := g.route(t, "/chat/predict", returning)
	on, off := 0, 0
	for u, v := range at50 {
		if v == "canary" {
			on++
		}
		if before[u] == "canary" && v != "canary" {
			off++
		}
	}
	share := 100 * float64(on) / float64(len(returning))
	t.Logf("90/10 → 50/50: %.2f%% of %d returning users on the canary, %d moved from canary to baseline", share, len(returning), off)
	if share < 48 || share > 52 || off != 0 {
		t.Errorf("at 50%%: %.2f%% of returning users on the canary (want 50 ± 2), %d moved off it (want 0)", share, off)
	}
	// Returning and new users: SRM needs new users at every step.
	tr := startTraffic(g, "/chat/predict", userNames("live", 200000), 4)
	defer tr.stop()
	st := waitRollout(t, g.admin(), 90*time.Second, "promotion", func(st api.RolloutStatus) bool { return st.Phase != api.PhaseRunning })
	tr.stop()
	if st.Phase != api.PhasePromoted {
		t.Fatalf("phase %s: %s", st.Phase, st.Reason)
	}
	for u, v := range g.route(t, "/chat/predict", returning) {
		if v != "canary" {
			t.Fatalf("after the promotion user %s is on %s", u, v)
		}
	}
	var audit api.AuditList
	getJSON(t, "http://"+g.admin()+"/v1/audit", "", &audit)
	steps := map[string]int{}
	for _, a := range audit.Entries {
		if a.Actor == "rollout" {
			steps[a.Action] += max(a.Count, 1)
		}
	}
	if steps["rollout_start"] != 1 || steps["rollout_step"] != 2 || steps["rollout_promote"] != 1 {
		t.Errorf("rollout audit %v, want one start, two steps, one promote", steps)
	}
	out := mustCLI(t, g.admin(), "status")
	if !strings.Contains(out, "promoted") || !strings.Contains(out, "canary") {
		t.Errorf("modelsplit status does not show the rollout:\n%s", out)
	}
	t.Logf("promoted: %s; traffic %v, %d transport errors", st.Reason, tr.counts, tr.failed.Load())
	if tr.failed.Load() > 0 {
		t.Errorf("%d requests failed during the rollout", tr.failed.Load())
	}
}

// modelsplit killed mid-rollout and restarted resumes at the same step,
// with the same next-step time.
func TestRolloutResumesAfterAKill(t *testing.T) {
	stable, canary := startHTTPBackend(t, "stable"), startHTTPBackend(t, "canary")
	g := startGateway(t, fmt.Sprintf(rolloutYAML, stable.addr, canary.addr, "[{weight: 30, bake: 2s}, {weight: 60, bake: 8s}, {weight: 100, bake: 1s}]", ""),
		"extproc_timeout: 2s", "/chat/predict", "x-user-id", "probe")
	mustCLI(t, g.admin(), "rollout", "start", "chat")
	st := waitRollout(t, g.admin(), 20*time.Second, "step 2", func(st api.RolloutStatus) bool { return st.Step == 2 })
	due := *st.NextStepDue
	g.serve.current().kill()
	killed := time.Now()
	g.serve.restart()
	after := rolloutStatus(t, g.admin())
	t.Logf("restarted %.2fs after the kill: step %d, next step due %s (before the kill %s)", time.Since(killed).Seconds(), after.Step, after.NextStepDue, due)
	if after.Step != 2 || after.Phase != api.PhaseRunning || after.NextStepDue == nil || !after.NextStepDue.Equal(due) {
		t.Fatalf("after the restart: %+v, want step 2 running, next step due %s", after, due)
	}
	// Envoy reconnects to the restarted server and gets the step's weights
	// (the kill may have come before the step reached Envoy).
	var w map[string]float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if w = fallbackWeights(t, g.envoy); w["chat/canary"] == 6000 {
			break
		}
	}
	if w["chat/canary"] != 6000 {
		t.Errorf("Envoy's weights 10s after the restart %v, want the step's 60%%", w)
	}
	st = waitRollout(t, g.admin(), 30*time.Second, "step 3", func(st api.RolloutStatus) bool { return st.Step == 3 || st.Phase != api.PhaseRunning })
	if late := time.Since(due); late < 0 || late > 3*time.Second {
		t.Errorf("step 3 came %v after the step was due; the bake time must run on across the restart", late)
	}
	waitRollout(t, g.admin(), 20*time.Second, "promotion", func(st api.RolloutStatus) bool { return st.Phase == api.PhasePromoted })
}

// Two replicas sharing Redis: exactly one drives the rollout; when it is
// killed the other takes over within the lease period and the rollout
// goes on.
func TestRolloutTwoReplicasExactlyOneDrives(t *testing.T) {
	rs := testredis.Start(t)
	stable, canary := startHTTPBackend(t, "stable"), startHTTPBackend(t, "canary")
	body := fmt.Sprintf("store: {redis: %q}\n", rs.URL()) +
		fmt.Sprintf(rolloutYAML, stable.addr, canary.addr, "[{weight: 20, bake: 3s}, {weight: 40, bake: 3s}, {weight: 60, bake: 3s}, {weight: 80, bake: 3s}, {weight: 100, bake: 1s}]", "")
	var procs []*serveProc
	for i := range 2 {
		p := newPorts(t)
		if i > 0 {
			var err error
			if p.xds, err = freePort(); err != nil { // each replica its own xDS port
				t.Fatal(err)
			}
		}
		procs = append(procs, startServe(t, tempConfig(t, p.listenYAML()+body), p))
	}
	driving := func(p *serveProc) float64 {
		v, _ := p.metric("modelsplit_rollout_driving")
		return v
	}
	deadline := time.Now().Add(10 * time.Second)
	for driving(procs[0])+driving(procs[1]) != 1 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if d0, d1 := driving(procs[0]), driving(procs[1]); d0+d1 != 1 {
		t.Fatalf("replicas driving: %v and %v, want exactly one", d0, d1)
	}
	driver, follower := procs[0], procs[1]
	if driving(procs[1]) == 1 {
		driver, follower = procs[1], procs[0]
	}
	// Started on the follower: the driver carries it.
	mustCLI(t, follower.admin, "rollout", "start", "chat")
	waitRollout(t, driver.admin, 15*time.Second, "step 2 on the driver", func(st api.RolloutStatus) bool { return st.Step >= 2 })
	// Both keep agreeing on one driver while it runs.
	for range 10 {
		if d := driving(driver) + driving(follower); d != 1 {
			t.Fatalf("%v replicas driving during the rollout", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stepAtKill := rolloutStatus(t, follower.admin).Step
	driver.kill()
	killed := time.Now()
	for driving(follower) != 1 {
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("the follower did not take over within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(killed)
	t.Logf("the follower took over %.2fs after the driver was killed (lease period 5s), at step %d", took.Seconds(), stepAtKill)
	// The lease expires at most 5s after the driver's last renewal (which
	// came up to 1s before the kill); the follower tries every 1s tick. So
	// 6s plus scheduling on a loaded machine; 8s leaves room for that.
	if took > 8*time.Second {
		t.Errorf("takeover took %v, want within one lease period (5s), a tick (1s) and scheduling slack", took)
	}
	st := waitRollout(t, follower.admin, 30*time.Second, "promotion by the new driver", func(st api.RolloutStatus) bool { return st.Phase == api.PhasePromoted })
	if st.Step <= stepAtKill {
		t.Errorf("promoted at step %d, killed at %d", st.Step, stepAtKill)
	}
}

// The state file records the rollout; it is readable JSON.
func TestRolloutStateIsPersistedBesideTheConfig(t *testing.T) {
	stable, canary := startHTTPBackend(t, "stable"), startHTTPBackend(t, "canary")
	g := startGateway(t, fmt.Sprintf(rolloutYAML, stable.addr, canary.addr, "[{weight: 50, bake: 1h}]", ""),
		"extproc_timeout: 2s", "/chat/predict", "x-user-id", "probe")
	mustCLI(t, g.admin(), "rollout", "start", "chat")
	b, err := os.ReadFile(strings.TrimSuffix(g.cfg, filepath.Ext(g.cfg)) + ".state.json")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil || !strings.Contains(string(b), `"canary":"canary"`) {
		t.Fatalf("state file without the rollout (%v): %.300s", err, b)
	}
	// A person's set-weights is refused while the rollout owns the endpoint.
	if out, err := cli(t, g.admin(), "set-weights", "chat", "stable=50", "canary=50"); err == nil || !strings.Contains(out+err.Error(), "rollout plan") {
		t.Errorf("set-weights during a rollout: %v %s", err, out)
	}
	out := mustCLI(t, g.admin(), "rollout", "abort", "chat")
	if !strings.Contains(out, "aborted") {
		t.Errorf("rollout abort printed %q", out)
	}
	mustCLI(t, g.admin(), "set-weights", "chat", "stable=50", "canary=50")
}
