package live

import (
	"bytes"
	"encoding/json"
	"maps"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// MaxActorState bounds an actor's stored state, which every save of the
// live state carries.
const MaxActorState = 64 << 10

// AutoChange is a change made by an automated actor (a rollout or a
// bandit) rather than a person: it is audited with the actor, plan and
// step, and consecutive changes of one plan are merged in the audit.
type AutoChange struct {
	Actor  string // "rollout", "bandit"
	Plan   string // the plan's id
	Step   int    // from 1
	Action string // audit action: rollout_start, rollout_step, auto_rollback, rollout_promote, rollout_abort, rollout_pause, rollout_resume
	Detail string // figures, gate, p-value
	// Weights to put in force; nil leaves the weights as they are.
	Weights map[string]int
	// Ramp is kept in force with the weights (config.Endpoint.Ramp); nil
	// clears it.
	Ramp *config.Ramp
	// State is the actor's own state, stored with the live state (Redis
	// or the state file) and given back by ActorState; nil leaves it,
	// ClearState removes it.
	State      json.RawMessage
	ClearState bool
	// Owner, while set, makes people's weight changes (set-weights,
	// promote, rollback, reset) on the endpoint refused with a conflict
	// naming the owner; DropOwner releases it.
	Owner     string
	DropOwner bool
	// Expect, when set, is given the actor state in force (nil: none)
	// just before the change applies, on the newest state of every
	// replica; an error refuses the change (ErrConflict). It keeps an
	// actor from overwriting what another replica or a person changed
	// since it read the state (a pause racing a step).
	Expect func(current json.RawMessage) error
}

// validate names what is wrong with ch for endpoint e.
func (ch AutoChange) validate(e *config.Endpoint) error {
	switch {
	case ch.Actor == "" || ch.Plan == "" || ch.Action == "":
		return Errorf(ErrInvalid, "automated change on %q: actor, plan and action are required (got %q, %q, %q)", e.Name, ch.Actor, ch.Plan, ch.Action)
	case ch.Owner != "" && ch.DropOwner:
		return Errorf(ErrInvalid, "automated change on %q: sets owner %q and drops it at once", e.Name, ch.Owner)
	case ch.State != nil && ch.ClearState:
		return Errorf(ErrInvalid, "automated change on %q: sets its state and clears it at once", e.Name)
	case ch.State != nil && !json.Valid(ch.State):
		return Errorf(ErrInvalid, "automated change on %q: its state is not valid JSON", e.Name)
	case len(ch.State) > MaxActorState:
		return Errorf(ErrInvalid, "automated change on %q: its state is %d bytes, at most %d are kept", e.Name, len(ch.State), MaxActorState)
	}
	if ch.Weights != nil {
		if err := ValidateWeights(e, ch.Weights); err != nil {
			return err
		}
	}
	if r := ch.Ramp; r != nil {
		if _, ok := e.Variant(r.Canary); !ok {
			return Errorf(ErrInvalid, "ramp: unknown canary variant %q (variants: %v)", r.Canary, VariantNames(e))
		}
		if err := ValidateWeights(e, r.Base); err != nil {
			return Errorf(ErrInvalid, "ramp.base: %v", err)
		}
	}
	return nil
}

// Automated applies an automated actor's change.
//
// The first change of a plan that sets weights pushes the weights in
// force before it onto the rollback history; its later steps push
// nothing, so however many steps a rollout takes, one rollback by a
// person returns to the weights before it.
//
// While the actor holds the endpoint (an owner, a ramp or a state) its
// weights stay an override even when they equal the file's: the hold is
// made against the file's weights, and a file that changes them ends it
// (Effective).
func Automated(ch AutoChange) Change {
	return func(st *State, t Target) (api.AuditEntry, error) {
		e := t.Endpoint
		cur := WeightsOf(e)
		a := api.AuditEntry{Action: ch.Action, Actor: ch.Actor, Plan: ch.Plan, Step: ch.Step, Detail: ch.Detail, Before: cur, After: cur}
		if err := ch.validate(e); err != nil {
			return a, err
		}
		if old := st.Endpoints[e.Name]; old != nil && old.Owner != "" && ch.Owner != "" && old.Owner != ch.Owner {
			return a, Errorf(ErrOwned, "endpoint %s is driven by %s; %s cannot take it over until it is released", e.Name, old.Owner, ch.Owner)
		}
		if ch.Expect != nil {
			var current json.RawMessage
			if old := st.Endpoints[e.Name]; old != nil {
				current = old.ActorState
			}
			if err := ch.Expect(current); err != nil {
				return a, Errorf(ErrConflict, "automated change on %s refused: %v", e.Name, err)
			}
		}
		es := st.Endpoint(e.Name)
		weights := cur
		if ch.Weights != nil {
			if es.Plan != ch.Plan {
				es.pushHistory(cur)
				es.Plan = ch.Plan
			}
			weights = maps.Clone(ch.Weights)
		}
		es.Ramp = cloneRamp(ch.Ramp)
		switch {
		case ch.ClearState:
			es.ActorState = nil
		case ch.State != nil:
			es.ActorState = bytes.Clone(ch.State)
		}
		switch {
		case ch.DropOwner:
			es.Owner = ""
		case ch.Owner != "":
			es.Owner = ch.Owner
		}
		held := es.Owner != "" || es.Ramp != nil || es.ActorState != nil
		file := WeightsOf(t.File)
		switch {
		case ch.Weights != nil:
			putWeights(es, weights, file, t.Now, held)
			es.Plan = ch.Plan // kept even when the override ends: it marks the history pushed
		case es.Weights == nil && held:
			// The hold needs a base the file can supersede: the weights in
			// force (the file's) become the override.
			putWeights(es, cur, file, t.Now, true)
		case es.Weights != nil && !held && maps.Equal(es.Weights, file):
			es.dropOverride() // released on the file's weights: nothing left to override
		}
		a.After = weights
		return a, nil
	}
}

// ActorState is the automated actor's state stored for endpoint, if any.
func (s *State) ActorState(endpoint string) (json.RawMessage, bool) {
	es := s.Endpoints[endpoint]
	if es == nil || es.ActorState == nil {
		return nil, false
	}
	return bytes.Clone(es.ActorState), true
}
