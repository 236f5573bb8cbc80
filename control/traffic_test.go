package control_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/stats"
)

// TestStatusReadsTheStatsWindows: a status answer's requests, decisions
// and live shares are the stats recorder's: totals since start, shares
// over the windows of the last minute (requests when any were observed,
// decisions otherwise).
func TestStatusReadsTheStatsWindows(t *testing.T) {
	var now time.Time = time.Date(2026, 11, 29, 10, 0, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	m := metrics.New()
	m.Stats = stats.New(stats.Options{Now: clock}) // a recorder on the test's clock
	ctl := control.New(context.Background(), control.Options{Metrics: m, Now: clock, Apply: func(*config.Config) error { return nil }})
	if _, err := ctl.SetFileConfig(manyEndpoints(t, 1)); err != nil {
		t.Fatal(err)
	}
	h := admin.New(admin.Options{Metrics: m})
	ctl.Register(h)
	get := func() api.EndpointStatus {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/v1/endpoints/ep0", nil)
		req.Host = "127.0.0.1:18002"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var st api.EndpointStatus
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &st) != nil {
			t.Fatalf("GET: %d %s", w.Code, w.Body)
		}
		return st
	}
	a, b := m.Stats.Variant("ep0", "a"), m.Stats.Variant("ep0", "b")
	for range 3 {
		a.Decided()
	}
	b.Decided()
	st := get()
	if st.LiveSource != "decisions" || *st.Variants[0].LiveShare != 0.75 || st.Variants[0].Decisions != 3 || st.Variants[1].Requests != 0 {
		t.Fatalf("decisions only: %+v", st)
	}
	// Requests observed: they decide the shares. One never answered is
	// not counted (as in modelsplit_variant_requests_total).
	a.Request(stats.Class2xx, time.Millisecond)
	b.Request(stats.Class5xx, time.Millisecond)
	b.Request(stats.Class2xx, time.Millisecond)
	b.Request(stats.Class2xx, time.Millisecond)
	b.Request(stats.ClassNone, 0)
	st = get()
	if st.LiveSource != "requests" || *st.Variants[1].LiveShare != 0.75 || st.Variants[1].Requests != 3 || st.Variants[0].Requests != 1 {
		t.Fatalf("with requests: %+v", st)
	}
	if s := st.Variants[0].LiveWindowSeconds; s != 0 {
		t.Errorf("live window %v s at start, want 0", s)
	}
	// Two minutes on: the shares forget, the totals do not.
	now = now.Add(2 * time.Minute)
	m.Stats.Rotate() // what stats.Recorder.Run does at each boundary
	a.Decided()
	st = get()
	if st.LiveSource != "decisions" || *st.Variants[0].LiveShare != 1 || st.Variants[0].Decisions != 4 || st.Variants[1].Requests != 3 {
		t.Fatalf("two minutes on: %+v", st)
	}
	if s := st.Variants[0].LiveWindowSeconds; s < 50 || s > 60 {
		t.Errorf("live window %v s, want 50..60", s)
	}
}
