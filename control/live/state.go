package live

import (
	"bytes"
	"encoding/json"
	"maps"
	"strconv"
	"time"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// State is everything live control has changed. It is stored as JSON.
type State struct {
	// Revision increases with every change; replicas sharing a store
	// adopt a higher revision than their own.
	Revision  int64                     `json:"revision"`
	Endpoints map[string]*EndpointState `json:"endpoints,omitempty"`
	Audit     []api.AuditEntry          `json:"audit,omitempty"` // oldest first

	owned map[string]bool // endpoint states this copy may write (see Endpoint)
	// auditJSON[i] is Audit[i] encoded, made once when the entry is
	// added (a stored entry is never changed, only replaced), so saving
	// the state does not encode the whole audit again. Shorter than
	// Audit when unknown.
	auditJSON [][]byte
}

// EndpointState is one endpoint's live overrides.
//
// Owner, Ramp, ActorState and Plan belong to an automated actor and exist
// only together with a weight override: they were made against the same
// Base, so when the file supersedes the weights they go too (dropOverride).
type EndpointState struct {
	// Weights in force instead of the file's, made against Base (the
	// file's weights at the time). nil: the file's weights are in force.
	Weights map[string]int `json:"weights,omitempty"`
	Base    map[string]int `json:"base,omitempty"`
	Since   *time.Time     `json:"since,omitempty"`
	// History holds the weights in force before each change, newest last.
	History []map[string]int `json:"history,omitempty"`
	// Shadows holds pause/resume overrides by shadow name.
	Shadows map[string]ShadowState `json:"shadows,omitempty"`

	// Owner, while set, refuses people's weight changes (ErrOwned).
	Owner string `json:"owner,omitempty"`
	// Ramp is served as config.Endpoint.Ramp while Weights are in force.
	Ramp *config.Ramp `json:"ramp,omitempty"`
	// ActorState is the automated actor's own state, opaque here.
	ActorState json.RawMessage `json:"actor_state,omitempty"`
	// Plan is the automated plan that last pushed onto History: its
	// later steps push nothing, so a whole rollout is one rollback.
	Plan string `json:"plan,omitempty"`
}

// ShadowState is a pause or resume made against the file's value (Base).
type ShadowState struct {
	Paused bool `json:"paused"`
	Base   bool `json:"base"`
}

// NewState is an empty state (revision 0).
func NewState() *State { return &State{Endpoints: map[string]*EndpointState{}} }

// Clone copies the state for a change. Endpoint states are shared until
// Endpoint hands one out for writing (copy on write), and audit entries
// are never modified once stored, so the copy shares them too (in a new
// backing array: appending or removing never touches the original's). A
// change thus costs little however many endpoints have live state.
func (s *State) Clone() *State {
	n := &State{Revision: s.Revision, Endpoints: maps.Clone(s.Endpoints)}
	if n.Endpoints == nil {
		n.Endpoints = map[string]*EndpointState{}
	}
	if s.Audit != nil {
		n.Audit = append(make([]api.AuditEntry, 0, len(s.Audit)+1), s.Audit...)
	}
	if len(s.auditJSON) == len(s.Audit) {
		n.auditJSON = append(make([][]byte, 0, len(s.auditJSON)+1), s.auditJSON...)
	}
	return n
}

func (es *EndpointState) copy() *EndpointState {
	c := *es
	c.Weights, c.Base, c.Shadows = maps.Clone(es.Weights), maps.Clone(es.Base), maps.Clone(es.Shadows)
	if es.Since != nil {
		t := *es.Since
		c.Since = &t
	}
	if es.History != nil {
		c.History = make([]map[string]int, len(es.History))
		for i, h := range es.History {
			c.History[i] = maps.Clone(h)
		}
	}
	c.Ramp = cloneRamp(es.Ramp)
	c.ActorState = bytes.Clone(es.ActorState)
	return &c
}

func cloneRamp(r *config.Ramp) *config.Ramp {
	if r == nil {
		return nil
	}
	return &config.Ramp{Canary: r.Canary, Base: maps.Clone(r.Base)}
}

// Endpoint returns the named endpoint's state for writing: created when
// missing, copied the first time this State writes it.
func (s *State) Endpoint(name string) *EndpointState {
	if s.Endpoints == nil {
		s.Endpoints = map[string]*EndpointState{}
	}
	es := s.Endpoints[name]
	switch {
	case es == nil:
		es = &EndpointState{}
	case !s.owned[name]:
		es = es.copy()
	default:
		return es
	}
	s.Endpoints[name] = es
	if s.owned == nil {
		s.owned = map[string]bool{}
	}
	s.owned[name] = true
	return es
}

// dropOverride puts the file's weights back in force, and with them ends
// everything an automated actor kept against the override's base.
func (es *EndpointState) dropOverride() {
	es.Weights, es.Base, es.Since = nil, nil, nil
	es.Owner, es.Ramp, es.ActorState, es.Plan = "", nil, nil, ""
}

// pushHistory remembers w for rollback, keeping the newest maxHistory.
func (es *EndpointState) pushHistory(w map[string]int) {
	es.History = append(es.History, w)
	if n := len(es.History) - MaxHistory; n > 0 {
		es.History = es.History[n:]
	}
}

// prune drops endpoint entries that hold nothing.
func (s *State) prune() {
	for name, es := range s.Endpoints {
		if es.Weights == nil && len(es.History) == 0 && len(es.Shadows) == 0 {
			delete(s.Endpoints, name)
		}
	}
}

// Encode is the state as stored: compact JSON with the revision first
// (stores read it from there without decoding the whole state), the
// audit from its encoded entries.
func (s *State) Encode() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(256 + len(s.Audit)*320)
	b.WriteString(`{"revision":`)
	b.WriteString(strconv.FormatInt(s.Revision, 10))
	if len(s.Endpoints) > 0 {
		eps, err := json.Marshal(s.Endpoints)
		if err != nil {
			return nil, err
		}
		b.WriteString(`,"endpoints":`)
		b.Write(eps)
	}
	if len(s.Audit) > 0 {
		b.WriteString(`,"audit":[`)
		cached := len(s.auditJSON) == len(s.Audit)
		for i := range s.Audit {
			if i > 0 {
				b.WriteByte(',')
			}
			if cached {
				b.Write(s.auditJSON[i])
				continue
			}
			e, err := json.Marshal(s.Audit[i])
			if err != nil {
				return nil, err
			}
			b.Write(e)
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// MarshalJSON is Encode, so every encoding of a State is the stored one.
func (s *State) MarshalJSON() ([]byte, error) { return s.Encode() }

// Equal reports whether two states hold the same content.
func (s *State) Equal(o *State) bool {
	a, err1 := s.Encode()
	b, err2 := o.Encode()
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// Bound applies the bounds to a state read from a store, which an older
// release (or anything else) may have written without them.
func (s *State) Bound() {
	if s.Endpoints == nil {
		s.Endpoints = map[string]*EndpointState{}
	}
	if n := len(s.Audit) - MaxAudit; n > 0 {
		s.Audit = s.Audit[n:]
	}
	for i := range s.Audit {
		s.Audit[i] = boundEntry(s.Audit[i])
	}
	for name, es := range s.Endpoints {
		if es == nil {
			delete(s.Endpoints, name)
			continue
		}
		if n := len(es.History) - MaxHistory; n > 0 {
			es.History = es.History[n:]
		}
	}
	s.encodeAudit()
}

// encodeAudit fills auditJSON for every entry (after a load).
func (s *State) encodeAudit() {
	s.auditJSON = make([][]byte, 0, len(s.Audit)+1)
	for _, e := range s.Audit {
		b, err := json.Marshal(e)
		if err != nil {
			s.auditJSON = nil
			return
		}
		s.auditJSON = append(s.auditJSON, b)
	}
}
