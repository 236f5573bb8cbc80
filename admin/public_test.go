package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHandlePublicServesExactlyItsPathWithoutToken: a public route is
// served without the token, only at its exact path (not the subtree
// under "/", not other methods' data); everything else still needs it.
func TestHandlePublicServesExactlyItsPathWithoutToken(t *testing.T) {
	h := New(Options{Token: "tok", ListenAddr: "127.0.0.1:0"})
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	h.HandlePublic("/", ok)
	h.HandlePublic("/shell.js", ok)
	h.Handle("GET /app.js", ok)
	h.Handle("GET /sub/page", ok)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for path, want := range map[string]int{"/": 200, "/shell.js": 200, "/app.js": 401, "/sub/page": 401, "/other": 401} {
		if code, _, _ := get(t, srv, path, ""); code != want {
			t.Errorf("GET %s without the token: %d, want %d", path, code, want)
		}
	}
	if code, _, _ := get(t, srv, "/app.js", "Bearer tok"); code != 200 {
		t.Errorf("GET /app.js with the token: %d", code)
	}
	// Only GET (and HEAD) are public: a POST to / is not served.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", nil)
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST / without the token: %d, want 405", resp.StatusCode)
	}
}
