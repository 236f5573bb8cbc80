package live

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/config"
)

// step is a rollout step of plan p1 on chat putting b at pct.
func step(n, pct int) AutoChange {
	return AutoChange{Actor: "rollout", Plan: "p1", Step: n, Action: "rollout_step", Detail: "gate ok",
		Weights: map[string]int{"a": 100 - pct, "b": pct}, Ramp: &config.Ramp{Canary: "b", Base: map[string]int{"a": 100, "b": 0}},
		Owner: "rollout plan p1"}
}

// While an actor owns an endpoint people's weight changes are refused
// with a message naming the owner and the way out; shadows stay theirs.
func TestOwnerRefusesPeoplesWeightChanges(t *testing.T) {
	w := newWorld(t)
	w.must("chat", Automated(step(1, 10)))
	for name, ch := range map[string]Change{
		"set-weights": SetWeights(map[string]int{"a": 50, "b": 50}),
		"promote":     Promote("b"),
		"rollback":    Rollback(),
		"reset":       Reset(),
	} {
		err := w.do("chat", ch)
		if !errors.Is(err, ErrOwned) || err.Error() != "endpoint chat is driven by rollout plan p1; pause or abort it first" {
			t.Errorf("%s on an owned endpoint: %v, want ErrOwned naming the owner", name, err)
		}
	}
	if got := w.weights("chat"); got["b"] != 10 {
		t.Fatalf("a refused change took effect: %v", got)
	}
	w.must("face", SetShadowPaused("mirror", true)) // another endpoint, and…
	w.st.Endpoint("face").Owner = "bandit b7"
	if err := w.do("face", SetShadowPaused("mirror", false)); err != nil {
		t.Fatalf("resume a shadow of an owned endpoint: %v", err) // …shadows stay allowed
	}
	if err := w.do("chat", Automated(AutoChange{Actor: "bandit", Plan: "b7", Action: "bandit_step", Owner: "bandit b7"})); !errors.Is(err, ErrOwned) {
		t.Fatalf("another actor took over an owned endpoint: %v", err)
	}
	w.must("chat", Automated(AutoChange{Actor: "rollout", Plan: "p1", Step: 2, Action: "rollout_pause", DropOwner: true,
		Ramp: &config.Ramp{Canary: "b", Base: map[string]int{"a": 100, "b": 0}}}))
	w.must("chat", SetWeights(map[string]int{"a": 50, "b": 50}))
}

// The ramp is served with the live weights, cleared by a change without
// one, and goes (with the owner and the state) when the file supersedes
// the weights.
func TestRampFollowsTheLiveWeights(t *testing.T) {
	w := newWorld(t)
	ch := step(1, 10)
	ch.State = json.RawMessage(`{"step":1}`)
	w.must("chat", Automated(ch))
	if r := w.endpoint("chat").Ramp; r == nil || r.Canary != "b" || r.Base["a"] != 100 {
		t.Fatalf("ramp served %+v, want canary b over base a=100", r)
	}
	if w.endpoint("face").Ramp != nil {
		t.Fatal("a ramp on an endpoint no actor touched")
	}
	noRamp := step(2, 20)
	noRamp.Ramp = nil
	w.must("chat", Automated(noRamp))
	if r := w.endpoint("chat").Ramp; r != nil {
		t.Fatalf("ramp %+v after a change without one, want none", r)
	}
	w.must("chat", Automated(step(3, 30)))
	details := w.reload(parse(t, "weight: 100", "weight: 99", "weight: 0,", "weight: 1,"))
	if w.endpoint("chat").Ramp != nil || w.weights("chat")["b"] != 1 {
		t.Fatalf("after the file changed chat's weights: ramp %+v weights %v, want none and the file's", w.endpoint("chat").Ramp, w.weights("chat"))
	}
	if len(details) != 1 || !strings.Contains(details[0], "rollout plan p1 no longer drives it") {
		t.Fatalf("superseded %q, want it to say the owner was dropped", details)
	}
	if _, ok := w.st.ActorState("chat"); ok {
		t.Fatal("the actor's state outlived the override it was kept with")
	}
	if err := w.do("chat", SetWeights(map[string]int{"a": 50, "b": 50})); err != nil {
		t.Fatalf("the owner outlived the override: %v", err)
	}
}

// A plan's first weight change pushes the weights before it once; its
// later steps push nothing, so one rollback undoes the whole rollout.
func TestAutomatedPlanPushesHistoryOnce(t *testing.T) {
	w := newWorld(t)
	w.must("chat", SetWeights(map[string]int{"a": 95, "b": 5}))
	pre := w.weights("chat")
	depth := len(w.st.Endpoints["chat"].History)
	for i := 1; i <= 30; i++ {
		w.must("chat", Automated(step(i, 10+i)))
	}
	if got := len(w.st.Endpoints["chat"].History); got != depth+1 {
		t.Fatalf("history %d after 30 steps of one plan, want %d (one push)", got, depth+1)
	}
	w.must("chat", Automated(AutoChange{Actor: "rollout", Plan: "p1", Step: 31, Action: "rollout_promote",
		Weights: map[string]int{"a": 0, "b": 100}, DropOwner: true}))
	if got := len(w.st.Endpoints["chat"].History); got != depth+1 {
		t.Fatalf("history %d after the promote step, want %d", got, depth+1)
	}
	w.must("chat", Rollback())
	if got := w.weights("chat"); !maps.Equal(got, pre) {
		t.Fatalf("rollback after the rollout: %v, want the pre-rollout %v", got, pre)
	}
	// A second plan pushes once again.
	next := step(1, 40)
	next.Plan, next.Owner = "p2", "rollout plan p2"
	w.must("chat", Automated(next))
	w.must("chat", Automated(next))
	if got := len(w.st.Endpoints["chat"].History); got != depth+1 {
		t.Fatalf("history %d after plan p2's steps, want %d", got, depth+1)
	}
}

// Consecutive automated entries of one actor, plan and action on an
// endpoint are one entry: 10,000 steps neither flood the audit nor push
// people's entries out, and the entry keeps the first's time and weights.
func TestAutomatedAuditCoalesces(t *testing.T) {
	w := newWorld(t)
	for i := range 200 {
		w.must("face", SetWeights(map[string]int{"stable": 50 + i%7, "canary": 50}))
	}
	humans := append([]string(nil), actions(w.st)...)
	start := len(w.st.Audit)
	history := len(w.st.Endpoints["face"].History)
	first := w.now.Add(1e9)
	for i := 1; i <= 10_000; i++ {
		w.must("chat", Automated(step(i, i%90+1)))
	}
	got := w.st.Audit[start:]
	if len(got) != 1 {
		t.Fatalf("10,000 steps left %d audit entries, want 1", len(got))
	}
	e := got[0]
	if e.Count != 10_000 || e.First == nil || !e.First.Equal(first) || !e.Time.Equal(w.now) || e.Step != 10_000 ||
		e.Before["a"] != 100 || e.After["b"] != 10_000%90+1 || e.Remote != "" || e.UserAgent != "" || e.Actor != "rollout" || e.Plan != "p1" {
		t.Fatalf("merged entry %+v", e)
	}
	if now := actions(w.st)[:start]; strings.Join(now, ",") != strings.Join(humans, ",") {
		t.Fatal("people's entries changed")
	}
	if got := len(w.st.Endpoints["face"].History); got != history {
		t.Fatalf("face's history %d, want %d", got, history)
	}
	// Another entry of the endpoint in between starts a new one; another
	// endpoint's entry does not.
	w.must("face", SetShadowPaused("mirror", true))
	w.must("chat", Automated(step(10_001, 5)))
	if n := len(w.st.Audit) - start; n != 2 {
		t.Fatalf("%d entries, want the merged one, face's pause, nothing new for chat", n)
	}
	w.must("chat", Automated(AutoChange{Actor: "rollout", Plan: "p1", Step: 10_002, Action: "auto_rollback", Weights: map[string]int{"a": 100, "b": 0}, Owner: "rollout plan p1"}))
	w.must("chat", Automated(step(10_003, 5)))
	if n := len(w.st.Audit) - start; n != 4 {
		t.Fatalf("%d entries, want a new one for each change of action", n)
	}
}

func actions(st *State) []string {
	out := make([]string, len(st.Audit))
	for i, e := range st.Audit {
		out[i] = e.Action + "@" + e.Time.String()
	}
	return out
}

// An actor's state is kept with its weights, replaced, and cleared; a
// change without weights leaves the weights in force.
func TestActorStateKeptWithTheOverride(t *testing.T) {
	w := newWorld(t)
	w.must("chat", Automated(AutoChange{Actor: "rollout", Plan: "p1", Action: "rollout_start", State: json.RawMessage(`{"phase": "warm"}`), Owner: "rollout plan p1"}))
	if s, ok := w.st.ActorState("chat"); !ok || string(s) != `{"phase": "warm"}` {
		t.Fatalf("state %s %v", s, ok)
	}
	if es := w.st.Endpoints["chat"]; es.Weights == nil || !maps.Equal(es.Base, map[string]int{"a": 100, "b": 0}) {
		t.Fatalf("the hold has no base the file can supersede: %+v", es)
	}
	w.must("chat", Automated(AutoChange{Actor: "rollout", Plan: "p1", Action: "rollout_abort", ClearState: true, DropOwner: true}))
	if _, ok := w.st.ActorState("chat"); ok {
		t.Fatal("ClearState kept the state")
	}
	if es := w.st.Endpoints["chat"]; es != nil && es.Weights != nil {
		t.Fatalf("released on the file's weights, yet an override is left: %+v", es)
	}
	for _, bad := range []AutoChange{
		{Actor: "rollout", Plan: "p1", Action: "x", State: json.RawMessage(`{`)},
		{Actor: "rollout", Action: "x"},
		{Actor: "rollout", Plan: "p1", Action: "x", Weights: map[string]int{"a": 1}},
		{Actor: "rollout", Plan: "p1", Action: "x", Ramp: &config.Ramp{Canary: "z", Base: map[string]int{"a": 1, "b": 0}}},
	} {
		if err := w.do("chat", Automated(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
}
