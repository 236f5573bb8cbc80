package control

import (
	"context"
	"time"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control/live"
)

// ListEndpoints is every endpoint in force with its weights, traffic,
// users and shadows (GET /v1/endpoints).
func (c *Controller) ListEndpoints(ctx context.Context) api.EndpointList {
	v := c.statusView(ctx, "")
	out := api.EndpointList{Endpoints: make([]api.EndpointStatus, 0, len(v.eff.Endpoints))}
	for i := range v.eff.Endpoints {
		out.Endpoints = append(out.Endpoints, v.status(&v.eff.Endpoints[i]))
	}
	return out
}

// GetEndpoint is one endpoint's status; an unknown name is
// live.ErrUnknownEndpoint, found before the view is gathered.
func (c *Controller) GetEndpoint(ctx context.Context, name string) (api.EndpointStatus, error) {
	eff := c.Effective()
	if eff == nil {
		eff = &config.Config{}
	}
	if _, ok := eff.Endpoint(name); !ok {
		return api.EndpointStatus{}, live.UnknownEndpoint(eff, name)
	}
	v := c.statusView(ctx, name)
	e, ok := v.eff.Endpoint(name)
	if !ok { // removed by a reload meanwhile
		return api.EndpointStatus{}, live.UnknownEndpoint(v.eff, name)
	}
	return v.status(e), nil
}

// Disagreements is a compare-mode shadow's recent disagreements.
func (c *Controller) Disagreements(endpoint, shadow string) (api.Disagreements, error) {
	eff := c.Effective()
	if eff == nil {
		eff = &config.Config{}
	}
	e, ok := eff.Endpoint(endpoint)
	if !ok {
		return api.Disagreements{}, live.UnknownEndpoint(eff, endpoint)
	}
	i := live.ShadowIndex(e, shadow)
	if i < 0 {
		return api.Disagreements{}, live.Errorf(live.ErrUnknownShadow, "endpoint %q has no shadow %q", endpoint, shadow)
	}
	if e.Shadows[i].Compare == nil || c.opts.Shadows == nil {
		return api.Disagreements{}, live.Errorf(live.ErrConflict, "shadow %q of %q is not in compare mode (add compare: to it in the config)", shadow, endpoint)
	}
	samples, _ := c.opts.Shadows.Samples(endpoint, shadow)
	if samples == nil {
		samples = []api.Sample{}
	}
	return api.Disagreements{Endpoint: endpoint, Shadow: shadow, Samples: samples}, nil
}

// overrideInfo is what a status shows of an endpoint's live state.
type overrideInfo struct {
	override      bool
	since         *time.Time
	rollbackDepth int
}

// statusView is everything a status answer reads, gathered once per
// request: the configs and live state under the lock, one pass over the
// traffic counters, and the user counts in one store round trip. Building
// an answer for n endpoints is then linear in n.
type statusView struct {
	c         *Controller
	eff       *config.Config
	file      map[string]*config.Endpoint
	overrides map[string]overrideInfo
	traffic   trafficSnapshot
	users     map[string][]int64
}

// statusView gathers the view for one endpoint, or for all when only is "".
func (c *Controller) statusView(ctx context.Context, only string) *statusView {
	v := &statusView{c: c}
	c.mu.Lock()
	file := c.file
	v.eff = c.effective
	if v.eff == nil || file == nil { // no config loaded yet
		v.eff, file = &config.Config{}, &config.Config{}
	}
	v.overrides = make(map[string]overrideInfo, len(c.state.Endpoints))
	for name, es := range c.state.Endpoints {
		if only == "" || name == only {
			v.overrides[name] = overrideInfo{override: es.Weights != nil, since: es.Since, rollbackDepth: len(es.History)}
		}
	}
	c.mu.Unlock()
	names := make([]string, 0, len(v.eff.Endpoints))
	v.file = make(map[string]*config.Endpoint, len(file.Endpoints))
	for i := range file.Endpoints {
		if fe := &file.Endpoints[i]; only == "" || fe.Name == only {
			v.file[fe.Name] = fe
		}
	}
	for _, e := range v.eff.Endpoints {
		if only == "" || e.Name == only {
			names = append(names, e.Name)
		}
	}
	v.traffic = c.traffic.snapshot(only)
	if c.opts.Users != nil {
		uctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		v.users, _ = c.opts.Users.UsersMany(uctx, names)
		cancel()
	}
	return v
}

// status describes one endpoint of the effective config.
func (v *statusView) status(e *config.Endpoint) api.EndpointStatus {
	st := api.EndpointStatus{Name: e.Name}
	if o, ok := v.overrides[e.Name]; ok {
		st.Override, st.OverrideSince, st.RollbackDepth = o.override, o.since, o.rollbackDepth
	}
	fe := v.file[e.Name]
	win := v.traffic.window(e.Name)
	st.LiveSource = win.source
	var liveTotal uint64
	for _, n := range win.live {
		liveTotal += n
	}
	users := v.users[e.Name]
	total := e.TotalWeight()
	st.Variants = make([]api.VariantStatus, 0, len(e.Variants))
	for i, vr := range e.Variants {
		vs := api.VariantStatus{Name: vr.Name, Weight: vr.Weight, LiveWindowSeconds: win.seconds}
		if fe != nil {
			if fv, ok := fe.Variant(vr.Name); ok {
				vs.ConfiguredWeight = fv.Weight
			}
		}
		if total > 0 {
			vs.WeightShare = float64(vr.Weight) / float64(total)
		}
		if liveTotal > 0 {
			s := float64(win.live[vr.Name]) / float64(liveTotal)
			vs.LiveShare = &s
		}
		vs.Requests, vs.Decisions = win.requests[vr.Name], win.decision[vr.Name]
		if i < len(users) {
			u := users[i]
			vs.Users = &u
		}
		st.Variants = append(st.Variants, vs)
	}
	for _, s := range e.Shadows {
		ss := api.ShadowStatus{Name: s.Name, Percent: s.Percent, PerRequest: s.PerRequest, Compare: s.Compare != nil, Paused: s.Paused}
		if v.c.opts.Shadows != nil && s.Compare != nil {
			if compared, agreed, errs, dropped, ok := v.c.opts.Shadows.Stats(e.Name, s.Name); ok {
				ss.Compared, ss.Agreed, ss.Errors, ss.Dropped = compared, agreed, errs, dropped
				if compared > 0 {
					a := float64(agreed) / float64(compared)
					ss.Agreement = &a
				}
			}
		}
		st.Shadows = append(st.Shadows, ss)
	}
	return st
}
