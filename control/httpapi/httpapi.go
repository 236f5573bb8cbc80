package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/control/live"
)

// Controller is what the API asks (*control.Controller).
type Controller interface {
	ListEndpoints(ctx context.Context) api.EndpointList
	GetEndpoint(ctx context.Context, name string) (api.EndpointStatus, error)
	SetWeights(endpoint string, weights map[string]int, who live.Requester) (api.ChangeResult, error)
	Promote(endpoint, variant string, who live.Requester) (api.ChangeResult, error)
	Rollback(endpoint string, who live.Requester) (api.ChangeResult, error)
	Reset(endpoint string, who live.Requester) (api.ChangeResult, error)
	SetShadowPaused(endpoint, shadow string, paused bool, who live.Requester) (api.ChangeResult, error)
	Disagreements(endpoint, shadow string) (api.Disagreements, error)
	Audit(limit int) []api.AuditEntry
}

// Register adds the live-control routes to the admin handler.
func Register(h *admin.Handler, c Controller) {
	change := func(do func(r *http.Request, who live.Requester) (api.ChangeResult, error)) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			res, err := do(r, requester(r))
			if err != nil {
				writeErr(w, err)
				return
			}
			admin.WriteJSON(w, http.StatusOK, res)
		})
	}
	setWeights := change(func(r *http.Request, who live.Requester) (api.ChangeResult, error) {
		var req api.SetWeightsRequest
		if err := decode(r, &req); err != nil {
			return api.ChangeResult{}, err
		}
		return c.SetWeights(r.PathValue("endpoint"), req.Weights, who)
	})
	h.Handle("GET /v1/endpoints", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, c.ListEndpoints(r.Context()))
	}))
	h.Handle("GET /v1/endpoints/{endpoint}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := c.GetEndpoint(r.Context(), r.PathValue("endpoint"))
		if err != nil {
			writeErr(w, err)
			return
		}
		admin.WriteJSON(w, http.StatusOK, st)
	}))
	h.Handle("PUT /v1/endpoints/{endpoint}/weights", setWeights)
	h.Handle("POST /v1/endpoints/{endpoint}/weights", setWeights)
	h.Handle("POST /v1/endpoints/{endpoint}/promote", change(func(r *http.Request, who live.Requester) (api.ChangeResult, error) {
		var req api.PromoteRequest
		if err := decode(r, &req); err != nil {
			return api.ChangeResult{}, err
		}
		return c.Promote(r.PathValue("endpoint"), req.Variant, who)
	}))
	h.Handle("POST /v1/endpoints/{endpoint}/rollback", change(func(r *http.Request, who live.Requester) (api.ChangeResult, error) {
		return c.Rollback(r.PathValue("endpoint"), who)
	}))
	h.Handle("DELETE /v1/endpoints/{endpoint}/override", change(func(r *http.Request, who live.Requester) (api.ChangeResult, error) {
		return c.Reset(r.PathValue("endpoint"), who)
	}))
	for path, paused := range map[string]bool{"pause": true, "resume": false} {
		h.Handle("POST /v1/endpoints/{endpoint}/shadows/{shadow}/"+path, change(func(r *http.Request, who live.Requester) (api.ChangeResult, error) {
			return c.SetShadowPaused(r.PathValue("endpoint"), r.PathValue("shadow"), paused, who)
		}))
	}
	h.Handle("GET /v1/endpoints/{endpoint}/shadows/{shadow}/disagreements", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := c.Disagreements(r.PathValue("endpoint"), r.PathValue("shadow"))
		if err != nil {
			writeErr(w, err)
			return
		}
		admin.WriteJSON(w, http.StatusOK, d)
	}))
	h.Handle("GET /v1/audit", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := 100
		if s := r.URL.Query().Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				writeErr(w, live.Errorf(live.ErrInvalid, "limit: %q is not a positive integer", s))
				return
			}
			limit = n
		}
		admin.WriteJSON(w, http.StatusOK, api.AuditList{Entries: c.Audit(limit)})
	}))
	h.Handle("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin.WriteError(w, http.StatusNotFound, fmt.Sprintf("no such admin API path %s %s (see /v1/endpoints)", r.Method, r.URL.Path))
	}))
}

func requester(r *http.Request) live.Requester {
	return live.Requester{Remote: r.RemoteAddr, UserAgent: r.UserAgent()}
}
