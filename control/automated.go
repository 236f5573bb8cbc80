package control

import (
	"encoding/json"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/control/live"
)

// AutoChange is a change made by an automated actor (a rollout or a
// bandit) rather than a person: see live.AutoChange.
type AutoChange = live.AutoChange

// ApplyAutomated makes an automated actor's change on endpoint the way a
// person's is made (the same lock, compare-and-set on the stored
// revision, persistence and Apply), audited with the actor, plan and
// step instead of a client address. What it may do, and how its audit
// entries merge, is live.Automated's.
func (c *Controller) ApplyAutomated(endpoint string, ch AutoChange) (api.ChangeResult, error) {
	return c.change(endpoint, Requester{}, live.Automated(ch))
}

// ActorState is the automated actor's state stored for endpoint, as this
// replica last adopted it (another replica's write shows after a sync or
// a change). false: none, also when the config file superseded the live
// weights it was kept with — the actor's cue that its plan is over.
func (c *Controller) ActorState(endpoint string) (json.RawMessage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state.ActorState(endpoint) // a copy: the caller may keep it
}
