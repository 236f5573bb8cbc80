package rollout

import (
	"errors"
	"net/http"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/api"
)

// Register adds the rollout routes to the admin handler:
//
//	GET  /v1/rollouts                                  every endpoint's rollout
//	GET  /v1/endpoints/{endpoint}/rollout              one rollout's status
//	POST /v1/endpoints/{endpoint}/rollout/{action}     start, pause, resume, promote, abort
func (m *Manager) Register(h *admin.Handler) {
	h.Handle("GET /v1/rollouts", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, api.RolloutList{Rollouts: m.List()})
	}))
	h.Handle("GET /v1/endpoints/{endpoint}/rollout", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := m.Status(r.PathValue("endpoint"))
		respond(w, st, err)
	}))
	h.Handle("POST /v1/endpoints/{endpoint}/rollout/{action}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, who := r.PathValue("endpoint"), r.RemoteAddr+" "+r.UserAgent()
		var (
			st  api.RolloutStatus
			err error
		)
		switch r.PathValue("action") {
		case "start":
			st, err = m.Start(name, who)
		case "pause":
			st, err = m.Pause(name, who)
		case "resume":
			st, err = m.Resume(name, who)
		case "promote":
			st, err = m.Promote(name, who)
		case "abort":
			st, err = m.Abort(name, who)
		default:
			admin.WriteError(w, http.StatusNotFound, "unknown rollout action "+r.PathValue("action")+" (start, pause, resume, promote, abort)")
			return
		}
		respond(w, st, err)
	}))
}

func respond(w http.ResponseWriter, st api.RolloutStatus, err error) {
	switch {
	case err == nil:
		admin.WriteJSON(w, http.StatusOK, st)
	case errors.Is(err, ErrUnknown), errors.Is(err, ErrNoPlan):
		admin.WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrRunning), errors.Is(err, ErrNotRunning):
		admin.WriteError(w, http.StatusConflict, err.Error())
	default:
		admin.WriteError(w, http.StatusInternalServerError, err.Error())
	}
}
