package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/control/live"
)

// fake records what the routes asked for.
type fake struct {
	calls []string
	limit int
}

func (f *fake) ListEndpoints(context.Context) api.EndpointList { return api.EndpointList{} }
func (f *fake) GetEndpoint(_ context.Context, name string) (api.EndpointStatus, error) {
	return api.EndpointStatus{}, live.Errorf(live.ErrUnknownEndpoint, "unknown endpoint %q", name)
}
func (f *fake) SetWeights(ep string, w map[string]int, _ live.Requester) (api.ChangeResult, error) {
	f.calls = append(f.calls, "weights "+ep)
	return api.ChangeResult{}, nil
}
func (f *fake) Promote(ep, v string, _ live.Requester) (api.ChangeResult, error) {
	f.calls = append(f.calls, "promote "+ep+" "+v)
	return api.ChangeResult{}, nil
}
func (f *fake) Rollback(ep string, _ live.Requester) (api.ChangeResult, error) {
	return api.ChangeResult{}, live.Errorf(live.ErrConflict, "nothing to roll back")
}
func (f *fake) Reset(ep string, _ live.Requester) (api.ChangeResult, error) {
	f.calls = append(f.calls, "reset "+ep)
	return api.ChangeResult{}, nil
}
func (f *fake) SetShadowPaused(ep, sh string, paused bool, _ live.Requester) (api.ChangeResult, error) {
	if paused {
		f.calls = append(f.calls, "pause "+ep+" "+sh)
	} else {
		f.calls = append(f.calls, "resume "+ep+" "+sh)
	}
	return api.ChangeResult{}, nil
}
func (f *fake) Disagreements(ep, sh string) (api.Disagreements, error) {
	if sh != "s1" {
		return api.Disagreements{}, live.Errorf(live.ErrUnknownShadow, "endpoint %q has no shadow %q", ep, sh)
	}
	f.calls = append(f.calls, "disagreements "+ep+" "+sh)
	return api.Disagreements{}, nil
}
func (f *fake) Audit(limit int) []api.AuditEntry { f.limit = limit; return nil }

func serve(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, "http://127.0.0.1"+path, strings.NewReader(body))
	if method != "GET" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// The audit's limit: 100 by default, any positive integer, else 400.
func TestAuditLimit(t *testing.T) {
	f := &fake{}
	h := admin.New(admin.Options{})
	Register(h, f)
	for _, c := range []struct {
		query string
		code  int
		limit int
	}{{"", 200, 100}, {"?limit=1", 200, 1}, {"?limit=7", 200, 7}, {"?limit=0", 400, -1}, {"?limit=-3", 400, -1}, {"?limit=x", 400, -1}} {
		f.limit = -1
		code, body := serve(t, h, "GET", "/v1/audit"+c.query, "")
		if code != c.code || f.limit != c.limit {
			t.Errorf("GET /v1/audit%s: %d (limit %d) %s, want %d (limit %d)", c.query, code, f.limit, body, c.code, c.limit)
		}
	}
}

// Each route reaches its change; refusals and bad bodies answer their
// status with what was wrong.
func TestRoutes(t *testing.T) {
	f := &fake{}
	h := admin.New(admin.Options{})
	Register(h, f)
	for _, c := range []struct {
		method, path, body string
		code               int
		want               string // in the body
	}{
		{"PUT", "/v1/endpoints/chat/weights", `{"weights": {"a": 1}}`, 200, ""},
		{"POST", "/v1/endpoints/chat/weights", `{"weights": {"a": 1}}`, 200, ""},
		{"POST", "/v1/endpoints/chat/promote", `{"variant": "b"}`, 200, ""},
		{"DELETE", "/v1/endpoints/chat/override", "", 200, ""},
		{"POST", "/v1/endpoints/chat/shadows/s1/pause", "", 200, ""},
		{"POST", "/v1/endpoints/chat/shadows/s1/resume", "", 200, ""},
		{"POST", "/v1/endpoints/chat/rollback", "", 409, "nothing to roll back"},
		{"GET", "/v1/endpoints/nope", "", 404, `unknown endpoint \"nope\"`},
		{"PUT", "/v1/endpoints/chat/weights", "", 400, "body: empty"},
		{"PUT", "/v1/endpoints/chat/weights", `{"weights": `, 400, "body: truncated JSON"},
		{"PUT", "/v1/endpoints/chat/weights", `{"weights": }`, 400, "malformed JSON at byte"},
		{"PUT", "/v1/endpoints/chat/weights", `{"weights": {"a": "x"}}`, 400, "must be int"},
		{"PUT", "/v1/endpoints/chat/weights", `{"weight": {}}`, 400, `unknown field \"weight\"`},
		{"PUT", "/v1/endpoints/chat/weights", `{"weights": {"a": 1}} {}`, 400, "unexpected data after the JSON object"},
		{"PUT", "/v1/endpoints/chat/weights", `{"weights": {"a": 1}, "x": "` + strings.Repeat("y", maxBody) + `"}`, 413, "larger than 1048576 bytes"},
		{"GET", "/v1/nothing", "", 404, "no such admin API path GET /v1/nothing"},
		{"GET", "/v1/endpoints/chat/shadows/s1/disagreements", "", 200, ""},
		{"GET", "/v1/endpoints/chat/shadows/s2/disagreements", "", 404, `has no shadow \"s2\"`},
	} {
		code, body := serve(t, h, c.method, c.path, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s: %d %.200s, want %d with %q", c.method, c.path, code, body, c.code, c.want)
		}
	}
	want := "weights chat,weights chat,promote chat b,reset chat,pause chat s1,resume chat s1,disagreements chat s1"
	if got := strings.Join(f.calls, ","); got != want {
		t.Errorf("calls %s, want %s", got, want)
	}
}
