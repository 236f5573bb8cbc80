package shadow_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/shadow"
)

// shadowCfg is one endpoint "m" with a compare shadow "s" on addrs.
func shadowCfg(t *testing.T, protocol string, addrs []string, c config.Compare) *config.Config {
	t.Helper()
	var bes []config.Backend
	for _, a := range addrs {
		be, err := config.ParseBackend(a)
		if err != nil {
			t.Fatal(err)
		}
		bes = append(bes, be)
	}
	cfg := &config.Config{Endpoints: []config.Endpoint{{Name: "m", Match: config.Match{PathPrefix: "/m"}, Protocol: protocol,
		Variants: []config.Variant{{Name: "a", Weight: 1, Backends: bes}},
		Shadows:  []config.Shadow{{Name: "s", Percent: 100, Backends: bes, Compare: &c}}}}}
	cfg.ApplyDefaults()
	return cfg
}

func hostPort(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// replayOne runs one exchange and waits until the shadow has dealt with it
// (compared, failed or dropped).
func replayOne(t *testing.T, m *shadow.Manager, mt *metrics.Metrics, x shadow.Exchange, req, primary string) {
	t.Helper()
	c := m.Begin("m", "s")
	if c == nil {
		t.Fatal("Begin returned nil for a compare shadow")
	}
	if !c.Request([]byte(req)) || !c.Response([]byte(primary)) {
		t.Fatal("capture refused within budget")
	}
	c.Finish(x)
	waitGauge(t, mt, "s", 0)
}

func post(status int) shadow.Exchange {
	return shadow.Exchange{Method: "POST", Path: "/m/predict", PrimaryStatus: status, PrimaryLatency: time.Millisecond,
		Header: http.Header{"Content-Type": {"application/json"}, "X-User": {"u1"}}}
}

// classifier is a real HTTP model: it answers {"label": ..., "score": ...}
// for {"input": i}; the shadow flavour says "b" where i%10 < 3.
func classifier(shadowFlavour bool, hits *atomic.Int64, h2 *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.ProtoMajor == 2 {
			h2.Add(1)
		}
		if r.Header.Get("X-User") != "u1" || r.Header.Get("X-Request-Id") == "" || r.URL.Path != "/m/predict" || r.Method != "POST" {
			http.Error(w, "request not replayed faithfully", http.StatusBadRequest)
			return
		}
		var in struct{ Input int }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		label := "a"
		if shadowFlavour && in.Input%10 < 3 {
			label = "b"
		}
		fmt.Fprintf(w, `{"label": %q, "score": %d.5, "id": "%d"}`, label, in.Input%4, in.Input)
	})
}

func primaryAnswer(i int) string {
	// Same fields in another order and spacing: only the label differs.
	return fmt.Sprintf(`{"id":"%d","score":%d.5,"label":"a"}`, i, i%4)
}

func testAgreement(t *testing.T, protocol string) {
	var hits [2]atomic.Int64
	var h2 atomic.Int64
	var addrs []string
	for i := range hits {
		srv := httptest.NewUnstartedServer(classifier(true, &hits[i], &h2))
		if protocol == config.ProtocolHTTP2 {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			srv.Config.Protocols = &p
		}
		srv.Start()
		defer srv.Close()
		addrs = append(addrs, hostPort(srv))
	}
	const n = 200
	for _, field := range []string{"label", ""} {
		t.Run("field="+field, func(t *testing.T) {
			mt := metrics.New()
			m := shadow.NewManager(shadow.Options{Metrics: mt})
			defer m.Close()
			m.SetConfig(shadowCfg(t, protocol, addrs, config.Compare{Field: field, MaxConcurrency: n, Samples: n}))
			for i := 0; i < n; i++ {
				c := m.Begin("m", "s")
				c.Request([]byte(fmt.Sprintf(`{"input": %d}`, i)))
				c.Response([]byte(primaryAnswer(i)))
				c.Finish(post(200))
			}
			waitGauge(t, mt, "s", 0)
			st, _ := m.Stats("m", "s")
			// i%10 < 3 disagrees: exactly 60 of 200.
			if st.Compared != n || st.Agreed != 140 || st.Errors != 0 || st.Dropped != 0 {
				t.Fatalf("stats %+v, want 200 compared, 140 agreed", st)
			}
			if got := testutil.ToFloat64(mt.ShadowAgreement.WithLabelValues("m", "s")); got != 0.7 {
				t.Errorf("agreement gauge %v, want 0.7", got)
			}
			if a, d := testutil.ToFloat64(mt.ShadowComparisons.WithLabelValues("m", "s", "agree")),
				testutil.ToFloat64(mt.ShadowComparisons.WithLabelValues("m", "s", "disagree")); a != 140 || d != 60 {
				t.Errorf("comparisons agree %v disagree %v, want 140 and 60", a, d)
			}
			if w := mt.Stats.Totals("m").Shadows["s"]; w.Compared != n || w.Agreed != 140 {
				t.Errorf("stats windows: %+v, want 200 compared, 140 agreed", w)
			}
			if c := testutil.CollectAndCount(mt.ShadowLatencyDiff); c != 1 {
				t.Errorf("latency diff series %d, want 1", c)
			}
			samples, ok := m.Samples("m", "s")
			if !ok || len(samples) != 60 {
				t.Fatalf("samples %d ok=%v, want 60", len(samples), ok)
			}
			wantReason := "field"
			if field == "" {
				wantReason = "body"
			}
			for _, s := range samples {
				if s.Reason != wantReason || s.PrimaryStatus != 200 || s.ShadowStatus != 200 || !strings.Contains(s.Shadow, `"label":"b"`) ||
					s.RequestID == "" || s.Path != "/m/predict" || s.Method != "POST" {
					t.Fatalf("sample %+v", s)
				}
			}
		})
	}
	if a, b := hits[0].Load(), hits[1].Load(); a != n || b != n {
		t.Errorf("round robin: backends got %d and %d replays, want %d each", a, b, n)
	}
	if protocol == config.ProtocolHTTP2 && h2.Load() != 2*n {
		t.Errorf("%d of %d replays used HTTP/2", h2.Load(), 2*n)
	}
}

func TestAgreementHTTP1(t *testing.T) { testAgreement(t, config.ProtocolHTTP1) }
func TestAgreementH2C(t *testing.T)   { testAgreement(t, config.ProtocolHTTP2) }

// echo answers {"score": <the request's score>} or whatever the request's
// "answer" holds verbatim, with the request's "status".
func echo() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Score  json.RawMessage
			Answer *string
			Status int
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if in.Status != 0 {
			w.WriteHeader(in.Status)
		}
		if in.Answer != nil {
			io.WriteString(w, *in.Answer)
			return
		}
		fmt.Fprintf(w, `{"score": %s}`, in.Score)
	}))
}

func TestToleranceEdge(t *testing.T) {
	srv := echo()
	defer srv.Close()
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(shadowCfg(t, config.ProtocolHTTP1, []string{hostPort(srv)}, config.Compare{Field: "score", Tolerance: 0.1}))
	for _, tc := range []struct {
		shadow string
		agree  bool
	}{
		{"1.0", true}, {"1", true}, {"1.1", true}, {"0.9", true}, // |diff| == tolerance agrees
		{"1.1000001", false}, {"0.8999999", false}, {"1.2", false},
		{`"1.0"`, false}, // a string is not a number
		{"null", false},
	} {
		before, _ := m.Stats("m", "s")
		replayOne(t, m, mt, post(200), fmt.Sprintf(`{"score": %s}`, tc.shadow), `{"score": 1.0}`)
		after, _ := m.Stats("m", "s")
		if after.Compared != before.Compared+1 {
			t.Fatalf("shadow %s: not compared (%+v)", tc.shadow, after)
		}
		if agreed := after.Agreed == before.Agreed+1; agreed != tc.agree {
			t.Errorf("primary 1.0, shadow %s, tolerance 0.1: agree=%v, want %v", tc.shadow, agreed, tc.agree)
		}
	}
}

func TestDisagreementReasons(t *testing.T) {
	srv := echo()
	defer srv.Close()
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(shadowCfg(t, config.ProtocolHTTP1, []string{hostPort(srv)}, config.Compare{Field: "label"}))
	statusErrs := func() float64 { return testutil.ToFloat64(mt.ShadowErrors.WithLabelValues("m", "s", "status")) }
	for _, tc := range []struct {
		name, answer  string
		primaryStatus int
		shadowStatus  int
		reason        string // "" agrees
		statusErr     bool
	}{
		{name: "same label", answer: `{"label":"cat","x":1}`, primaryStatus: 200, shadowStatus: 200},
		{name: "missing field", answer: `{"other":"cat"}`, primaryStatus: 200, shadowStatus: 200, reason: "field"},
		{name: "not JSON", answer: `cat`, primaryStatus: 200, shadowStatus: 200, reason: "field"},
		{name: "shadow 500", answer: `{"label":"cat"}`, primaryStatus: 200, shadowStatus: 500, reason: "status", statusErr: true},
		{name: "shadow 404", answer: `{"label":"cat"}`, primaryStatus: 200, shadowStatus: 404, reason: "status"},
		{name: "both 503", answer: `{"label":"cat"}`, primaryStatus: 503, shadowStatus: 503},
		{name: "object label", answer: `{"label":{"b":2,"a":[1,true,null]}}`, primaryStatus: 200, shadowStatus: 200, reason: "field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			primary := `{"label":"cat"}`
			if tc.name == "object label" {
				primary = `{"label":{"a":[1,true,null],"b":2.5}}`
			}
			errsBefore := statusErrs()
			samplesBefore, _ := m.Samples("m", "s")
			req, _ := json.Marshal(map[string]any{"answer": tc.answer, "status": tc.shadowStatus})
			replayOne(t, m, mt, post(tc.primaryStatus), string(req), primary)
			samples, _ := m.Samples("m", "s")
			if tc.reason == "" {
				if len(samples) != len(samplesBefore) {
					t.Fatalf("agreeing answers left a sample: %+v", samples[0])
				}
			} else {
				if len(samples) != len(samplesBefore)+1 {
					t.Fatalf("no disagreement sample")
				}
				if s := samples[0]; s.Reason != tc.reason || s.ShadowStatus != tc.shadowStatus || s.PrimaryStatus != tc.primaryStatus || !sameJSON(s.Shadow, tc.answer) {
					t.Errorf("sample %+v, want reason %s", s, tc.reason)
				}
			}
			if got := statusErrs() - errsBefore; (got == 1) != tc.statusErr || got > 1 {
				t.Errorf("status errors +%v, want error=%v", got, tc.statusErr)
			}
		})
	}
	// Equal objects in another key order, and 2.5 vs 2.50, agree.
	before, _ := m.Stats("m", "s")
	req, _ := json.Marshal(map[string]any{"answer": `{"label":{"b":2.50,"a":[1,true,null]}}`})
	replayOne(t, m, mt, post(200), string(req), `{"label":{"a":[1,true,null],"b":2.5}}`)
	if after, _ := m.Stats("m", "s"); after.Agreed != before.Agreed+1 {
		t.Errorf("normalized JSON objects disagreed")
	}
}

func TestTransportError(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(shadowCfg(t, config.ProtocolHTTP1, []string{addr}, config.Compare{Field: "label"}))
	replayOne(t, m, mt, post(200), `{}`, `{"label":"x"}`)
	st, _ := m.Stats("m", "s")
	if st.Errors != 1 || st.Compared != 0 {
		t.Errorf("stats %+v, want one error and no comparison", st)
	}
	if got := testutil.ToFloat64(mt.ShadowErrors.WithLabelValues("m", "s", "transport")); got != 1 {
		t.Errorf("transport errors %v, want 1", got)
	}
	if s, _ := m.Samples("m", "s"); len(s) != 0 {
		t.Errorf("a transport error left a disagreement sample: %+v", s)
	}
	if a, d := testutil.ToFloat64(mt.ShadowComparisons.WithLabelValues("m", "s", "agree")),
		testutil.ToFloat64(mt.ShadowComparisons.WithLabelValues("m", "s", "disagree")); a+d != 0 {
		t.Errorf("a transport error was counted as a comparison (%v agree, %v disagree)", a, d)
	}
}

func TestRedaction(t *testing.T) {
	srv := echo()
	defer srv.Close()
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(shadowCfg(t, config.ProtocolHTTP1, []string{hostPort(srv)}, config.Compare{Field: "label",
		Redact: []string{"user.id", "items[1]", "answer", "absent.path"}}))
	// The request carries the user id; the shadow's answer (echoed from
	// "answer", itself redacted in the request) repeats it.
	answer := `{"label":"dog","user":{"id":"secret-user-42","plan":"pro"},"items":["a","secret-item",{"n":1}]}`
	req, _ := json.Marshal(map[string]any{"user": map[string]any{"id": "secret-user-42"}, "answer": answer, "n": json.Number("12345678901234567890")})
	replayOne(t, m, mt, post(200), string(req), `{"label":"cat","user":{"id":"secret-user-42"}}`)
	// Not JSON: the field cannot be found to redact, the body is withheld.
	notJSON := `label=dog user=secret-user-42`
	req2, _ := json.Marshal(map[string]any{"answer": notJSON})
	replayOne(t, m, mt, post(200), string(req2), `{"label":"cat"}`)

	samples, _ := m.Samples("m", "s")
	if len(samples) != 2 {
		t.Fatalf("%d samples, want 2", len(samples))
	}
	for _, s := range samples {
		all := s.Request + s.Primary + s.Shadow
		if strings.Contains(all, "secret") {
			t.Errorf("a redacted value leaked into a sample: %+v", s)
		}
	}
	notJSONSample, jsonSample := samples[0], samples[1] // newest first
	if notJSONSample.Shadow != "[redacted: not JSON]" {
		t.Errorf("non-JSON answer rendered %q", notJSONSample.Shadow)
	}
	if want := `{"items":["a","[redacted]",{"n":1}],"label":"dog","user":{"id":"[redacted]","plan":"pro"}}`; jsonSample.Shadow != want {
		t.Errorf("shadow answer rendered\n%s\nwant\n%s", jsonSample.Shadow, want)
	}
	if want := `{"answer":"[redacted]","n":12345678901234567890,"user":{"id":"[redacted]"}}`; jsonSample.Request != want {
		t.Errorf("request rendered\n%s\nwant\n%s", jsonSample.Request, want)
	}
	if want := `{"label":"cat","user":{"id":"[redacted]"}}`; jsonSample.Primary != want {
		t.Errorf("primary rendered %s", jsonSample.Primary)
	}
}

func TestSamplesTruncated(t *testing.T) {
	srv := echo()
	defer srv.Close()
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(shadowCfg(t, config.ProtocolHTTP1, []string{hostPort(srv)}, config.Compare{}))
	big := `{"label":"` + strings.Repeat("é", 5000) + `"}` // 10 KB, 2-byte runes
	req, _ := json.Marshal(map[string]any{"answer": big})
	replayOne(t, m, mt, post(200), string(req), `{"label":"x"}`)
	samples, _ := m.Samples("m", "s")
	if len(samples) != 1 {
		t.Fatalf("%d samples", len(samples))
	}
	s := samples[0]
	if len(s.Shadow) > 4096 || len(s.Request) > 4096 || !strings.HasSuffix(s.Shadow, "[truncated]") {
		t.Errorf("sample bodies %d and %d bytes, want <= 4096 and marked truncated", len(s.Shadow), len(s.Request))
	}
	if !json.Valid([]byte(fmt.Sprintf("%q", s.Shadow))) || strings.ContainsRune(s.Shadow, '\uFFFD') {
		t.Errorf("truncation split a UTF-8 sequence")
	}
}

func TestSamplesRingNewestFirst(t *testing.T) {
	srv := echo()
	defer srv.Close()
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	m.SetConfig(shadowCfg(t, config.ProtocolHTTP1, []string{hostPort(srv)}, config.Compare{Field: "score", Samples: 3}))
	for i := 0; i < 5; i++ {
		x := post(200)
		x.RequestID = fmt.Sprintf("r%d", i)
		replayOne(t, m, mt, x, `{"score": 2}`, `{"score": 1}`)
	}
	ids := func() string {
		s, _ := m.Samples("m", "s")
		var out []string
		for _, x := range s {
			out = append(out, x.RequestID)
		}
		return strings.Join(out, ",")
	}
	if got := ids(); got != "r4,r3,r2" {
		t.Errorf("samples %s, want r4,r3,r2 (3 kept, newest first)", got)
	}

	// A changed compare config keeps history, in order, in a smaller ring.
	cfg := shadowCfg(t, config.ProtocolHTTP1, []string{hostPort(srv)}, config.Compare{Field: "score", Samples: 2})
	m.SetConfig(cfg)
	if got := ids(); got != "r4,r3" {
		t.Errorf("after a config change samples %s, want r4,r3", got)
	}
	if st, _ := m.Stats("m", "s"); st.Compared != 5 || st.Agreed != 0 {
		t.Errorf("after a config change stats %+v, want 5 compared kept", st)
	}
	x := post(200)
	x.RequestID = "r5"
	replayOne(t, m, mt, x, `{"score": 2}`, `{"score": 1}`)
	if got := ids(); got != "r5,r4" {
		t.Errorf("samples %s, want r5,r4", got)
	}
}

func TestSetConfigKeepsUnchangedShadows(t *testing.T) {
	srv := echo()
	defer srv.Close()
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	cfg := shadowCfg(t, config.ProtocolHTTP1, []string{hostPort(srv)}, config.Compare{Field: "score"})
	e := &cfg.Endpoints[0]
	e.Shadows = append(e.Shadows,
		config.Shadow{Name: "h", Percent: 1, Backends: []config.Backend{mustBackend(t, hostPort(hung))}, Compare: &config.Compare{}},
		config.Shadow{Name: "mirror", Percent: 1, Backends: e.Shadows[0].Backends}) // not in compare mode
	cfg.ApplyDefaults()
	m.SetConfig(cfg)
	if m.Begin("m", "mirror") != nil {
		t.Error("Begin for a shadow without compare returned a capture")
	}
	if _, ok := m.Samples("m", "mirror"); ok {
		t.Error("Samples ok for a shadow without compare")
	}
	if _, ok := m.Stats("nope", "s"); ok {
		t.Error("Stats ok for an unknown endpoint")
	}
	replayOne(t, m, mt, post(200), `{"score": 2}`, `{"score": 1}`)
	replayOne(t, m, mt, post(200), `{"score": 1}`, `{"score": 1}`)

	// A replay to "h" hangs; then "h" is removed and "s" is unchanged.
	c := m.Begin("m", "h")
	c.Request([]byte(`{}`))
	c.Response([]byte(`{}`))
	c.Finish(post(200))
	waitGauge(t, mt, "h", 1)

	next := cfg.Clone()
	next.Endpoints[0].Shadows = next.Endpoints[0].Shadows[:1]
	m.SetConfig(next)
	if st, ok := m.Stats("m", "s"); !ok || st.Compared != 2 || st.Agreed != 1 {
		t.Errorf("unchanged shadow stats %+v ok=%v, want 2 compared, 1 agreed", st, ok)
	}
	if s, _ := m.Samples("m", "s"); len(s) != 1 {
		t.Errorf("unchanged shadow lost its samples: %d", len(s))
	}
	if _, ok := m.Stats("m", "h"); ok || m.Begin("m", "h") != nil {
		t.Error("a removed shadow is still known")
	}
	// The removed shadow's replay was cancelled and its budget freed.
	waitGauge(t, mt, "h", 0)
	if got := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "h", "incomplete")); got != 1 {
		t.Errorf("removed shadow's replay: incomplete drops %v, want 1", got)
	}
	if got := testutil.ToFloat64(mt.ShadowBytes.WithLabelValues("m", "h")); got != 0 {
		t.Errorf("removed shadow still holds %v bytes", got)
	}
}

func TestPause(t *testing.T) {
	srv := echo()
	defer srv.Close()
	mt := metrics.New()
	m := shadow.NewManager(shadow.Options{Metrics: mt})
	defer m.Close()
	cfg := shadowCfg(t, config.ProtocolHTTP1, []string{hostPort(srv)}, config.Compare{Field: "score"})
	m.SetConfig(cfg)
	replayOne(t, m, mt, post(200), `{"score": 1}`, `{"score": 1}`)

	paused := cfg.Clone()
	paused.Endpoints[0].Shadows[0].Paused = true
	m.SetConfig(paused)
	for i := 0; i < 3; i++ {
		if m.Begin("m", "s") != nil {
			t.Fatal("Begin returned a capture for a paused shadow")
		}
	}
	if got := testutil.ToFloat64(mt.ShadowDropped.WithLabelValues("m", "s", "paused")); got != 3 {
		t.Errorf("paused drops %v, want 3", got)
	}
	st, ok := m.Stats("m", "s")
	if !ok || st.Compared != 1 || st.Dropped != 3 {
		t.Errorf("paused shadow stats %+v ok=%v, want it known with its history", st, ok)
	}
	m.SetConfig(cfg) // resume
	replayOne(t, m, mt, post(200), `{"score": 1}`, `{"score": 1}`)
	if st, _ := m.Stats("m", "s"); st.Compared != 2 || st.Agreed != 2 {
		t.Errorf("after resuming stats %+v, want 2 compared", st)
	}
}

// sameJSON: equal JSON values, or equal text when either is not JSON.
func sameJSON(a, b string) bool {
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return a == b
	}
	return reflect.DeepEqual(va, vb)
}

func mustBackend(t *testing.T, addr string) config.Backend {
	t.Helper()
	be, err := config.ParseBackend(addr)
	if err != nil {
		t.Fatal(err)
	}
	return be
}

func waitGauge(t *testing.T, mt *metrics.Metrics, shadowName string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(mt.ShadowInFlight.WithLabelValues("m", shadowName)) != want {
		if time.Now().After(deadline) {
			t.Fatalf("in-flight gauge of %s never reached %v", shadowName, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
