package httpapi

import (
	"net/http"

	"github.com/modelsplit/modelsplit/admin"
)

// maxBody bounds a request body: weight sets are tiny.
const maxBody = 1 << 20

// decode reads a JSON body strictly (admin.DecodeJSON): unknown fields,
// trailing data, wrong types and oversized bodies are 4xx errors that say
// what was wrong.
func decode(r *http.Request, v any) error {
	return admin.DecodeJSON(r, v, maxBody, "send a JSON object")
}
