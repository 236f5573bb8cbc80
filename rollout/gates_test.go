package rollout

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/api"
)

// httpPromQL reads one number from Prometheus' answer: a scalar (a
// [time, "value"] pair) or a vector of exactly one series; anything else
// is an error naming what was wrong.
func TestHTTPPromQLAnswers(t *testing.T) {
	var (
		mu     sync.Mutex
		answer string
		code   = http.StatusOK
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/api/v1/query" || r.URL.Query().Get("query") != "sum(up)" {
			http.Error(w, "unexpected query "+r.URL.String(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(answer))
	}))
	defer srv.Close()
	set := func(c int, a string) {
		mu.Lock()
		defer mu.Unlock()
		code, answer = c, a
	}
	for _, c := range []struct {
		name   string
		code   int
		answer string
		want   float64
		errHas string // "" for no error
	}{
		{"scalar", 200, `{"status":"success","data":{"resultType":"scalar","result":[1764417600.5,"3.5"]}}`, 3.5, ""},
		{"scalar zero", 200, `{"status":"success","data":{"resultType":"scalar","result":[1764417600,"0"]}}`, 0, ""},
		{"scalar of one element", 200, `{"status":"success","data":{"resultType":"scalar","result":["3.5"]}}`, 0, "malformed scalar"},
		{"scalar of three elements", 200, `{"status":"success","data":{"resultType":"scalar","result":[1,"3.5","4"]}}`, 0, "malformed scalar"},
		{"scalar not a string", 200, `{"status":"success","data":{"resultType":"scalar","result":[1,3.5]}}`, 0, "no value"},
		{"one series", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}`, 0.25, ""},
		{"no series", 200, `{"status":"success","data":{"resultType":"vector","result":[]}}`, 0, "returned 0 series"},
		{"not a number", 200, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"many"]}]}}`, 0, `value "many"`},
		{"query error", 400, `{"status":"error","errorType":"bad_data","error":"parse error at char 4"}`, 0, "parse error at char 4"},
		{"not JSON", 502, `<html>bad gateway</html>`, 0, "answered 502 Bad Gateway, not a query result"},
	} {
		set(c.code, c.answer)
		got, err := httpPromQL{}.Query(context.Background(), srv.URL+"/", "sum(up)")
		switch {
		case c.errHas == "" && (err != nil || got != c.want):
			t.Errorf("%s: %v %v, want %v", c.name, got, err, c.want)
		case c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)):
			t.Errorf("%s: %v %v, want an error with %q", c.name, got, err, c.errHas)
		}
	}
	if _, err := (httpPromQL{}).Query(context.Background(), "", "sum(up)"); err == nil || !strings.Contains(err.Error(), "no prometheus server") {
		t.Errorf("no server: %v", err)
	}
}

// A webhook's answer other than 2xx is an error; any 2xx is not.
func TestPostWebhookStatus(t *testing.T) {
	var (
		mu   sync.Mutex
		code int
		got  []Event
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var ev Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err == nil {
			got = append(got, ev)
		}
		w.WriteHeader(code)
	}))
	defer srv.Close()
	ev := Event{Endpoint: "chat", Plan: "chat@1", Phase: api.PhaseRolledBack, Step: 2}
	for _, c := range []struct {
		code int
		ok   bool
	}{{200, true}, {204, true}, {299, true}, {300, false}, {404, false}, {500, false}, {503, false}} {
		mu.Lock()
		code = c.code
		mu.Unlock()
		err := postWebhook(context.Background(), srv.URL, ev)
		if (err == nil) != c.ok {
			t.Errorf("webhook answering %d: %v, want an error: %v", c.code, err, !c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "webhook answered") {
			t.Errorf("webhook answering %d: error %q does not say what it answered", c.code, err)
		}
	}
	mu.Lock()
	if len(got) != 7 || got[0].Endpoint != "chat" || got[0].Step != 2 {
		t.Errorf("events received %+v, want 7 of chat step 2", got)
	}
	mu.Unlock()
	// Nothing listening: an error, not a panic.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	if err := postWebhook(context.Background(), "http://"+addr, ev); err == nil {
		t.Error("webhook to a closed port: no error")
	}
}

// Hold gives up on a Redis that does not answer after a third of the
// lease period (the client honours context deadlines, as the service's
// does), so a hung Redis never holds the manager's tick for long.
func TestRedisLeaseHoldGivesUpOnAHungRedis(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	defer func() {
		lis.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	client := redis.NewClient(&redis.Options{Addr: lis.Addr().String(), ContextTimeoutEnabled: true,
		DialTimeout: time.Minute, ReadTimeout: time.Minute, WriteTimeout: time.Minute, MaxRetries: -1})
	defer client.Close()
	// A period of 6s: Hold must give up after 2s. The bound below leaves
	// the loaded machine 4s to spare, and is far under the 18s that
	// three periods' worth of waiting would take.
	l := NewRedisLease(client, "t:lease", 6*time.Second)
	start := time.Now()
	held, err := l.Hold(context.Background())
	took := time.Since(start)
	if err == nil || held {
		t.Fatalf("hold on a hung Redis: %v %v, want a timeout", held, err)
	}
	if took < 2*time.Second || took > 6*time.Second {
		t.Fatalf("hold on a hung Redis gave up after %v, want a third of the 6s period", took)
	}
}

// An experiment asks its canary-better test nothing until both arms have
// answered requests: a look with an arm empty leaves the test as it was.
func TestExperimentWaitsForBothArms(t *testing.T) {
	rec := &record{RolloutStatus: api.RolloutStatus{Canary: "c", Baseline: "a"}}
	r := newRun("p", 1, time.Time{})
	r.allEv = newEvidence()
	r.allEv.variants["a"] = &VariantCounts{Responses: 1000, Errors: 300}
	if r.experimentDecided(rec) {
		t.Fatal("decided with no canary answers")
	}
	if st := r.reverse.t.State; st.N1 != 0 || st.N2 != 0 || st.Fail1 != 0 || st.Looks != 0 {
		t.Fatalf("a look without canary answers reached the test: %+v", st)
	}
	r.allEv.variants = map[string]*VariantCounts{"c": {Responses: 1000, Errors: 300}}
	if r.experimentDecided(rec) {
		t.Fatal("decided with no baseline answers")
	}
	if st := r.reverse.t.State; st.N1 != 0 || st.N2 != 0 || st.Fail2 != 0 || st.Looks != 0 {
		t.Fatalf("a look without baseline answers reached the test: %+v", st)
	}
	// Both arms: the baseline at 30% errors, the canary at 1%.
	r.allEv.variants = map[string]*VariantCounts{"a": {Responses: 1000, Errors: 300}, "c": {Responses: 1000, Errors: 10}}
	if !r.experimentDecided(rec) || r.winner != "c" || r.reverse.t.State.Looks != 1 {
		t.Fatalf("baseline 30%% errors against the canary's 1%%: winner %q (%s), state %+v", r.winner, r.winnerDetail, r.reverse.t.State)
	}
}
