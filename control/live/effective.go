package live

import (
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// Effective lays st over the file config and returns the config to
// serve, plus audit entries for overrides the file superseded (they are
// removed from st):
//   - an endpoint no longer in the file loses all its live state;
//   - weights made against other file weights than the file's now, or
//     that no longer pass ValidateWeights, give way to the file's, and
//     the automated actor's owner, ramp and state made with them go too;
//   - a shadow pause or resume gives way when the shadow is gone or the
//     file's paused setting changed.
//
// While live weights are in force their ramp (if any) is served as the
// endpoint's Ramp.
//
// The result shares with file everything live state does not change
// (copy on write: a new endpoint slice, and new variant and shadow
// slices for the endpoints with live state), so a change costs little
// with many endpoints; neither config is modified afterwards.
func Effective(file *config.Config, st *State, now time.Time) (*config.Config, []api.AuditEntry) {
	cfg := *file
	cfg.Endpoints = slices.Clone(file.Endpoints)
	index := make(map[string]int, len(cfg.Endpoints))
	for i := range cfg.Endpoints {
		index[cfg.Endpoints[i].Name] = i
	}
	var superseded []api.AuditEntry
	drop := func(name, shadow string, before, after map[string]int, detail string) {
		superseded = append(superseded, api.AuditEntry{Time: now, Action: "superseded", Endpoint: name, Shadow: shadow,
			Before: before, After: after, Detail: detail})
	}
	names := make([]string, 0, len(st.Endpoints))
	for n := range st.Endpoints {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		es := st.Endpoints[name]
		i, ok := index[name]
		if !ok {
			drop(name, "", es.Weights, nil, "the endpoint is no longer in the config file; its live state was dropped"+actorNote(es))
			delete(st.Endpoints, name)
			continue
		}
		e := &cfg.Endpoints[i]
		if es.Weights != nil {
			e.Variants = slices.Clone(e.Variants)
		}
		if len(es.Shadows) > 0 {
			e.Shadows = slices.Clone(e.Shadows)
		}
		if es.Weights != nil {
			fw := WeightsOf(e)
			if err := ValidateWeights(e, es.Weights); err != nil {
				drop(name, "", es.Weights, fw, "the stored weights are not valid for the endpoint ("+err.Error()+"); the file's weights are in force"+actorNote(es))
				es = st.Endpoint(name)
				es.dropOverride()
			} else if !maps.Equal(fw, es.Base) {
				drop(name, "", es.Weights, fw, "the config file changed this endpoint's weights; the file's weights are in force"+actorNote(es))
				es = st.Endpoint(name)
				es.dropOverride()
			} else {
				for i := range e.Variants {
					e.Variants[i].Weight = es.Weights[e.Variants[i].Name]
				}
				e.Ramp = es.Ramp
			}
		}
		for sh, ss := range es.Shadows {
			i := ShadowIndex(e, sh)
			if i < 0 || e.Shadows[i].Paused != ss.Base {
				detail := "the config file changed this shadow's paused setting; the file's setting is in force"
				if i < 0 {
					detail = "the shadow is no longer in the config file"
				}
				drop(name, sh, nil, nil, detail)
				delete(st.Endpoint(name).Shadows, sh)
				continue
			}
			e.Shadows[i].Paused = ss.Paused
		}
	}
	st.prune()
	return &cfg, superseded
}

// actorNote tells, in a superseded entry, that an automated actor's hold
// on the endpoint ended with the override.
func actorNote(es *EndpointState) string {
	if es.Owner == "" && es.Ramp == nil && es.ActorState == nil {
		return ""
	}
	who := es.Owner
	if who == "" {
		who = "the automated actor"
	}
	return "; " + who + " no longer drives it (its ramp and state were dropped)"
}
