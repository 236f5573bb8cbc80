package test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/modelsplit/modelsplit/api"
)

// slackDecision gives the decision 1 s instead of the default 50 ms before
// Envoy fails open: these tests check what the decision samples, and on 2
// shared cores a starved ext_proc answer would route a request unmarked.
const slackDecision = "extproc_timeout: 1s"

// parallelGets sends n GETs through the gateway with `workers` concurrent
// callers; headersFor gives request i's headers (name, value pairs).
// It fails the test on a transport error or a non-200 answer.
func parallelGets(t testing.TB, g *gateway, path string, n, workers int, headersFor func(i int) []string) []gwResponse {
	t.Helper()
	out := make([]gwResponse, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	next := make(chan int)
	go func() {
		defer close(next)
		for i := 0; i < n; i++ {
			next <- i
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i], errs[i] = g.client.get(path, headersFor(i)...)
			}
		}()
	}
	wg.Wait()
	for i := range out {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if out[i].status != http.StatusOK {
			t.Fatalf("request %d: status %d body %q", i, out[i].status, out[i].body)
		}
	}
	return out
}

// waitSettled waits until Envoy has finished every mirrored request to a
// shadow cluster: the backend has counted as many requests as Envoy
// completed upstream, and the count stopped moving.
func waitSettled(t testing.TB, g *gateway, cluster string, b *httpBackend) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last := -1
	for time.Now().Before(deadline) {
		sent := g.envoy.stat("cluster." + cluster + ".upstream_rq_total")
		done := g.envoy.stat("cluster." + cluster + ".upstream_rq_completed")
		n := b.count()
		if sent == done && uint64(n) == done && n == last {
			return
		}
		last = n
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("shadow %s did not settle: backend %d, envoy sent %d completed %d", cluster, b.count(),
		g.envoy.stat("cluster."+cluster+".upstream_rq_total"), g.envoy.stat("cluster."+cluster+".upstream_rq_completed"))
}

// TestEnvoyMirrorShadows: user-sampled mirror shadows get every request of
// the users the decision sampled and nothing from the others; a
// per-request shadow gets its percent of requests; paused shadows get
// nothing; the shadow's backend sees the Host the primary sees.
func TestEnvoyMirrorShadows(t *testing.T) {
	primary := startHTTPBackend(t, "a", "x-modelsplit-shadow")
	m := startHTTPBackend(t, "m", "x-modelsplit-shadow")
	r := startHTTPBackend(t, "r", "x-modelsplit-shadow")
	// The decision marks the requests it samples for m; the primary
	// records that per user: the truth the shadow is checked against.
	var mu sync.Mutex
	marked := map[string]int{}
	primary.setHandler(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		if req.Header.Get("x-modelsplit-shadow-m") != "" {
			marked[req.Header.Get("x-user-id")]++
		}
		mu.Unlock()
		_, _ = w.Write([]byte("a"))
	})
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 100, backends: [%q]}
    shadows:
      - {name: m, percent: 20, backends: [%q]}
      - {name: r, percent: 30, per_request: true, backends: [%q]}
`, primary.addr, m.addr, r.addr), slackDecision, "/model/predict", "x-user-id", "probe")
	waitSettled(t, g, "model/m", m)
	waitSettled(t, g, "model/r", r)
	m0, r0 := m.count(), r.count()
	mu.Lock()
	clear(marked)
	mu.Unlock()

	const users, perUser = 2000, 3
	n := users * perUser
	start := time.Now()
	parallelGets(t, g, "/model/predict", n, 8, func(i int) []string { return []string{"x-user-id", fmt.Sprintf("user-%d", i%users)} })
	t.Logf("%d requests in %v", n, time.Since(start).Round(time.Millisecond))
	waitSettled(t, g, "model/m", m)
	waitSettled(t, g, "model/r", r)

	// User-sampled shadow m: every request of a marked user, none of the
	// others'.
	got := m.users()
	sampled, wrong := 0, 0
	mu.Lock()
	for i := 0; i < users; i++ {
		u := fmt.Sprintf("user-%d", i)
		want := 0
		if marked[u] > 0 {
			sampled++
			want = perUser
			if marked[u] != perUser {
				t.Errorf("user %s marked on %d of %d requests: sampling is not per user", u, marked[u], perUser)
			}
		}
		if got[u] != want {
			if wrong++; wrong <= 5 {
				t.Errorf("user %s: shadow m got %d requests, want %d", u, got[u], want)
			}
		}
	}
	mu.Unlock()
	share := float64(sampled) / users
	// 5 sigma of a 20% share over 2,000 users is 4.5 pp.
	t.Logf("shadow m: %d of %d users sampled (%.1f%%), %d with a wrong count; %d requests mirrored", sampled, users, 100*share, wrong, m.count()-m0)
	if math.Abs(share-0.20) > 0.05 {
		t.Errorf("shadow m sampled %.1f%% of users, want 20 ± 5", 100*share)
	}

	// Per-request shadow r: 30% of requests; 5 sigma over 6,000 requests
	// is 2.96 pp.
	rShare := float64(r.count()-r0) / float64(n)
	t.Logf("shadow r (per request): %d of %d requests (%.2f%%)", r.count()-r0, n, 100*rShare)
	if math.Abs(rShare-0.30) > 0.03 {
		t.Errorf("per-request shadow r got %.2f%% of requests, want 30 ± 3", 100*rShare)
	}

	// Host: the shadows' backends get the Host the primary gets (no
	// "-shadow" suffix), and each copy names its shadow.
	for name, b := range map[string]*httpBackend{"m": m, "r": r} {
		for host, c := range b.hostHeaders() {
			if _, ok := primary.hostHeaders()[host]; !ok {
				t.Errorf("shadow %s's backend got Host %q on %d requests; the primary gets %v", name, host, c, primary.hostHeaders())
			}
		}
		if marks := b.headerValues("x-modelsplit-shadow"); len(marks) != 1 || marks[name] != b.count() {
			t.Errorf("shadow %s's backend got x-modelsplit-shadow %v over %d requests, want %q on each", name, marks, b.count(), name)
		}
	}
	if marks := primary.headerValues("x-modelsplit-shadow"); len(marks) != 1 || marks[""] == 0 {
		t.Errorf("the primary got x-modelsplit-shadow %v: only mirrored copies are marked", marks)
	}
	t.Logf("hosts: primary %v, m %v, r %v", primary.hostHeaders(), m.hostHeaders(), r.hostHeaders())

	// Paused through the admin API: neither shadow gets anything.
	before := g.envoy.xdsVersions()["route/modelsplit_routes"]
	for _, s := range []string{"m", "r"} {
		if code, body := send(t, http.MethodPost, "http://"+g.admin()+"/v1/endpoints/model/shadows/"+s+"/pause", "", ""); code != http.StatusOK {
			t.Fatalf("pause %s: %d %s", s, code, body)
		}
	}
	waitRouteVersion(t, g, before)
	m1, r1 := m.count(), r.count()
	parallelGets(t, g, "/model/predict", 2000, 8, func(i int) []string { return []string{"x-user-id", fmt.Sprintf("user-%d", i%users)} })
	time.Sleep(500 * time.Millisecond) // mirrors are asynchronous: give late copies time to land
	if dm, dr := m.count()-m1, r.count()-r1; dm != 0 || dr != 0 {
		t.Errorf("paused shadows got requests: m %d, r %d", dm, dr)
	}
	// Envoy's answered mirror requests equal what the backends counted (a
	// copy Envoy started but that was reset before reaching the backend —
	// seen once under load — is in upstream_rq_total but not answered).
	if n, got := g.envoy.stat("cluster.model/m.upstream_rq_2xx")+g.envoy.stat("cluster.model/r.upstream_rq_2xx"), m.count()+r.count(); n != uint64(got) {
		t.Errorf("Envoy got %d answers from the shadow clusters, the backends counted %d requests", n, got)
	}

	g.envoy.assertNoRejections()
}

// waitRouteVersion waits until Envoy holds a route configuration other
// than version before.
func waitRouteVersion(t testing.TB, g *gateway, before string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if v := g.envoy.xdsVersions()["route/modelsplit_routes"]; v != before && v != "" {
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("Envoy still holds route version %q after 10s", before)
	return ""
}

// slowDownGateway serves three endpoints on one primary backend: /plain
// without a shadow, /slow mirroring every user to a shadow that answers
// 500 ms late, /down mirroring every user to a port nobody listens on.
func slowDownGateway(t testing.TB) (g *gateway, primary, slow *httpBackend) {
	t.Helper()
	primary = startHTTPBackend(t, "a")
	slow = startHTTPBackend(t, "slow")
	slow.setHandler(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(500 * time.Millisecond):
		case <-r.Context().Done():
		}
		_, _ = w.Write([]byte("slow"))
	})
	downPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	ep := func(name, shadow string) string {
		s := fmt.Sprintf(`  - name: %s
    match: {path_prefix: /%s}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 100, backends: [%q]}
`, name, name, primary.addr)
		if shadow != "" {
			s += fmt.Sprintf("    shadows:\n      - {name: s, percent: 100, backends: [%q]}\n", shadow)
		}
		return s
	}
	g = startGateway(t, "endpoints:\n"+ep("plain", "")+ep("slow", slow.addr)+ep("down", fmt.Sprintf("127.0.0.1:%d", downPort)),
		"", "/plain/predict", "x-user-id", "probe")
	for _, p := range []string{"/slow/predict", "/down/predict"} {
		g.client.waitRouted(t, p, 10*time.Second, "x-user-id", "probe")
	}
	return g, primary, slow
}

// timedGets sends n sequential GETs to path, one every `every`, and
// returns each answer's latency; any failure fails the test.
func timedGets(t testing.TB, g *gateway, path string, n int, every time.Duration) []time.Duration {
	t.Helper()
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		r, err := g.client.get(path, "x-user-id", fmt.Sprintf("user-%d", i))
		if err != nil || r.status != http.StatusOK || r.body != "a" {
			t.Fatalf("%s request %d: status %d body %q err %v", path, i, r.status, r.body, err)
		}
		lat = append(lat, time.Since(start))
		time.Sleep(time.Until(start.Add(every)))
	}
	return lat
}

// TestEnvoyMirrorSlowOrDownShadow: a shadow that is 500 ms slow or down
// never holds up the primary: every primary answer succeeds and arrives in
// well under the shadow's 500 ms. (How much the p99 moves is measured by
// BenchmarkEnvoyMirrorPrimaryLatency: too noisy for a test on shared cores.)
func TestEnvoyMirrorSlowOrDownShadow(t *testing.T) {
	g, primary, slow := slowDownGateway(t)
	const n = 300
	for _, path := range []string{"/slow/predict", "/down/predict"} {
		lat := timedGets(t, g, path, n, 5*time.Millisecond)
		worst := slices.Max(lat)
		t.Logf("%s: %d answers, slowest %v, median %v", path, n, worst.Round(time.Microsecond), medianDuration(lat).Round(time.Microsecond))
		if worst >= 250*time.Millisecond {
			t.Errorf("%s: a primary answer took %v: it waited for the shadow", path, worst)
		}
	}
	// The shadows really were sent to: the slow one answered, the down
	// one failed to connect.
	waitSettled(t, g, "slow/s", slow)
	if got := slow.count(); got < n {
		t.Errorf("the slow shadow got %d requests, want >= %d", got, n)
	}
	if fails := g.envoy.stat("cluster.down/s.upstream_cx_connect_fail"); fails == 0 {
		t.Errorf("Envoy never tried the down shadow (upstream_cx_connect_fail 0)")
	}
	if primary.count() < 2*n {
		t.Errorf("primary served %d requests, want >= %d", primary.count(), 2*n)
	}
	g.envoy.assertNoRejections()
}

func medianDuration(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func p99(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*99/100]
}

// BenchmarkEnvoyMirrorPrimaryLatency: the primary's p99 through a real
// Envoy with a mirror shadow that is 500 ms slow, or down, against the same
// primary without a shadow, measured in the same run: interleaved A B A B
// (10 pairs of 500 requests at 500 req/s: the slow shadow has ~250 copies
// in flight), reported as the median of the per-pair p99 ratios (shadow /
// no shadow), with the median p99s and the median p50 ratio. Target: a
// p99 ratio of at most 1.10. On 2 shared cores single pairs swing both ways
// by 2x and more (one pair once 28x), so a median above the target is
// logged, not failed; rerun when the machine is quiet. Figures at load
// average 5-7: p99 ratio 1.05-1.23 (slow), 0.92-1.09 (down); p50 ratio
// 1.05 (slow), 1.10 (down).
func BenchmarkEnvoyMirrorPrimaryLatency(b *testing.B) {
	g, _, _ := slowDownGateway(b)
	for _, shadow := range []string{"slow", "down"} {
		b.Run(shadow, func(b *testing.B) {
			const pairs, n = 10, 500
			every := 2 * time.Millisecond
			timedGets(b, g, "/plain/predict", 200, every) // warm up both paths
			timedGets(b, g, "/"+shadow+"/predict", 200, every)
			b.ResetTimer()
			var ratios, p50s, base, with, aa99 []float64
			var prevA []time.Duration
			for i := 0; i < b.N; i++ {
				for p := 0; p < pairs; p++ {
					a := timedGets(b, g, "/plain/predict", n, every)
					s := timedGets(b, g, "/"+shadow+"/predict", n, every)
					if prevA != nil {
						aa99 = append(aa99, float64(p99(a))/float64(p99(prevA)))
					}
					prevA = a
					ratios = append(ratios, float64(p99(s))/float64(p99(a)))
					p50s = append(p50s, float64(medianDuration(s))/float64(medianDuration(a)))
					base = append(base, float64(p99(a).Microseconds()))
					with = append(with, float64(p99(s).Microseconds()))
				}
			}
			b.StopTimer()
			mr := median(ratios)
			b.ReportMetric(mr, "p99-ratio")
			b.ReportMetric(median(p50s), "p50-ratio")
			b.ReportMetric(median(base), "p99-µs-no-shadow")
			b.ReportMetric(median(with), "p99-µs-shadow")
			b.ReportMetric(median(aa99), "p99-ratio-AA")
			b.Logf("%s shadow: p99 ratios %.3f (median %.3f); p50 ratios median %.3f; A/A p99 ratios (consecutive no-shadow blocks, the noise) %.3f (median %.3f)",
				shadow, ratios, mr, median(p50s), aa99, median(aa99))
			if mr > 1.10 {
				// Reported, not failed: on shared cores a busy neighbour
				// moves single pairs by 2-30x (see the comment above).
				b.Logf("ABOVE TARGET: %s shadow moved the primary's p99 by %.1f%% (median of %d pairs), target <= 10%%", shadow, 100*(mr-1), len(ratios))
			}
		})
	}
}

// markLog records, per request, the input and whether the decision marked
// it for compare shadow c: the truth comparisons are checked against.
type markLog struct {
	mu     sync.Mutex
	marked map[int]bool // input → marked
	users  map[string]bool
}

func newMarkLog() *markLog { return &markLog{marked: map[int]bool{}, users: map[string]bool{}} }

func (l *markLog) add(input int, user string, marked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.marked[input] = marked
	if marked {
		l.users[user] = true
	} else if _, ok := l.users[user]; !ok {
		l.users[user] = false
	}
}

// truth: how many inputs were marked, and the share of those on which the
// shadow agrees.
func (l *markLog) truth(agrees func(int) bool) (int, float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, agree := 0, 0
	for in, m := range l.marked {
		if m {
			n++
			if agrees(in) {
				agree++
			}
		}
	}
	if n == 0 {
		return 0, 0
	}
	return n, float64(agree) / float64(n)
}

// usersMarked returns users that were (or were never) marked.
func (l *markLog) usersMarked(marked bool, max int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for u, m := range l.users {
		if m == marked && len(out) < max {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

// waitCompared waits until the shadow has a result (compared, dropped or
// error) for at least n exchanges, and returns its status.
func waitCompared(t testing.TB, g *gateway, endpoint string, n int) api.ShadowStatus {
	t.Helper()
	var st api.EndpointStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		getJSON(t.(*testing.T), "http://"+g.admin()+"/v1/endpoints/"+endpoint, "", &st)
		s := st.Shadows[0]
		if int(s.Compared+s.Dropped+s.Errors) >= n || time.Now().After(deadline) {
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// observeMessages is how many ext_proc messages Envoy sent (both filters).
func observeMessages(g *gateway) uint64 {
	return bothExtProcFilters(g, "stream_msgs_sent")
}

// bothExtProcFilters sums one counter of the decide and observe filters,
// which have their own stat prefixes (docs/envoy-notes.md §1.6).
func bothExtProcFilters(g *gateway, counter string) uint64 {
	st := g.envoy.stats()
	return st["http.modelsplit.ext_proc.decide."+counter] + st["http.modelsplit.ext_proc.observe."+counter]
}

// assertBodiesOnlyWhenSampled sends requests from users the decision never
// marked, then from users it did, and checks Envoy's ext_proc message
// counts: exactly `headers` messages per unmarked request (decision:
// request headers; observe: request and response headers, and the
// response trailers of a gRPC answer: no body chunk), at least two more
// for marked ones (their bodies). send makes one request for a user.
func assertBodiesOnlyWhenSampled(t *testing.T, g *gateway, l *markLog, headers uint64, send func(user string, i int)) {
	t.Helper()
	const n = 200
	unmarked, marked := l.usersMarked(false, 50), l.usersMarked(true, 50)
	if len(unmarked) == 0 || len(marked) == 0 {
		t.Fatalf("need marked and unmarked users, have %d and %d", len(marked), len(unmarked))
	}
	for _, phase := range []struct {
		name  string
		users []string
	}{{"unsampled", unmarked}, {"sampled", marked}} {
		before := observeMessages(g)
		streams := bothExtProcFilters(g, "streams_started")
		for i := 0; i < n; i++ {
			send(phase.users[i%len(phase.users)], 1_000_000+i)
		}
		// Envoy counts a message when it sends it; the last response's
		// observe messages may trail the answer by a moment.
		time.Sleep(300 * time.Millisecond)
		msgs := observeMessages(g) - before
		started := bothExtProcFilters(g, "streams_started") - streams
		t.Logf("%s users: %d requests, %d ext_proc streams, %d messages to ext_proc (%.2f per request, %d beyond headers and trailers)",
			phase.name, n, started, msgs, float64(msgs)/n, int64(msgs)-int64(headers*n))
		if started != 2*n {
			t.Errorf("%s: %d ext_proc streams for %d requests, want 2 per request (decide + observe)", phase.name, started, n)
		}
		switch phase.name {
		case "unsampled":
			if msgs != headers*n {
				t.Errorf("unsampled requests sent %d messages to ext_proc, want exactly %d (headers and trailers only: no body chunks)", msgs, headers*n)
			}
		case "sampled":
			if msgs < (headers+2)*n {
				t.Errorf("sampled requests sent %d messages to ext_proc, want >= %d (plus request and response bodies)", msgs, (headers+2)*n)
			}
		}
	}
}

// TestEnvoyCompareHTTP: a compare-mode shadow behind a real Envoy with HTTP
// JSON bodies. The decision marks 40% of users; only their requests
// stream bodies to modelsplit; every marked exchange is compared and the
// measured agreement matches the truth (the shadow's score differs on
// inputs with x%10 < 3). An endpoint without the decision (decide:
// false) has no marks: its route streams every request's bodies and the
// observe filter samples; it is compared too.
func TestEnvoyCompareHTTP(t *testing.T) {
	log := newMarkLog()
	model := func(shadow, record bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet { // startGateway's probe
				return
			}
			var in struct{ X int }
			if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			score := float64(in.X) / 4
			if shadow && in.X%10 < 3 {
				score += 0.5
			}
			if record {
				log.add(in.X, r.Header.Get("x-user-id"), r.Header.Get("x-modelsplit-shadow-c") != "")
			}
			w.Header().Set("content-type", "application/json")
			fmt.Fprintf(w, `{"predictions":[{"score":%v,"label":"x"}]}`, score)
		}
	}
	a, c := startHTTPBackend(t, "a"), startHTTPBackend(t, "c")
	a.setHandler(model(false, true))
	c.setHandler(model(true, false))
	a2, c2 := startHTTPBackend(t, "a2"), startHTTPBackend(t, "c2")
	a2.setHandler(model(false, false))
	c2.setHandler(model(true, false))
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: nodecide
    match: {path_prefix: /nodecide}
    decide: false
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 100, backends: [%q]}
    shadows:
      - name: c
        percent: 100
        backends: [%q]
        compare: {field: "predictions[0].score", tolerance: 0.01}
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 100, backends: [%q]}
    shadows:
      - name: c
        percent: 40
        backends: [%q]
        compare: {field: "predictions[0].score", tolerance: 0.01, max_concurrency: 256}
`, a2.addr, c2.addr, a.addr, c.addr), slackDecision, "/model/health", "x-user-id", "probe")
	post := func(user string, x int) {
		r, err := g.client.do(http.MethodPost, "/model/predict", fmt.Appendf(nil, `{"x":%d}`, x), "x-user-id", user, "content-type", "application/json")
		if err != nil || r.status != http.StatusOK || !strings.Contains(r.body, fmt.Sprintf(`"score":%v,`, float64(x)/4)) {
			t.Fatalf("user %s x %d: status %d body %q err %v (not the primary's answer)", user, x, r.status, r.body, err)
		}
	}
	// The probe's GET (no body) may have been sampled: let it finish.
	time.Sleep(200 * time.Millisecond)
	var st api.EndpointStatus
	getJSON(t, "http://"+g.admin()+"/v1/endpoints/model", "", &st)
	base := st.Shadows[0]

	const users, n = 500, 3000
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				post(fmt.Sprintf("user-%d", i%users), i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()

	marked, truth := log.truth(func(x int) bool { return x%10 >= 3 })
	s := waitCompared(t, g, "model", int(base.Compared+base.Dropped+base.Errors)+marked)
	compared, agreed := s.Compared-base.Compared, s.Agreed-base.Agreed
	got := float64(agreed) / float64(compared)
	t.Logf("HTTP: %d of %d requests marked (%.1f%%); compared %d, agreed %d, dropped %d, errors %d; agreement %.4f, truth %.4f",
		marked, n, 100*float64(marked)/n, compared, agreed, s.Dropped-base.Dropped, s.Errors-base.Errors, got, truth)
	if int(compared) != marked || s.Dropped != base.Dropped || s.Errors != base.Errors {
		t.Errorf("compared %d of %d marked exchanges (dropped %d, errors %d): every marked exchange must complete",
			compared, marked, s.Dropped-base.Dropped, s.Errors-base.Errors)
	}
	if math.Abs(got-truth) > 0.02 {
		t.Errorf("measured agreement %.4f, truth %.4f: want within ±2 pp", got, truth)
	}
	if share := float64(marked) / n; math.Abs(share-0.40) > 0.10 {
		t.Errorf("%.1f%% of requests marked for a 40%% shadow", 100*share)
	}
	if ratio, _ := series(scrape(t, g.admin()), "modelsplit_shadow_agreement_ratio", map[string]string{"endpoint": "model", "shadow": "c"}); math.Abs(ratio-float64(s.Agreed)/float64(s.Compared)) > 1e-9 {
		t.Errorf("modelsplit_shadow_agreement_ratio %v, API %d/%d", ratio, s.Agreed, s.Compared)
	}
	if got := c.count(); got != int(s.Compared+s.Errors) {
		t.Errorf("the shadow served %d replays, want one per comparison (%d)", got, s.Compared+s.Errors)
	}

	assertBodiesOnlyWhenSampled(t, g, log, 3, post)

	// decide: false: 100 requests, every one compared (percent 100),
	// agreement 70/100.
	for x := 0; x < 100; x++ {
		r, err := g.client.do(http.MethodPost, "/nodecide/predict", fmt.Appendf(nil, `{"x":%d}`, x), "x-user-id", fmt.Sprintf("user-%d", x), "content-type", "application/json")
		if err != nil || r.status != http.StatusOK || r.variant != "a" {
			t.Fatalf("nodecide x %d: status %d variant %q err %v", x, r.status, r.variant, err)
		}
	}
	if s := waitCompared(t, g, "nodecide", 100); s.Compared != 100 || s.Agreed != 70 {
		t.Errorf("decide: false endpoint: %+v, want 100 compared, 70 agreed", s)
	}
	g.envoy.assertNoRejections()
}

// markingModel is a gRPC model backend that records, per input, whether
// the decision marked the call for compare shadow c.
type markingModel struct {
	*modelBackend
	log *markLog
}

func (m markingModel) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	m.log.add(int(req.GetResponseSize()), strings.Join(md.Get("x-user-id"), ","), len(md.Get("x-modelsplit-shadow-c")) > 0)
	return m.modelBackend.UnaryCall(ctx, req)
}

func startMarkingModel(t testing.TB, name string, log *markLog) *modelBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &modelBackend{name: name, addr: lis.Addr().String()}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, markingModel{modelBackend: m, log: log})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return m
}

// TestEnvoyCompareGRPC: the same through Envoy in front of gRPC backends
// (endpoint protocol grpc), called by grpc-go over h2c on Envoy's gateway
// port. Envoy streams the raw HTTP/2 body (length-prefixed messages) and
// ends a gRPC answer with trailers: every marked call must still be
// compared, and the agreement must match the truth.
func TestEnvoyCompareGRPC(t *testing.T) {
	log := newMarkLog()
	a := startMarkingModel(t, "a", log)
	c := startModel(t, "c", 0, func(n int32) bool { return n%10 < 3 })
	probe := startHTTPBackend(t, "probe") // startGateway waits for an HTTP route
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: probe
    match: {path_prefix: /probe}
    variants:
      - {name: a, weight: 100, backends: [%q]}
  - name: echo
    protocol: grpc
    match: {path_prefix: /grpc.testing.TestService/}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 100, backends: [%q]}
    shadows:
      - name: c
        percent: 40
        backends: [%q]
        compare: {field: "2", max_concurrency: 256}
`, probe.addr, a.addr, c.addr), slackDecision, "/probe")
	cc, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", g.port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	call := func(user string, n int) {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-user-id", user), 10*time.Second)
		defer cancel()
		var hdr metadata.MD
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: int32(n)}, grpc.Header(&hdr))
		if err != nil {
			t.Fatalf("user %s call %d: %v", user, n, err)
		}
		if resp.GetHostname() != "a" || resp.GetUsername() != label(int32(n)) {
			t.Fatalf("user %s call %d: answer %v is not the primary's", user, n, resp)
		}
		if v := hdr.Get("x-modelsplit-variant"); len(v) != 1 || v[0] != "a" {
			t.Fatalf("user %s call %d: x-modelsplit-variant %v", user, n, v)
		}
	}

	const users, n = 400, 2000
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				call(fmt.Sprintf("user-%d", i%users), i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()

	marked, truth := log.truth(func(x int) bool { return x%10 >= 3 })
	s := waitCompared(t, g, "echo", marked)
	got := float64(s.Agreed) / float64(s.Compared)
	t.Logf("gRPC: %d of %d calls marked (%.1f%%); compared %d, agreed %d, dropped %d, errors %d; agreement %.4f, truth %.4f",
		marked, n, 100*float64(marked)/n, s.Compared, s.Agreed, s.Dropped, s.Errors, got, truth)
	if int(s.Compared) != marked || s.Dropped != 0 || s.Errors != 0 {
		t.Errorf("compared %d of %d marked calls (dropped %d, errors %d): every marked call must complete",
			s.Compared, marked, s.Dropped, s.Errors)
	}
	if math.Abs(got-truth) > 0.02 {
		t.Errorf("measured agreement %.4f, truth %.4f: want within ±2 pp", got, truth)
	}
	if share := float64(marked) / n; math.Abs(share-0.40) > 0.10 {
		t.Errorf("%.1f%% of calls marked for a 40%% shadow", 100*share)
	}
	fams := scrape(t, g.admin())
	if ratio, _ := series(fams, "modelsplit_shadow_agreement_ratio", map[string]string{"endpoint": "echo", "shadow": "c"}); math.Abs(ratio-got) > 1e-9 {
		t.Errorf("modelsplit_shadow_agreement_ratio %v, API %.4f", ratio, got)
	}
	if c.callCount() != int(s.Compared) {
		t.Errorf("the shadow served %d replays, want one per comparison (%d)", c.callCount(), s.Compared)
	}

	assertBodiesOnlyWhenSampled(t, g, log, 4, call)
	g.envoy.assertNoRejections()
}

// TestEnvoyMintCookie: with sticky {cookie: uid, mint_cookie: true}, an
// anonymous user's first answer carries a minted uid Set-Cookie next to
// the backend's own Set-Cookie headers (both arrive), and later requests
// carrying the cookie stick to one variant without a new cookie.
func TestEnvoyMintCookie(t *testing.T) {
	a, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
	for _, be := range []*httpBackend{a, b} {
		name := be.name
		be.setHandler(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Set-Cookie", "backend="+name+"; Path=/")
			w.Header().Add("Set-Cookie", "session=s1; Path=/; HttpOnly")
			_, _ = w.Write([]byte(name))
		})
	}
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: web
    match: {path_prefix: /web}
    sticky: {cookie: uid, mint_cookie: true, ttl: 24h}
    variants:
      - {name: a, weight: 50, backends: [%q]}
      - {name: b, weight: 50, backends: [%q]}
`, a.addr, b.addr), slackDecision, "/web/page")

	const users, visits = 200, 5
	onA := 0
	for u := 0; u < users; u++ {
		first, err := g.client.get("/web/page")
		if err != nil || first.status != http.StatusOK {
			t.Fatalf("user %d first request: status %d err %v", u, first.status, err)
		}
		cookies := first.header.Values("Set-Cookie")
		var uid string
		backendCookies := 0
		for _, c := range cookies {
			switch {
			case strings.HasPrefix(c, "uid="):
				uid = strings.SplitN(strings.TrimPrefix(c, "uid="), ";", 2)[0]
				if !strings.Contains(c, "Max-Age=86400") || !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "Path=/") {
					t.Errorf("minted cookie %q: want Path=/, HttpOnly and Max-Age=86400 (ttl 24h)", c)
				}
			case c == "backend="+first.body+"; Path=/", c == "session=s1; Path=/; HttpOnly":
				backendCookies++
			}
		}
		if uid == "" || backendCookies != 2 || len(cookies) != 3 {
			t.Fatalf("user %d: Set-Cookie %q: want the backend's two cookies and a minted uid", u, cookies)
		}
		if first.variant != first.body {
			t.Errorf("user %d: answered by %s, x-modelsplit-variant %q", u, first.body, first.variant)
		}
		// Later visits carry the cookie (and the backend's), as a browser
		// would: same variant every time, no new uid.
		for v := 0; v < visits; v++ {
			r, err := g.client.get("/web/page", "cookie", "backend="+first.body+"; uid="+uid+"; session=s1")
			if err != nil || r.status != http.StatusOK {
				t.Fatalf("user %d visit %d: status %d err %v", u, v, r.status, err)
			}
			if r.body != first.body {
				t.Errorf("user %d (uid %s) moved from %s to %s on visit %d", u, uid, first.body, r.body, v)
			}
			for _, c := range r.header.Values("Set-Cookie") {
				if strings.HasPrefix(c, "uid=") {
					t.Errorf("user %d visit %d: a new uid cookie %q although the request carried one", u, v, c)
				}
			}
			if n := len(r.header.Values("Set-Cookie")); n != 2 {
				t.Errorf("user %d visit %d: %d Set-Cookie headers, want the backend's 2", u, v, n)
			}
		}
		if first.body == "a" {
			onA++
		}
	}
	t.Logf("%d anonymous users: %d on a, %d on b; each got a minted uid with the backend's cookies and stuck for %d visits", users, onA, users-onA, visits)
	// 50/50 over 200 users: sigma is sqrt(200/4) = 7.07 users, 5 sigma
	// 35.4. Split accuracy is proven elsewhere with 200,000 users; this
	// catches minted users not being split at all (all on one variant).
	if onA < 100-36 || onA > 100+36 {
		t.Errorf("%d of %d minted users on a, want 100 ± 36 (5 sigma)", onA, users)
	}
	g.envoy.assertNoRejections()
}
