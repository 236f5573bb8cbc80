package httpapi

import (
	"errors"
	"net/http"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/control/live"
)

// Status is the HTTP status that answers err: the domain's codes map to
// 4xx, a body error keeps its own, anything else is a 500.
func Status(err error) int {
	var be *admin.BodyError
	if errors.As(err, &be) {
		return be.Status
	}
	switch live.CodeOf(err) {
	case live.ErrInvalid:
		return http.StatusBadRequest
	case live.ErrUnknownEndpoint, live.ErrUnknownShadow:
		return http.StatusNotFound
	case live.ErrConflict, live.ErrOwned:
		return http.StatusConflict
	case live.ErrRejected:
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}

func writeErr(w http.ResponseWriter, err error) {
	admin.WriteError(w, Status(err), err.Error())
}
