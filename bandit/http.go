package bandit

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// maxBody bounds a rewards post (1,000 rewards of a few hundred bytes).
const maxBody = 1 << 20

// Register adds the bandit routes to the admin handler:
//
//	GET  /v1/bandits                          every bandit
//	GET  /v1/endpoints/{endpoint}/bandit      one bandit's arms
//	POST /v1/endpoints/{endpoint}/rewards     rewards for users or requests
func Register(h *admin.Handler, m *Manager, r *Rewards, effective func() *config.Config) {
	h.Handle("GET /v1/bandits", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		admin.WriteJSON(w, http.StatusOK, api.BanditList{Bandits: m.List()})
	}))
	h.Handle("GET /v1/endpoints/{endpoint}/bandit", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		st, err := m.Status(req.PathValue("endpoint"))
		if err != nil {
			admin.WriteError(w, http.StatusNotFound, err.Error())
			return
		}
		admin.WriteJSON(w, http.StatusOK, st)
	}))
	h.Handle("POST /v1/endpoints/{endpoint}/rewards", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body api.RewardsRequest
		if err := decode(req, &body); err != nil {
			writeErr(w, err)
			return
		}
		res, err := r.Post(req.Context(), effective(), req.PathValue("endpoint"), body)
		if err != nil {
			writeErr(w, err)
			return
		}
		admin.WriteJSON(w, http.StatusOK, res)
	}))
}

func writeErr(w http.ResponseWriter, err error) {
	var re *RequestError
	if errors.As(err, &re) {
		admin.WriteError(w, re.Status, re.Msg)
		return
	}
	admin.WriteError(w, http.StatusInternalServerError, err.Error())
}

// decode reads the body strictly (admin.DecodeJSON).
func decode(r *http.Request, v any) error {
	err := admin.DecodeJSON(r, v, maxBody, `send {"rewards": [...]}`)
	var be *admin.BodyError
	if errors.As(err, &be) {
		if be.Status == http.StatusRequestEntityTooLarge {
			be.Msg += fmt.Sprintf(" (at most %d rewards a batch)", api.MaxRewardBatch)
		}
		return &RequestError{Status: be.Status, Msg: be.Msg}
	}
	return err
}
