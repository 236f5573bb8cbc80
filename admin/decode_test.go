package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// DecodeJSON fills v from a good body and names each kind of bad one with
// its status: 400, or 413 past the size limit.
func TestDecodeJSON(t *testing.T) {
	type body struct {
		Weights map[string]int `json:"weights"`
	}
	decode := func(s string) (body, error) {
		var v body
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(s))
		return v, DecodeJSON(r, &v, 64, `send {"weights": {...}}`)
	}
	v, err := decode(`{"weights": {"a": 60, "b": 40}}`)
	if err != nil || v.Weights["a"] != 60 || v.Weights["b"] != 40 {
		t.Fatalf("good body: %+v, %v", v, err)
	}
	for _, c := range []struct {
		in     string
		status int
		msg    string
	}{
		{"", 400, `body: empty; send {"weights": {...}}`},
		{`{"weights": `, 400, "body: truncated JSON"},
		{`{"weights": x}`, 400, "body: malformed JSON at byte"},
		{`{"weights": {"a": "60"}}`, 400, `body: field "weights" must be int, got JSON string`},
		{`{"weights": {}, "extra": 1}`, 400, `body: unknown field "extra"`},
		{`{"weights": {}} {}`, 400, "body: unexpected data after the JSON object"},
		{`{"weights": {"` + strings.Repeat("a", 80) + `": 1}}`, 413, "body: larger than 64 bytes"},
	} {
		_, err := decode(c.in)
		var be *BodyError
		if !errors.As(err, &be) || be.Status != c.status || !strings.HasPrefix(be.Msg, c.msg) {
			t.Errorf("body %q: %v (%T), want %d %q", c.in, err, err, c.status, c.msg)
		}
	}
}
