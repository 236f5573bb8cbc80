package control

import (
	"encoding/json"

	"github.com/modelsplit/modelsplit/config"
)

// AutoChange is a change made by an automated actor (a rollout or a
// bandit) rather than a person: it is audited with the actor, plan and
// step, and consecutive changes of one plan are merged in the audit.
//
// CONTRACT (implemented by ApplyAutomated): see the session plan.
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
	// promote, rollback) on the endpoint refused with a conflict naming
	// the owner; DropOwner releases it.
	Owner     string
	DropOwner bool
}
