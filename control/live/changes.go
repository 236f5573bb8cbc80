package live

import (
	"maps"
	"strings"
	"time"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// Target is the endpoint a change acts on.
type Target struct {
	Endpoint *config.Endpoint // as in force now (the file plus live state)
	File     *config.Endpoint // as the config file has it
	Now      time.Time
}

// Change edits st (a Clone) for one change and returns its audit entry
// (Time, Endpoint and the requester are filled in by the caller). On an
// error the caller drops st; the entry's Action still names the change,
// for the refused count.
type Change func(st *State, t Target) (api.AuditEntry, error)

// checkOwner refuses a person's weight change on an endpoint an automated
// actor drives, saying how to release it.
func checkOwner(st *State, name string) error {
	es := st.Endpoints[name]
	if es == nil || es.Owner == "" {
		return nil
	}
	plan := ""
	if es.Plan != "" && !strings.Contains(es.Owner, es.Plan) {
		plan = " (plan " + es.Plan + ")"
	}
	return Errorf(ErrOwned, "endpoint %s is driven by %s%s; pause or abort it first", name, es.Owner, plan)
}

// setWeights makes weights the override for a person, remembering cur
// for rollback. A person's change ends an automated ramp, and the next
// automated plan pushes history again.
func setWeights(st *State, t Target, cur, weights map[string]int) {
	es := st.Endpoint(t.Endpoint.Name)
	es.pushHistory(cur)
	es.Ramp, es.Plan = nil, ""
	putWeights(es, weights, WeightsOf(t.File), t.Now, false)
}

// putWeights puts weights in force against the file's weights file. The
// same weights as the file's are no override (and end whatever an
// automated actor kept with the last one), unless keep: an automated
// actor still holds the endpoint, and its owner, ramp and state need a
// base the file can supersede.
func putWeights(es *EndpointState, weights, file map[string]int, now time.Time, keep bool) {
	if maps.Equal(weights, file) && !keep {
		es.dropOverride()
		return
	}
	t := now.UTC()
	es.Weights, es.Base, es.Since = maps.Clone(weights), maps.Clone(file), &t
}

// SetWeights replaces an endpoint's weights.
func SetWeights(weights map[string]int) Change {
	return func(st *State, t Target) (api.AuditEntry, error) {
		cur := WeightsOf(t.Endpoint)
		a := api.AuditEntry{Action: "set_weights", Before: cur, After: weights}
		if err := checkOwner(st, t.Endpoint.Name); err != nil {
			return a, err
		}
		if err := ValidateWeights(t.Endpoint, weights); err != nil {
			return a, err
		}
		setWeights(st, t, cur, weights)
		return a, nil
	}
}

// Promote sends all traffic to one variant (blue-green switch): it gets
// the endpoint's whole current weight (at most config.MaxWeight), the
// others 0, so users stored on other variants move too; rollback brings
// them back.
func Promote(variant string) Change {
	return func(st *State, t Target) (api.AuditEntry, error) {
		e := t.Endpoint
		cur := WeightsOf(e)
		a := api.AuditEntry{Action: "promote", Before: cur, Detail: "promoted " + variant}
		if err := checkOwner(st, e.Name); err != nil {
			return a, err
		}
		if variant == "" {
			return a, Errorf(ErrInvalid, `body: "variant" is required, e.g. {"variant": %q}`, e.Variants[len(e.Variants)-1].Name)
		}
		if _, ok := e.Variant(variant); !ok {
			return a, Errorf(ErrInvalid, "variant: unknown variant %q (variants: %s)", variant, strings.Join(VariantNames(e), ", "))
		}
		total := 0
		for _, w := range cur {
			total += w
		}
		w := make(map[string]int, len(cur))
		for name := range cur {
			w[name] = 0
		}
		// The whole weight, within what a weight may be: the share is 100%
		// either way, and the result must pass what set-weights checks.
		w[variant] = min(max(total, 1), config.MaxWeight)
		a.After = w
		if err := ValidateWeights(e, w); err != nil {
			return a, err
		}
		setWeights(st, t, cur, w)
		return a, nil
	}
}

// Rollback restores the weights in force before the last change (before
// a whole automated plan: its steps pushed one entry).
func Rollback() Change {
	return func(st *State, t Target) (api.AuditEntry, error) {
		name := t.Endpoint.Name
		a := api.AuditEntry{Action: "rollback", Before: WeightsOf(t.Endpoint)}
		if err := checkOwner(st, name); err != nil {
			return a, err
		}
		es := st.Endpoint(name)
		if len(es.History) == 0 {
			return a, Errorf(ErrConflict, "nothing to roll back: endpoint %q has no earlier weights since its live state began", name)
		}
		prev := es.History[len(es.History)-1]
		es.History = es.History[:len(es.History)-1]
		if err := ValidateWeights(t.Endpoint, prev); err != nil {
			return a, Errorf(ErrConflict, "the previous weights no longer fit the endpoint's variants: %v", err)
		}
		a.After = prev
		es.Ramp, es.Plan = nil, ""
		putWeights(es, prev, WeightsOf(t.File), t.Now, false)
		return a, nil
	}
}

// Reset drops an endpoint's live overrides: the file is in force again.
func Reset() Change {
	return func(st *State, t Target) (api.AuditEntry, error) {
		name := t.Endpoint.Name
		file := WeightsOf(t.File)
		a := api.AuditEntry{Action: "reset", Before: WeightsOf(t.Endpoint), After: file, Detail: "back to the config file"}
		if err := checkOwner(st, name); err != nil {
			return a, err
		}
		es := st.Endpoint(name)
		if es.Weights == nil && len(es.Shadows) == 0 {
			return a, Errorf(ErrConflict, "endpoint %q has no live override: the config file is already in force", name)
		}
		if es.Weights != nil {
			es.pushHistory(a.Before)
		}
		es.dropOverride()
		es.Shadows = nil
		return a, nil
	}
}

// SetShadowPaused pauses or resumes a shadow. It is allowed while an
// automated actor drives the endpoint's weights: it touches no weight.
func SetShadowPaused(shadow string, paused bool) Change {
	action := "resume"
	if paused {
		action = "pause"
	}
	return func(st *State, t Target) (api.AuditEntry, error) {
		e := t.Endpoint
		a := api.AuditEntry{Action: action, Shadow: shadow}
		if ShadowIndex(e, shadow) < 0 {
			names := make([]string, 0, len(e.Shadows))
			for _, s := range e.Shadows {
				names = append(names, s.Name)
			}
			return a, Errorf(ErrUnknownShadow, "endpoint %q has no shadow %q (shadows: %s)", e.Name, shadow, strings.Join(names, ", "))
		}
		base := t.File.Shadows[ShadowIndex(t.File, shadow)].Paused
		es := st.Endpoint(e.Name)
		if paused == base {
			delete(es.Shadows, shadow) // same as the file: no override
		} else {
			if es.Shadows == nil {
				es.Shadows = map[string]ShadowState{}
			}
			es.Shadows[shadow] = ShadowState{Paused: paused, Base: base}
		}
		return a, nil
	}
}
