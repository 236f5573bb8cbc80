package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// maxBody bounds a request body: weight sets are tiny.
const maxBody = 1 << 20

// Register adds the live-control routes to the admin handler.
func (c *Controller) Register(h *admin.Handler) {
	h.Handle("GET /v1/endpoints", http.HandlerFunc(c.handleList))
	h.Handle("GET /v1/endpoints/{endpoint}", http.HandlerFunc(c.handleGet))
	h.Handle("PUT /v1/endpoints/{endpoint}/weights", http.HandlerFunc(c.handleSetWeights))
	h.Handle("POST /v1/endpoints/{endpoint}/weights", http.HandlerFunc(c.handleSetWeights))
	h.Handle("POST /v1/endpoints/{endpoint}/promote", http.HandlerFunc(c.handlePromote))
	h.Handle("POST /v1/endpoints/{endpoint}/rollback", http.HandlerFunc(c.handleRollback))
	h.Handle("DELETE /v1/endpoints/{endpoint}/override", http.HandlerFunc(c.handleReset))
	h.Handle("POST /v1/endpoints/{endpoint}/shadows/{shadow}/pause", http.HandlerFunc(c.handlePause))
	h.Handle("POST /v1/endpoints/{endpoint}/shadows/{shadow}/resume", http.HandlerFunc(c.handleResume))
	h.Handle("GET /v1/endpoints/{endpoint}/shadows/{shadow}/disagreements", http.HandlerFunc(c.handleDisagreements))
	h.Handle("GET /v1/audit", http.HandlerFunc(c.handleAudit))
	h.Handle("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such admin API path %s %s (see /v1/endpoints)", r.Method, r.URL.Path))
	}))
}

func requester(r *http.Request) Requester {
	return Requester{Remote: r.RemoteAddr, UserAgent: r.UserAgent()}
}

func writeErr(w http.ResponseWriter, err error) {
	var re *RequestError
	if errors.As(err, &re) {
		admin.WriteError(w, re.Status, re.Msg)
		return
	}
	admin.WriteError(w, http.StatusInternalServerError, err.Error())
}

// decode reads a JSON body strictly: unknown fields, trailing data, wrong
// types and oversized bodies are 4xx errors that say what was wrong.
func decode(r *http.Request, v any) error {
	body := http.MaxBytesReader(nil, r.Body, maxBody)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var (
			syn  *json.SyntaxError
			typ  *json.UnmarshalTypeError
			size *http.MaxBytesError
		)
		switch {
		case errors.Is(err, io.EOF):
			return badRequest("body: empty; send a JSON object")
		case errors.As(err, &syn):
			return badRequest("body: malformed JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ):
			return badRequest("body: field %q must be %s, got JSON %s", typ.Field, typ.Type, typ.Value)
		case errors.As(err, &size):
			return &RequestError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("body: larger than %d bytes", maxBody)}
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return badRequest("body: %s", strings.TrimPrefix(err.Error(), "json: "))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("body: truncated JSON")
		default:
			return badRequest("body: %v", err)
		}
	}
	if dec.More() {
		return badRequest("body: unexpected data after the JSON object")
	}
	return nil
}

func (c *Controller) handleList(w http.ResponseWriter, r *http.Request) {
	v := c.statusView(r.Context(), "")
	out := api.EndpointList{Endpoints: make([]api.EndpointStatus, 0, len(v.eff.Endpoints))}
	for i := range v.eff.Endpoints {
		out.Endpoints = append(out.Endpoints, v.status(&v.eff.Endpoints[i]))
	}
	admin.WriteJSON(w, http.StatusOK, out)
}

func (c *Controller) handleGet(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("endpoint")
	c.mu.Lock()
	eff := c.effective
	c.mu.Unlock()
	e, ok := eff.Endpoint(name)
	if !ok {
		writeErr(w, notFound("unknown endpoint %q (endpoints: %s)", name, strings.Join(endpointNames(eff), ", ")))
		return
	}
	v := c.statusView(r.Context(), name)
	if e, ok = v.eff.Endpoint(name); !ok { // removed by a reload meanwhile
		writeErr(w, notFound("unknown endpoint %q (endpoints: %s)", name, strings.Join(endpointNames(v.eff), ", ")))
		return
	}
	admin.WriteJSON(w, http.StatusOK, v.status(e))
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

func (c *Controller) respond(w http.ResponseWriter, res api.ChangeResult, err error) {
	if err != nil {
		writeErr(w, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, res)
}

func (c *Controller) handleSetWeights(w http.ResponseWriter, r *http.Request) {
	var req api.SetWeightsRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	res, err := c.SetWeights(r.PathValue("endpoint"), req.Weights, requester(r))
	c.respond(w, res, err)
}

func (c *Controller) handlePromote(w http.ResponseWriter, r *http.Request) {
	var req api.PromoteRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	res, err := c.Promote(r.PathValue("endpoint"), req.Variant, requester(r))
	c.respond(w, res, err)
}

func (c *Controller) handleRollback(w http.ResponseWriter, r *http.Request) {
	res, err := c.Rollback(r.PathValue("endpoint"), requester(r))
	c.respond(w, res, err)
}

func (c *Controller) handleReset(w http.ResponseWriter, r *http.Request) {
	res, err := c.Reset(r.PathValue("endpoint"), requester(r))
	c.respond(w, res, err)
}

func (c *Controller) handlePause(w http.ResponseWriter, r *http.Request) {
	res, err := c.SetShadowPaused(r.PathValue("endpoint"), r.PathValue("shadow"), true, requester(r))
	c.respond(w, res, err)
}

func (c *Controller) handleResume(w http.ResponseWriter, r *http.Request) {
	res, err := c.SetShadowPaused(r.PathValue("endpoint"), r.PathValue("shadow"), false, requester(r))
	c.respond(w, res, err)
}

func (c *Controller) handleDisagreements(w http.ResponseWriter, r *http.Request) {
	ep, sh := r.PathValue("endpoint"), r.PathValue("shadow")
	c.mu.Lock()
	eff := c.effective
	c.mu.Unlock()
	e, ok := eff.Endpoint(ep)
	if !ok {
		writeErr(w, notFound("unknown endpoint %q (endpoints: %s)", ep, strings.Join(endpointNames(eff), ", ")))
		return
	}
	i := shadowIndex(e, sh)
	if i < 0 {
		writeErr(w, notFound("endpoint %q has no shadow %q", ep, sh))
		return
	}
	if e.Shadows[i].Compare == nil || c.opts.Shadows == nil {
		writeErr(w, conflict("shadow %q of %q is not in compare mode (add compare: to it in the config)", sh, ep))
		return
	}
	samples, _ := c.opts.Shadows.Samples(ep, sh)
	if samples == nil {
		samples = []api.Sample{}
	}
	admin.WriteJSON(w, http.StatusOK, api.Disagreements{Endpoint: ep, Shadow: sh, Samples: samples})
}

func (c *Controller) handleAudit(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			writeErr(w, badRequest("limit: %q is not a positive integer", s))
			return
		}
		limit = n
	}
	admin.WriteJSON(w, http.StatusOK, api.AuditList{Entries: c.Audit(limit)})
}
