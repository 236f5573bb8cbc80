package control_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

// rolloutStep is plan p1's step n on an endpoint of variants a and b,
// putting b at pct, with a ramp, an owner and the actor's state.
func rolloutStep(n, pct int) control.AutoChange {
	return control.AutoChange{Actor: "rollout", Plan: "p1", Step: n, Action: "rollout_step", Detail: "error rate ok",
		Weights: map[string]int{"a": 100 - pct, "b": pct}, Ramp: &config.Ramp{Canary: "b", Base: map[string]int{"a": 90, "b": 10}},
		State: json.RawMessage(`{"step":` + strconv.Itoa(n) + `}`), Owner: "rollout plan p1"}
}

func actorState(t *testing.T, r *replica, ep string) string {
	t.Helper()
	s, ok := r.ctl.ActorState(ep)
	if !ok {
		return "(none)"
	}
	return string(s)
}

// The actor's owner, ramp and state survive a restart on the state file,
// and people's weight changes on the endpoint answer 409 over HTTP
// naming the owner, while a person may still act on other endpoints.
func TestActorStateSurvivesARestart(t *testing.T) {
	p := control.FilePersister{Path: filepath.Join(t.TempDir(), "state.json")}
	r := newReplica(t, 2, p, 0)
	res, err := r.ctl.ApplyAutomated("ep1", rolloutStep(1, 20))
	if err != nil || !res.Persisted {
		t.Fatalf("ApplyAutomated: %v persisted=%v", err, res.Persisted)
	}
	if a := res.Audit; a.Actor != "rollout" || a.Plan != "p1" || a.Step != 1 || a.Action != "rollout_step" || a.Remote != "" || a.UserAgent != "" || a.Count != 1 {
		t.Fatalf("audit %+v", a)
	}

	again := newReplica(t, 2, p, 0)
	if got := actorState(t, again, "ep1"); got != `{"step":1}` {
		t.Fatalf("actor state after a restart: %s", got)
	}
	e, _ := again.eff().Endpoint("ep1")
	if e.Ramp == nil || e.Ramp.Canary != "b" || again.weights(t, "ep1") != "a=80 b=20" {
		t.Fatalf("after a restart: ramp %+v, weights %s", e.Ramp, again.weights(t, "ep1"))
	}

	h := admin.New(admin.Options{})
	again.ctl.Register(h)
	call := func(method, path, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Host = "127.0.0.1:18002"
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code, w.Body.String()
	}
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/v1/endpoints/ep1/weights", `{"weights":{"a":50,"b":50}}`},
		{"POST", "/v1/endpoints/ep1/promote", `{"variant":"a"}`},
		{"POST", "/v1/endpoints/ep1/rollback", ``},
		{"DELETE", "/v1/endpoints/ep1/override", ``},
	} {
		code, body := call(c.method, c.path, c.body)
		if code != http.StatusConflict || !strings.Contains(body, "endpoint ep1 is driven by rollout plan p1; pause or abort it first") {
			t.Errorf("%s %s on an owned endpoint: %d %s, want 409 naming the owner", c.method, c.path, code, body)
		}
	}
	if code, body := call("PUT", "/v1/endpoints/ep0/weights", `{"weights":{"a":50,"b":50}}`); code != http.StatusOK {
		t.Errorf("a person's change on another endpoint: %d %s", code, body)
	}
	if again.weights(t, "ep1") != "a=80 b=20" {
		t.Fatalf("a refused change took effect: %s", again.weights(t, "ep1"))
	}
}

// Replicas sharing Redis see each other's actor state after a sync, each
// builds on the other's, and a config file that changes the weights ends
// the actor's hold (its state is gone: the actor's cue).
func TestActorStateSharedThroughRedis(t *testing.T) {
	srv := testredis.Start(t)
	p := control.RedisPersister{Client: redisClient(t, srv), Key: "actor:control"}
	a := newReplica(t, 2, p, 20*time.Millisecond)
	b := newReplica(t, 2, p, 20*time.Millisecond)
	if _, err := a.ctl.ApplyAutomated("ep1", rolloutStep(1, 20)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "b sees a's actor state", func() bool { return actorState(t, b, "ep1") == `{"step":1}` })
	if _, err := b.ctl.ApplyAutomated("ep1", rolloutStep(2, 30)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "a sees b's actor state", func() bool { return actorState(t, a, "ep1") == `{"step":2}` })
	if got := a.ctl.Audit(1)[0]; got.Count != 2 || got.Step != 2 {
		t.Fatalf("a's newest audit entry %+v, want steps 1 and 2 merged", got)
	}

	edited := manyEndpoints(t, 2)
	edited.Endpoints[1].Variants[0].Weight = 70
	edited.Endpoints[1].Variants[1].Weight = 30
	if _, err := a.ctl.SetFileConfig(edited); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.ctl.ActorState("ep1"); ok {
		t.Fatal("the actor state outlived the live weights the file superseded")
	}
	if e, _ := a.eff().Endpoint("ep1"); e.Ramp != nil {
		t.Fatalf("ramp %+v served after the file superseded the live weights", e.Ramp)
	}
	if got := a.ctl.Audit(1)[0]; got.Action != "superseded" || !strings.Contains(got.Detail, "rollout plan p1 no longer drives it") {
		t.Fatalf("newest audit entry %+v, want the hold superseded", got)
	}
	if _, err := a.ctl.SetWeights("ep1", map[string]int{"a": 50, "b": 50}, control.Requester{}); err != nil {
		t.Fatalf("a person's change after the file ended the hold: %v", err)
	}
}

// Automated changes are counted in control_changes_total like people's,
// refused ones too.
func TestAutomatedChangesAreCounted(t *testing.T) {
	r := newReplica(t, 2, nil, 0)
	for i := 1; i <= 3; i++ {
		if _, err := r.ctl.ApplyAutomated("ep1", rolloutStep(i, 10*i)); err != nil {
			t.Fatal(err)
		}
	}
	bad := rolloutStep(4, 40)
	bad.Weights = map[string]int{"a": -1, "b": 1}
	if _, err := r.ctl.ApplyAutomated("ep1", bad); err == nil {
		t.Fatal("negative weights accepted")
	}
	if ok, refused := testutil.ToFloat64(r.m.ControlChanges.WithLabelValues("rollout_step", "ok")),
		testutil.ToFloat64(r.m.ControlChanges.WithLabelValues("rollout_step", "refused")); ok != 3 || refused != 1 {
		t.Fatalf("control_changes_total rollout_step ok=%v refused=%v, want 3 and 1", ok, refused)
	}
	if _, err := r.ctl.ApplyAutomated("nope", rolloutStep(1, 10)); err == nil {
		t.Fatal("an automated change on an unknown endpoint succeeded")
	}
}
