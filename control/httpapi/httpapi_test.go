package httpapi

import (
	"errors"
	"fmt"
	"github.com/modelsplit/modelsplit/admin"
	"net/http"
	"testing"

	"github.com/modelsplit/modelsplit/control/live"
)

// Each domain code answers the status the admin API has always given it.
func TestStatusOfEachCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{live.Errorf(live.ErrInvalid, "weights.a: must not be negative"), http.StatusBadRequest},
		{live.Errorf(live.ErrUnknownEndpoint, "unknown endpoint"), http.StatusNotFound},
		{live.Errorf(live.ErrUnknownShadow, "no shadow"), http.StatusNotFound},
		{live.Errorf(live.ErrConflict, "nothing to roll back"), http.StatusConflict},
		{live.Errorf(live.ErrOwned, "driven by rollout plan p1"), http.StatusConflict},
		{live.Errorf(live.ErrRejected, "refused by validation"), http.StatusUnprocessableEntity},
		{fmt.Errorf("wrapped: %w", live.Errorf(live.ErrOwned, "x")), http.StatusConflict},
		{admin.BadBody("body: empty"), http.StatusBadRequest},
		{&admin.BodyError{Status: http.StatusRequestEntityTooLarge}, http.StatusRequestEntityTooLarge},
		{errors.New("no config loaded yet"), http.StatusInternalServerError},
	} {
		if got := Status(c.err); got != c.want {
			t.Errorf("Status(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
