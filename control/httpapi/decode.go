package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxBody bounds a request body: weight sets are tiny.
const maxBody = 1 << 20

// bodyError is a request body the API cannot read (400, or 413 when too
// large): a transport problem, not a domain one.
type bodyError struct {
	status int
	msg    string
}

func (e *bodyError) Error() string { return e.msg }

func badBody(format string, args ...any) error {
	return &bodyError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
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
			return badBody("body: empty; send a JSON object")
		case errors.As(err, &syn):
			return badBody("body: malformed JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ):
			return badBody("body: field %q must be %s, got JSON %s", typ.Field, typ.Type, typ.Value)
		case errors.As(err, &size):
			return &bodyError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body: larger than %d bytes", maxBody)}
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return badBody("body: %s", strings.TrimPrefix(err.Error(), "json: "))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return badBody("body: truncated JSON")
		default:
			return badBody("body: %v", err)
		}
	}
	if dec.More() {
		return badBody("body: unexpected data after the JSON object")
	}
	return nil
}
