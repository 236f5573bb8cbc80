package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// A person's changes in turn: set-weights and promote push what was in
// force, rollback pops it (the file's weights again are no override),
// and with nothing left to pop it is a conflict.
func TestSetPromoteRollback(t *testing.T) {
	w := newWorld(t)
	w.must("face", SetWeights(map[string]int{"stable": 30, "canary": 20}))
	w.must("face", Promote("canary"))
	if got := w.weights("face"); !maps.Equal(got, map[string]int{"stable": 0, "canary": 50}) {
		t.Fatalf("promote: %v, want canary with the whole weight 50", got)
	}
	if a := w.st.Audit[len(w.st.Audit)-1]; a.Action != "promote" || a.After["canary"] != 50 || a.Before["stable"] != 30 || a.Detail != "promoted canary" {
		t.Fatalf("promote audited as %+v", a)
	}
	w.must("face", Rollback())
	if got := w.weights("face"); !maps.Equal(got, map[string]int{"stable": 30, "canary": 20}) {
		t.Fatalf("first rollback: %v, want 30/20", got)
	}
	w.must("face", Rollback())
	if got := w.weights("face"); !maps.Equal(got, fileFace) {
		t.Fatalf("second rollback: %v, want the file's", got)
	}
	if es := w.st.Endpoints["face"]; es != nil {
		t.Fatalf("back on the file's weights with nothing else kept, yet live state is left: %+v", es)
	}
	err := w.do("face", Rollback())
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "nothing to roll back") {
		t.Fatalf("third rollback: %v, want a conflict", err)
	}
}

// Promote gives the variant the endpoint's whole weight, bounded by what
// a weight may be; an empty or unknown variant is refused.
func TestPromoteRefusalsAndBound(t *testing.T) {
	w := newWorld(t)
	err := w.do("face", Promote(""))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `{"variant": "canary"}`) {
		t.Errorf("empty variant: %v, want ErrInvalid with an example naming the last variant", err)
	}
	if err := w.do("face", Promote("nope")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `unknown variant "nope" (variants: stable, canary)`) {
		t.Errorf("unknown variant: %v", err)
	}
	w.must("face", SetWeights(map[string]int{"stable": config.MaxWeight, "canary": 1}))
	w.must("face", Promote("canary"))
	if got := w.weights("face"); got["canary"] != config.MaxWeight || got["stable"] != 0 {
		t.Errorf("promote from %d+1: %v, want canary at the maximum weight", config.MaxWeight, got)
	}
}

// Rollback keeps at most MaxHistory earlier weights: the newest.
func TestRollbackHistoryKeepsTheNewest(t *testing.T) {
	w := newWorld(t)
	for i := 1; i <= MaxHistory+5; i++ {
		w.must("face", SetWeights(map[string]int{"stable": 100, "canary": i}))
	}
	h := w.st.Endpoints["face"].History
	if len(h) != MaxHistory || h[0]["canary"] != 5 || h[MaxHistory-1]["canary"] != MaxHistory+4 {
		t.Fatalf("history of %d: first %v last %v, want %d entries from canary 5 to %d", len(h), h[0], h[len(h)-1], MaxHistory, MaxHistory+4)
	}
}

// A rollback to weights that no longer fit the endpoint is a conflict.
func TestRollbackToWeightsThatNoLongerFit(t *testing.T) {
	w := newWorld(t)
	w.must("face", SetWeights(map[string]int{"stable": 50, "canary": 50}))
	w.st.Endpoints["face"].History[0] = map[string]int{"stable": 1, "gone": 1}
	err := w.do("face", Rollback())
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "no longer fit") {
		t.Fatalf("rollback to weights of a removed variant: %v, want a conflict", err)
	}
}

// Reset drops weights (pushing them for rollback) and shadow overrides;
// with neither it is a conflict.
func TestReset(t *testing.T) {
	w := newWorld(t)
	if err := w.do("face", Reset()); !errors.Is(err, ErrConflict) {
		t.Fatalf("reset with nothing live: %v, want a conflict", err)
	}
	w.must("face", SetShadowPaused("mirror", true))
	w.must("face", Reset())
	if w.endpoint("face").Shadows[0].Paused || w.st.Endpoints["face"] != nil {
		t.Fatalf("after resetting a shadow-only override: paused %v, state %+v", w.endpoint("face").Shadows[0].Paused, w.st.Endpoints["face"])
	}
	w.must("face", SetWeights(map[string]int{"stable": 70, "canary": 30}))
	w.must("face", Reset())
	if got := w.weights("face"); !maps.Equal(got, fileFace) {
		t.Fatalf("after reset: %v, want the file's", got)
	}
	w.must("face", Rollback())
	if got := w.weights("face"); got["canary"] != 30 {
		t.Fatalf("rollback after reset: %v, want the reset 70/30 back", got)
	}
}

// Resuming a shadow the file pauses is an override; pausing it again is
// none.
func TestShadowOverrideAgainstThePausedFile(t *testing.T) {
	w := newWorld(t)
	w.must("face", SetShadowPaused("parked", false))
	if ss, ok := w.st.Endpoints["face"].Shadows["parked"]; !ok || ss.Paused || !ss.Base {
		t.Fatalf("resume of a paused shadow stored as %+v %v", ss, ok)
	}
	if w.endpoint("face").Shadows[1].Paused {
		t.Fatal("resumed shadow still served paused")
	}
	w.must("face", SetShadowPaused("parked", true))
	if w.st.Endpoints["face"] != nil {
		t.Fatalf("pause back to the file's setting left state: %+v", w.st.Endpoints["face"])
	}
	err := w.do("face", SetShadowPaused("nope", true))
	if !errors.Is(err, ErrUnknownShadow) || !strings.Contains(err.Error(), "(shadows: mirror, parked)") {
		t.Fatalf("unknown shadow: %v", err)
	}
}

// An owner that does not name its plan gets the plan in the refusal.
func TestOwnerRefusalNamesThePlan(t *testing.T) {
	w := newWorld(t)
	w.must("chat", Automated(AutoChange{Actor: "bandit", Plan: "chat@1", Action: "bandit_start", Owner: "bandit", Weights: map[string]int{"a": 50, "b": 50}}))
	err := w.do("chat", SetWeights(map[string]int{"a": 1, "b": 1}))
	if !errors.Is(err, ErrOwned) || err.Error() != "endpoint chat is driven by bandit (plan chat@1); pause or abort it first" {
		t.Fatalf("refusal %v", err)
	}
}

// An override dropped with a ramp but no owner says the actor's hold
// ended, without a name.
func TestSupersededNoteWithoutAnOwner(t *testing.T) {
	w := newWorld(t)
	ch := step(1, 10)
	ch.Owner = ""
	w.must("chat", Automated(ch))
	details := w.reload(parse(t, "weight: 100", "weight: 99", "weight: 0,", "weight: 1,"))
	if len(details) != 1 || !strings.HasSuffix(details[0], "; the automated actor no longer drives it (its ramp and state were dropped)") {
		t.Fatalf("superseded %q", details)
	}
	w = newWorld(t)
	w.must("face", SetWeights(map[string]int{"stable": 1, "canary": 1}))
	details = w.reload(parse(t, "weight: 90", "weight: 80", "weight: 10", "weight: 20"))
	if len(details) != 1 || strings.Contains(details[0], "drives") {
		t.Fatalf("a person's override superseded with %q, want no note of an actor", details)
	}
}

// An automated change's checks, at their bounds.
func TestAutomatedChangeChecks(t *testing.T) {
	big := func(n int) json.RawMessage { return json.RawMessage(`"` + strings.Repeat("a", n-2) + `"`) }
	for _, c := range []struct {
		ch   AutoChange
		want string // "" when accepted
	}{
		{AutoChange{Actor: "r", Plan: "p", Action: "x", State: big(MaxActorState)}, ""},
		{AutoChange{Actor: "r", Plan: "p", Action: "x", State: big(MaxActorState + 1)}, "at most 65536 are kept"},
		{AutoChange{Actor: "r", Plan: "p", Action: "x", Owner: "o", DropOwner: true}, "sets owner"},
		{AutoChange{Actor: "r", Plan: "p", Action: "x", State: json.RawMessage(`{}`), ClearState: true}, "sets its state and clears it"},
		{AutoChange{Plan: "p", Action: "x"}, "actor, plan and action are required"},
		{AutoChange{Actor: "r", Action: "x"}, "actor, plan and action are required"},
		{AutoChange{Actor: "r", Plan: "p"}, "actor, plan and action are required"},
		{AutoChange{Actor: "r", Plan: "p", Action: "x", Ramp: &config.Ramp{Canary: "b", Base: map[string]int{"a": 0, "b": 0}}}, "ramp.base"},
	} {
		w := newWorld(t)
		err := w.do("chat", Automated(c.ch))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%.60v: %v, want accepted", c.ch, err)
		case c.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%.60v: %v, want ErrInvalid with %q", c.ch, err, c.want)
		}
	}
}

// The same owner may keep stepping; Expect sees the state in force and
// refuses with a conflict.
func TestAutomatedSameOwnerAndExpect(t *testing.T) {
	w := newWorld(t)
	ch := step(1, 10)
	ch.State = json.RawMessage(`{"n":1}`)
	w.must("chat", Automated(ch))
	w.must("chat", Automated(step(2, 20)))
	var seen string
	ch = step(3, 30)
	ch.Expect = func(cur json.RawMessage) error { seen = string(cur); return errors.New("moved on") }
	err := w.do("chat", Automated(ch))
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "moved on") || seen != `{"n":1}` {
		t.Fatalf("Expect refusing: %v (saw %q), want a conflict after seeing the stored state", err, seen)
	}
	if got := w.weights("chat"); got["b"] != 20 {
		t.Fatalf("a refused change took effect: %v", got)
	}
}

func TestClip(t *testing.T) {
	if got := clip("abcdef", 6); got != "abcdef" {
		t.Errorf("clip to its own length: %q", got)
	}
	if got := clip("abcdefgh", 6); got != "abc…" {
		t.Errorf("clip(abcdefgh, 6) = %q, want abc…", got)
	}
	// "é" is two bytes: a cut inside it backs up to its start.
	if got := clip("aéééé", 7); got != "aé…" || !utf8.ValidString(got) {
		t.Errorf("clip(aéééé, 7) = %q, want aé…", got)
	}
	// What clients send need not be UTF-8: a cut finding no rune start
	// before it keeps nothing but the "…".
	if got := clip("\x80\x80\x80\x80\x80", 4); got != "…" {
		t.Errorf("clip of continuation bytes = %q, want …", got)
	}
}

// An audit entry's strings and weights are bounded; a small entry is
// kept as it is.
func TestAuditEntriesAreBounded(t *testing.T) {
	long := strings.Repeat("x", 2000)
	many := map[string]int{}
	for i := range maxWeights + 1 {
		many[fmt.Sprintf("v%03d", i)] = i
	}
	e := boundEntry(api.AuditEntry{Action: long, Endpoint: long, Shadow: long, Actor: long, Plan: long, Remote: long, UserAgent: long, Detail: long,
		Before: many, After: map[string]int{long: 1}})
	for name, c := range map[string]struct {
		s string
		n int
	}{"action": {e.Action, maxName}, "endpoint": {e.Endpoint, maxName}, "shadow": {e.Shadow, maxName}, "actor": {e.Actor, maxName}, "plan": {e.Plan, maxName},
		"remote": {e.Remote, maxRemote}, "user agent": {e.UserAgent, maxUserAgent}, "detail": {e.Detail, maxDetail}} {
		if len(c.s) > c.n || len(c.s) < c.n-3 || !strings.HasSuffix(c.s, "…") {
			t.Errorf("%s clipped to %d bytes, want %d ending in …", name, len(c.s), c.n)
		}
	}
	if len(e.Before) != maxWeights || e.Before["v000"] != 0 || e.Before["v063"] != 63 {
		t.Errorf("before of %d variants kept %d (v000 %v, v063 %v), want the first %d by name", maxWeights+1, len(e.Before), e.Before["v000"], e.Before["v063"], maxWeights)
	}
	for k := range e.After {
		if len(k) > maxName {
			t.Errorf("a variant name of %d bytes kept", len(k))
		}
	}
	delete(many, "v064")
	name := strings.Repeat("n", maxName)
	many[name] = 7
	delete(many, "v000")
	if got := boundWeights(many); len(got) != maxWeights || got[name] != 7 {
		t.Errorf("%d variants, one with a %d-byte name: kept %d, want all", maxWeights, maxName, len(got))
	}
}

// The audit keeps the newest MaxAudit entries, and its stored encoding
// stays the entries' own.
func TestAuditKeepsTheNewest(t *testing.T) {
	st := NewState()
	for i := range MaxAudit + 10 {
		st.Record(api.AuditEntry{Action: "set_weights", Endpoint: "face", Detail: fmt.Sprint(i), Time: t0.Add(time.Duration(i) * time.Second)})
	}
	if len(st.Audit) != MaxAudit || st.Audit[0].Detail != "10" || st.Audit[MaxAudit-1].Detail != fmt.Sprint(MaxAudit+9) {
		t.Fatalf("audit of %d: first %q last %q", len(st.Audit), st.Audit[0].Detail, st.Audit[len(st.Audit)-1].Detail)
	}
	if len(st.auditJSON) != len(st.Audit) {
		t.Fatalf("%d entries encoded ahead for %d entries: saving would encode the audit again", len(st.auditJSON), len(st.Audit))
	}
	assertEncodingIsFresh(t, st)
	c := st.Clone()
	c.Record(api.AuditEntry{Action: "reset", Endpoint: "chat"})
	if len(st.Audit) != MaxAudit || st.Audit[MaxAudit-1].Action != "set_weights" {
		t.Fatal("recording on a clone changed the original's audit")
	}
	if len(c.auditJSON) != len(c.Audit) {
		t.Fatalf("the clone lost the encoded entries (%d for %d)", len(c.auditJSON), len(c.Audit))
	}
	assertEncodingIsFresh(t, c)
}

// assertEncodingIsFresh checks that Encode (from the cached entries)
// equals an encoding made from scratch.
func assertEncodingIsFresh(t *testing.T, st *State) {
	t.Helper()
	got, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	fresh := &State{Revision: st.Revision, Endpoints: st.Endpoints, Audit: st.Audit}
	want, err := fresh.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("encoding from the cache differs from a fresh one:\n%.300s\n%.300s", got, want)
	}
}

// A state read from a store is bounded like one built here.
func TestBoundAStoredState(t *testing.T) {
	st := NewState()
	st.Revision = 7
	for i := range MaxAudit + 3 {
		st.Audit = append(st.Audit, api.AuditEntry{Action: "a", Endpoint: "face", Detail: fmt.Sprint(i), UserAgent: strings.Repeat("u", 1000)})
	}
	es := &EndpointState{Weights: map[string]int{"stable": 1, "canary": 1}}
	for i := range MaxHistory + 2 {
		es.History = append(es.History, map[string]int{"stable": i, "canary": 1})
	}
	st.Endpoints = map[string]*EndpointState{"face": es, "gone": nil}
	st.Bound()
	if len(st.Audit) != MaxAudit || st.Audit[0].Detail != "3" || len(st.Audit[0].UserAgent) > maxUserAgent {
		t.Errorf("audit of %d, first %q, user agent %d bytes", len(st.Audit), st.Audit[0].Detail, len(st.Audit[0].UserAgent))
	}
	if h := st.Endpoints["face"].History; len(h) != MaxHistory || h[0]["stable"] != 2 {
		t.Errorf("history of %d, first %v; want %d from stable 2", len(h), h[0], MaxHistory)
	}
	if _, ok := st.Endpoints["gone"]; ok {
		t.Error("a nil endpoint state kept")
	}
	if len(st.auditJSON) != len(st.Audit) {
		t.Errorf("%d entries encoded ahead for %d after Bound", len(st.auditJSON), len(st.Audit))
	}
	assertEncodingIsFresh(t, st)
	b, _ := st.Encode()
	if !strings.HasPrefix(string(b), `{"revision":7,"endpoints":{"face":`) {
		t.Errorf("encoded as %.60s, want the revision first", b)
	}
	if b, _ := NewState().Encode(); string(b) != `{"revision":0}` {
		t.Errorf("empty state encoded as %s", b)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
}

// A clone writes its own copy of an endpoint; the original keeps its
// own.
func TestCloneIsCopyOnWrite(t *testing.T) {
	st := NewState()
	es := st.Endpoint("face")
	since := t0
	es.Weights, es.Base, es.Since = map[string]int{"stable": 1, "canary": 1}, map[string]int{"stable": 90, "canary": 10}, &since
	es.History = []map[string]int{{"stable": 2, "canary": 2}}
	es.Shadows = map[string]ShadowState{"mirror": {Paused: true}}
	es.Ramp = &config.Ramp{Canary: "canary", Base: map[string]int{"stable": 90, "canary": 10}}
	es.ActorState = json.RawMessage(`{"a":1}`)
	before, _ := st.Encode()
	c := st.Clone()
	ce := c.Endpoint("face")
	if ce == es {
		t.Fatal("the clone writes the original's endpoint state")
	}
	ce.Weights["stable"], ce.Base["stable"], ce.History[0]["stable"], ce.Ramp.Base["stable"] = 9, 9, 9, 9
	*ce.Since = t0.Add(time.Hour)
	ce.Shadows["mirror"] = ShadowState{}
	ce.ActorState[2] = 'b'
	if after, _ := st.Encode(); string(after) != string(before) {
		t.Fatalf("writing the clone changed the original:\n%s\n%s", before, after)
	}
	if st.Equal(c) || !st.Equal(st.Clone()) {
		t.Fatal("Equal does not follow the content")
	}
	if c.Endpoint("face") != ce {
		t.Fatal("a second write copied the endpoint state again")
	}
}

func TestCodes(t *testing.T) {
	for c, want := range map[Code]string{ErrInvalid: "invalid", ErrOwned: "owned by an automated actor", ErrRejected: "rejected", Code(99): "live error code 99"} {
		if c.Error() != want {
			t.Errorf("code %d: %q, want %q", int(c), c.Error(), want)
		}
	}
	err := fmt.Errorf("wrapped: %w", Errorf(ErrConflict, "x %d", 1))
	if CodeOf(err) != ErrConflict || !errors.Is(err, ErrConflict) || errors.Is(err, ErrInvalid) || err.Error() != "wrapped: x 1" {
		t.Errorf("wrapped error: code %v", CodeOf(err))
	}
	if CodeOf(errors.New("plain")) != 0 {
		t.Error("a plain error has a code")
	}
	// 0 is CodeOf's "no code": no code may be 0.
	for _, c := range []Code{ErrInvalid, ErrUnknownEndpoint, ErrUnknownShadow, ErrConflict, ErrOwned, ErrRejected} {
		if c == 0 {
			t.Errorf("code %q is 0, what CodeOf answers for an error without a code", c.Error())
		}
	}
}

// Automated entries merge only with the endpoint's newest entry when it
// has the same actor, plan, action and shadow; the endpoint's first entry
// merges too.
func TestAutomatedEntriesMergeOnlyWhenAllMatch(t *testing.T) {
	st := NewState()
	rec := func(actor, plan, action, shadow string) {
		st.Record(api.AuditEntry{Endpoint: "chat", Actor: actor, Plan: plan, Action: action, Shadow: shadow, Count: 1})
	}
	rec("rollout", "p1", "rollout_step", "")
	rec("rollout", "p1", "rollout_step", "")
	if len(st.Audit) != 1 || st.Audit[0].Count != 2 {
		t.Fatalf("two steps as the endpoint's first entries: %+v, want one entry of count 2", st.Audit)
	}
	rec("rollout", "p2", "rollout_step", "")
	rec("bandit", "p2", "rollout_step", "")
	rec("bandit", "p2", "bandit_update", "")
	rec("bandit", "p2", "bandit_update", "s")
	if len(st.Audit) != 5 {
		t.Fatalf("entries differing in plan, actor, action, shadow: %d entries, want 5", len(st.Audit))
	}
}

// Any one of an owner, a ramp or a state holds the endpoint: weights
// equal to the file's stay an override, so the hold is kept with them.
func TestAnyHoldKeepsTheOverride(t *testing.T) {
	file := map[string]int{"a": 100, "b": 0}
	ramp := &config.Ramp{Canary: "b", Base: file}
	for name, ch := range map[string]AutoChange{
		"owner": {Owner: "rollout plan p1"},
		"ramp":  {Ramp: ramp},
		"state": {State: json.RawMessage(`{"x":1}`)},
	} {
		ch.Actor, ch.Plan, ch.Action = "rollout", "p1", "rollout_step"
		for _, weights := range []map[string]int{file, nil} {
			ch.Weights = weights
			w := newWorld(t)
			w.must("chat", Automated(ch))
			es := w.st.Endpoints["chat"]
			if es == nil || !maps.Equal(es.Weights, file) || !maps.Equal(es.Base, file) {
				t.Errorf("held by its %s only (weights %v): %+v, want the file's weights kept as an override", name, weights, es)
				continue
			}
			// A later change of the same actor without weights keeps the
			// override, its hold and when it began.
			since := *es.Since
			next := ch
			next.Weights = nil
			w.must("chat", Automated(next))
			if es := w.st.Endpoints["chat"]; es == nil || !maps.Equal(es.Weights, file) || !es.Since.Equal(since) {
				t.Errorf("held by its %s, then a change without weights: %+v, want the override kept since %v", name, es, since)
				continue
			}
			switch name {
			case "owner":
				if err := w.do("chat", SetWeights(map[string]int{"a": 1, "b": 1})); !errors.Is(err, ErrOwned) {
					t.Errorf("held by its owner (weights %v): a person's change %v, want ErrOwned", weights, err)
				}
			case "ramp":
				if r := w.endpoint("chat").Ramp; r == nil || r.Canary != "b" {
					t.Errorf("held by its ramp (weights %v): ramp served %+v", weights, r)
				}
			case "state":
				if s, ok := w.st.ActorState("chat"); !ok || string(s) != `{"x":1}` {
					t.Errorf("held by its state (weights %v): state %s %v", weights, s, ok)
				}
			}
		}
	}
}

// A superseded endpoint or shadow is skipped, not the end of the work:
// the other endpoints' and shadows' overrides are still laid over the
// file, whichever order they come in.
func TestSupersededOverridesDoNotStopTheOthers(t *testing.T) {
	file := parse(t)
	for range 20 {
		st := NewState()
		st.Endpoint("aaa").Weights = map[string]int{"x": 1} // no longer in the file
		chat := st.Endpoint("chat")
		chat.Weights, chat.Base = map[string]int{"a": 10, "b": 90}, map[string]int{"a": 100, "b": 0}
		face := st.Endpoint("face")
		face.Shadows = map[string]ShadowState{
			"mirror": {Paused: false, Base: true}, // the file's mirror runs: superseded
			"parked": {Paused: false, Base: true},
		}
		eff, superseded := Effective(file, st, t0)
		if len(superseded) != 2 {
			t.Fatalf("superseded %+v, want the gone endpoint and mirror", superseded)
		}
		if e, _ := eff.Endpoint("chat"); e.Variants[1].Weight != 90 {
			t.Fatalf("chat's override not served after a gone endpoint: %+v", e.Variants)
		}
		if e, _ := eff.Endpoint("face"); e.Shadows[1].Paused {
			t.Fatal("parked's resume not served next to a superseded mirror")
		}
		for _, a := range superseded {
			if a.Shadow == "mirror" && a.Detail != "the config file changed this shadow's paused setting; the file's setting is in force" {
				t.Fatalf("mirror (the first shadow) superseded with %q", a.Detail)
			}
		}
	}
}

// The effective config shares with the file what live state leaves
// alone: an endpoint with live weights only keeps the file's shadows,
// one with shadow overrides only keeps the file's variants.
func TestEffectiveSharesWhatItDoesNotChange(t *testing.T) {
	file := parse(t)
	st := NewState()
	chat := st.Endpoint("chat")
	chat.Weights, chat.Base = map[string]int{"a": 10, "b": 90}, map[string]int{"a": 100, "b": 0}
	st.Endpoint("face").Shadows = map[string]ShadowState{"parked": {Paused: false, Base: true}}
	eff, _ := Effective(file, st, t0)
	fc, _ := file.Endpoint("chat")
	ec, _ := eff.Endpoint("chat")
	ff, _ := file.Endpoint("face")
	ef, _ := eff.Endpoint("face")
	if &ec.Variants[0] == &fc.Variants[0] || &ef.Shadows[0] == &ff.Shadows[0] {
		t.Fatal("an override was written into the file's slices")
	}
	if &ef.Variants[0] != &ff.Variants[0] {
		t.Error("face (shadow overrides only) got a copy of its variants")
	}
	faceFile := parse(t)
	st2 := NewState()
	face := st2.Endpoint("face")
	face.Weights, face.Base = map[string]int{"stable": 50, "canary": 50}, fileFace
	eff2, _ := Effective(faceFile, st2, t0)
	a, _ := faceFile.Endpoint("face")
	b, _ := eff2.Endpoint("face")
	if &a.Shadows[0] != &b.Shadows[0] {
		t.Error("face (live weights only) got a copy of its shadows")
	}
}

// A state read back with an empty audit (or none) clones and bounds like
// any other.
func TestStateWithAnEmptyAudit(t *testing.T) {
	for _, stored := range []string{`{"revision":3,"audit":[]}`, `{"revision":3}`} {
		var st State
		if err := json.Unmarshal([]byte(stored), &st); err != nil {
			t.Fatal(err)
		}
		st.Bound()
		c := st.Clone()
		c.Record(api.AuditEntry{Action: "reset", Endpoint: "face"})
		if len(c.Audit) != 1 || c.Revision != 3 || len(st.Audit) != 0 {
			t.Errorf("%s: clone audit %d, revision %d; original audit %d", stored, len(c.Audit), c.Revision, len(st.Audit))
		}
		assertEncodingIsFresh(t, c)
	}
}
