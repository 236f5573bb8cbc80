package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// BodyError is a request body an API cannot read: Status is 400, or 413
// when it is too large. Msg says what was wrong.
type BodyError struct {
	Status int
	Msg    string
}

func (e *BodyError) Error() string { return e.Msg }

// BadBody is a 400 BodyError.
func BadBody(format string, args ...any) error {
	return &BodyError{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// DecodeJSON reads r's body into v strictly: an empty body, malformed or
// truncated JSON, a wrong type, an unknown field, trailing data or more
// than max bytes are each a BodyError naming the problem. empty is the
// message's hint for an empty body (e.g. `send {"weights": {...}}`).
func DecodeJSON(r *http.Request, v any, max int64, empty string) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var (
			syn  *json.SyntaxError
			typ  *json.UnmarshalTypeError
			size *http.MaxBytesError
		)
		switch {
		case errors.Is(err, io.EOF):
			return BadBody("body: empty; %s", empty)
		case errors.As(err, &syn):
			return BadBody("body: malformed JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ):
			return BadBody("body: field %q must be %s, got JSON %s", typ.Field, typ.Type, typ.Value)
		case errors.As(err, &size):
			return &BodyError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("body: larger than %d bytes", max)}
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return BadBody("body: %s", strings.TrimPrefix(err.Error(), "json: "))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return BadBody("body: truncated JSON")
		default:
			return BadBody("body: %v", err)
		}
	}
	if dec.More() {
		return BadBody("body: unexpected data after the JSON object")
	}
	return nil
}
