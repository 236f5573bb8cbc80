package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Long and streaming inference through a real Envoy: generations longer
// than Envoy's 15 s default route timeout, server-sent events, long gRPC
// streams, the configured bounds cutting what exceeds them, and the
// per-variant time-to-first-byte, duration and token telemetry.
//
// Every test here is t.Parallel (and so are its subtests): they mostly
// wait on slow backends, so they overlap each other to keep `make test`
// short. Each runs its own modelsplit and Envoy on free ports (not the
// shared xDS port the proxyless tests use), so they can.

// startLongGateway is startGateway on free ports only.
func startLongGateway(t *testing.T, configBody, gatewayExtra, routePath string, routeHeaders ...string) *gateway {
	t.Helper()
	envoyBinary(t)
	g := &gateway{}
	for _, p := range []*int{&g.ports.xds, &g.ports.extproc, &g.ports.admin, &g.port} {
		var err error
		if *p, err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	gw := fmt.Sprintf("gateway: {port: %d, address: 127.0.0.1", g.port)
	if gatewayExtra != "" {
		gw += ", " + gatewayExtra
	}
	gw += "}\n"
	g.cfg = tempConfig(t, g.ports.listenYAML()+gw+configBody)
	g.serve = &modelsplitHandle{t: t, p: g.ports, cfg: g.cfg}
	g.serve.proc = startServe(t, g.cfg, g.ports)
	g.envoy = startEnvoy(t, envoyOptions{XDS: fmt.Sprintf("127.0.0.1:%d", g.ports.xds)})
	g.client = newGatewayClient(g.port)
	g.client.waitRouted(t, routePath, 30*time.Second, routeHeaders...)
	return g
}

// longHandler answers like a model server named name:
//
//	.../slow?sleep=D                  one answer after D (nothing before)
//	.../stream?events=N&every=D       server-sent events: N events D apart,
//	    [&stall=K]                    "id: i" / "data: <name> <i>"; after K
//	    [&tokens=T]                   events silent until the client leaves;
//	                                  the count in an x-modelsplit-tokens trailer
//	anything else                     "<name>" at once, x-modelsplit-tokens: 7
func longHandler(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		q := r.URL.Query()
		wait := func(d time.Duration) bool {
			select {
			case <-time.After(d):
				return true
			case <-r.Context().Done():
				return false
			}
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/slow"):
			d, _ := time.ParseDuration(q.Get("sleep"))
			if !wait(d) {
				return
			}
			_, _ = fmt.Fprintf(w, "%s slept %v", name, d)
		case strings.HasSuffix(r.URL.Path, "/stream"):
			n, _ := strconv.Atoi(q.Get("events"))
			every, _ := time.ParseDuration(q.Get("every"))
			stall, err := strconv.Atoi(q.Get("stall"))
			if err != nil {
				stall = -1
			}
			if q.Has("tokens") {
				w.Header().Set("Trailer", "x-modelsplit-tokens")
			}
			w.Header().Set("content-type", "text/event-stream")
			w.Header().Set("cache-control", "no-cache")
			w.WriteHeader(http.StatusOK)
			f := w.(http.Flusher)
			f.Flush()
			for i := 0; i < n; i++ {
				if i == stall {
					<-r.Context().Done()
					return
				}
				if i > 0 && !wait(every) {
					return
				}
				_, _ = fmt.Fprintf(w, "id: %d\ndata: %s %d\n\n", i, name, i)
				f.Flush()
			}
			if q.Has("tokens") {
				w.Header().Set("x-modelsplit-tokens", q.Get("tokens"))
			}
		default:
			w.Header().Set("x-modelsplit-tokens", "7")
			_, _ = io.WriteString(w, name)
		}
	}
}

// sseResult is what a client saw of one server-sent-events answer.
type sseResult struct {
	status  int
	variant string
	events  []string        // data: lines, in arrival order
	at      []time.Duration // arrival of each, from the request
	elapsed time.Duration   // until the body ended (or broke)
	err     error           // how the body ended: nil for a clean end
}

// longHTTP is an HTTP/1.1 client with no overall timeout: these answers
// are meant to take long.
var longHTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// h2cHTTP speaks HTTP/2 without TLS to Envoy, as gRPC clients do.
var h2cHTTP = &http.Client{Transport: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}}}

// readSSE sends GET url with headers (name, value pairs) and reads the
// event stream as it arrives.
func readSSE(url string, headers ...string) sseResult { return readSSEWith(longHTTP, url, headers...) }

func readSSEWith(client *http.Client, url string, headers ...string) sseResult {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return sseResult{err: err}
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return sseResult{err: err, elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	res := sseResult{status: resp.StatusCode, variant: resp.Header.Get("x-modelsplit-variant")}
	rd := bufio.NewReader(resp.Body)
	for {
		line, err := rd.ReadString('\n')
		if data, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: "); ok {
			res.events = append(res.events, data)
			res.at = append(res.at, time.Since(start))
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				res.err = err
			}
			res.elapsed = time.Since(start)
			return res
		}
	}
}

// timedGet is one plain request: status, body, time taken.
func timedGet(url string, headers ...string) (int, string, time.Duration, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", 0, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	start := time.Now()
	resp, err := longHTTP.Do(req)
	if err != nil {
		return 0, "", time.Since(start), err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), time.Since(start), err
}

// within: lo <= d < hi, with 50 ms of slack below lo (Envoy arms its
// timers from its own clock, which may start a moment after ours and round
// to milliseconds).
func within(d, lo, hi time.Duration) bool { return d >= lo-50*time.Millisecond && d < hi }

// subtest is one of several subtests run at the same time.
type subtest struct {
	name string
	fn   func(*testing.T)
}

// concurrently runs the subtests at the same time and waits for them.
// Goroutines, not t.Parallel: -parallel defaults to GOMAXPROCS (2 on the
// shared machine) and would queue subtests that only wait on backends.
// t.Run may be called from several goroutines.
func concurrently(t *testing.T, subtests ...subtest) {
	t.Helper()
	var wg sync.WaitGroup
	for _, st := range subtests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(st.name, st.fn)
		}()
	}
	wg.Wait()
}

// TestEnvoyLongStreams: with the default bounds (timeout 300s,
// idle_timeout 60s) a 30 s unary answer arrives, and a 90 s stream of
// server-sent events (one a second) reaches the client intact — all 90,
// in order, as they are sent, not buffered — on each of three variants at
// once. Envoy's own 15 s default would have cut both with a 504.
func TestEnvoyLongStreams(t *testing.T) {
	t.Parallel()
	variants := []string{"a", "b", "c"}
	var addrs []any
	backends := map[string]*httpBackend{}
	for _, v := range variants {
		be := startHTTPBackend(t, v)
		be.setHandler(longHandler(v))
		addrs = append(addrs, be.addr)
		backends[v] = be
	}
	g := startLongGateway(t, fmt.Sprintf(`endpoints:
  - name: chat
    match: {path_prefix: /chat}
    sticky: {header: x-user-id}
    allow_target: true
    variants:
      - {name: a, weight: 34, backends: [%q]}
      - {name: b, weight: 33, backends: [%q]}
      - {name: c, weight: 33, backends: [%q]}
`, addrs...), "", "/chat/ping", "x-user-id", "probe")
	base := fmt.Sprintf("http://127.0.0.1:%d", g.port)

	var subs []subtest
	subs = append(subs, subtest{"unary 30s", func(t *testing.T) {
		code, body, took, err := timedGet(base+"/chat/slow?sleep=30s", "x-user-id", "u-unary", "x-modelsplit-target", "a")
		if err != nil || code != http.StatusOK || body != "a slept 30s" {
			t.Fatalf("30 s answer: status %d body %q err %v after %v", code, body, err, took)
		}
		if took < 30*time.Second {
			t.Errorf("answered after %v, before the backend's 30 s", took)
		}
		t.Logf("30 s unary answer: 200 %q after %v", body, took.Round(time.Millisecond))
	}})
	for _, v := range variants {
		subs = append(subs, subtest{"sse 90s on " + v, func(t *testing.T) {
			r := readSSE(base+"/chat/stream?events=90&every=1s", "x-user-id", "u-"+v, "x-modelsplit-target", v)
			if r.status != http.StatusOK || r.variant != v || r.err != nil {
				t.Fatalf("status %d variant %q err %v after %v (%d events)", r.status, r.variant, r.err, r.elapsed, len(r.events))
			}
			if len(r.events) != 90 {
				t.Fatalf("%d events, want 90 (last %q)", len(r.events), r.events[len(r.events)-1])
			}
			for i, e := range r.events {
				if want := fmt.Sprintf("%s %d", v, i); e != want {
					t.Fatalf("event %d is %q, want %q", i, e, want)
				}
			}
			// Streamed as sent: the first event right away, the last
			// after ~89 s, never several seconds late.
			var late time.Duration
			for i, at := range r.at {
				late = max(late, at-time.Duration(i)*time.Second)
			}
			if r.at[0] > 2*time.Second || r.at[89] < 89*time.Second || late > 3*time.Second {
				t.Errorf("events not streamed: first at %v, last at %v, latest %v behind schedule", r.at[0], r.at[89], late)
			}
			t.Logf("variant %s: 90/90 events in order, first at %v, last at %v, at most %v behind schedule",
				v, r.at[0].Round(time.Millisecond), r.at[89].Round(time.Millisecond), late.Round(time.Millisecond))
		}})
	}
	concurrently(t, subs...)
	stats := g.envoy.stats()
	for _, v := range variants {
		if n := stats["cluster.chat/"+v+".upstream_rq_timeout"]; n != 0 {
			t.Errorf("cluster chat/%s: %d upstream timeouts", v, n)
		}
	}
	if n := stats["http.modelsplit.downstream_rq_idle_timeout"]; n != 0 {
		t.Errorf("%d idle timeouts", n)
	}
	g.envoy.assertNoRejections()
	// Each variant's 90 s stream is in its duration histogram (over 60 s),
	// with a first byte within a second.
	for _, v := range variants {
		labels := map[string]string{"endpoint": "chat", "variant": v}
		dur := waitHistogram(t, g, "modelsplit_variant_duration_seconds", labels, func(h *dto.Histogram) bool {
			return h.GetSampleCount()-bucket(h, 60) >= 1
		})
		ttfb := histogramOf(t, g, "modelsplit_variant_time_to_first_byte_seconds", "chat", v)
		if dur.GetSampleCount() != uint64(backends[v].count()) || ttfb.GetSampleCount() != dur.GetSampleCount() {
			t.Errorf("chat/%s: %d requests, %d duration and %d TTFB samples", v, backends[v].count(), dur.GetSampleCount(), ttfb.GetSampleCount())
		}
		t.Logf("chat/%s: %d requests; durations over 60s: %d, sum %.1fs; TTFB under 1s: %d of %d",
			v, backends[v].count(), dur.GetSampleCount()-bucket(dur, 60), dur.GetSampleSum(), bucket(ttfb, 1), ttfb.GetSampleCount())
	}
}

// bucket is a histogram's cumulative count at upper bound le.
func bucket(h *dto.Histogram, le float64) uint64 {
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	return 0
}

// histogramOf reads one variant's histogram from modelsplit's /metrics.
func histogramOf(t *testing.T, g *gateway, name, endpoint, variant string) *dto.Histogram {
	t.Helper()
	return findHistogram(scrape(t, g.admin()), name, map[string]string{"endpoint": endpoint, "variant": variant})
}

func findHistogram(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Histogram {
	for _, m := range fams[name].GetMetric() {
		n := 0
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
				n++
			}
		}
		if n == len(labels) {
			return m.GetHistogram()
		}
	}
	return &dto.Histogram{}
}

// waitHistogram polls until a histogram satisfies ok: Envoy sends its
// access log at most a second late (xds.AccessLogFlushInterval).
func waitHistogram(t *testing.T, g *gateway, name string, labels map[string]string, ok func(*dto.Histogram) bool) *dto.Histogram {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		h := findHistogram(scrape(t, g.admin()), name, labels)
		if ok(h) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v: count %d sum %v did not get there in 15s", name, labels, h.GetSampleCount(), h.GetSampleSum())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEnvoyTimeoutsCutRequests: the configured bounds hold. An answer
// later than the endpoint's timeout (2 s) is a 504 after 2 s — also when
// the client asks for more with x-envoy-upstream-rq-timeout-ms, which the
// gateway strips — and a stream still running at 2 s is cut there. An
// idle_timeout (1 s, whole timeout 30 s) cuts a stream that goes silent,
// 1 s after its last byte, and bounds the wait for the first byte.
//
// Where a stream is cut after its response started, Envoy resets it; an
// HTTP/1.1 client learns it when Envoy closes the connection, which it
// does after its delayed_close_timeout (1 s by default) — so an HTTP/1.1
// client sees the cut about a second after Envoy made it, an HTTP/2
// client at once. The events received show where Envoy cut.
func TestEnvoyTimeoutsCutRequests(t *testing.T) {
	t.Parallel()
	short, idle := startHTTPBackend(t, "short"), startHTTPBackend(t, "idle")
	short.setHandler(longHandler("short"))
	idle.setHandler(longHandler("idle"))
	g := startLongGateway(t, fmt.Sprintf(`endpoints:
  - name: short
    match: {path_prefix: /short}
    timeout: 2s
    variants: [{name: a, weight: 1, backends: [%q]}]
  - name: idle
    match: {path_prefix: /idle}
    timeout: 30s
    idle_timeout: 1s
    variants: [{name: a, weight: 1, backends: [%q]}]
`, short.addr, idle.addr), "", "/short/ping")
	base := fmt.Sprintf("http://127.0.0.1:%d", g.port)

	var subs []subtest
	for _, tc := range []struct {
		name    string
		headers []string
	}{
		{"answer after the timeout is a 504", nil},
		{"client cannot lift the timeout", []string{"x-envoy-upstream-rq-timeout-ms", "60000", "x-envoy-expected-rq-timeout-ms", "60000"}},
	} {
		subs = append(subs, subtest{tc.name, func(t *testing.T) {
			code, body, took, err := timedGet(base+"/short/slow?sleep=6s", tc.headers...)
			if err != nil || code != http.StatusGatewayTimeout || !within(took, 2*time.Second, 3500*time.Millisecond) {
				t.Fatalf("status %d body %q err %v after %v; want 504 after 2s", code, body, err, took)
			}
			t.Logf("%d %q after %v", code, body, took.Round(time.Millisecond))
		}})
	}
	for _, c := range []struct {
		proto  string
		client *http.Client
		late   time.Duration // how much later than Envoy's cut the client may see it
	}{{"HTTP/1.1", longHTTP, 1500 * time.Millisecond}, {"HTTP/2", h2cHTTP, 500 * time.Millisecond}} {
		subs = append(subs, subtest{"a stream over the timeout is cut, " + c.proto, func(t *testing.T) {
			// Events at 0, 0.6, 1.2, 1.8, 2.4 s...: the cut at 2 s leaves 4.
			r := readSSEWith(c.client, base+"/short/stream?events=10&every=600ms")
			if r.status != http.StatusOK || r.err == nil || len(r.events) != 4 || !within(r.elapsed, 2*time.Second, 2*time.Second+c.late) {
				t.Fatalf("status %d, %d events, ended by %v after %v; want a 200 cut at 2s after 4 events", r.status, len(r.events), r.err, r.elapsed)
			}
			t.Logf("%s: stream cut after %d of 10 events; the client saw it after %v (%v)", c.proto, len(r.events), r.elapsed.Round(time.Millisecond), r.err)
		}})
		subs = append(subs, subtest{"idle_timeout cuts a stream that goes silent, " + c.proto, func(t *testing.T) {
			r := readSSEWith(c.client, base+"/idle/stream?events=10&every=100ms&stall=3")
			if r.status != http.StatusOK || r.err == nil || len(r.events) != 3 {
				t.Fatalf("status %d, %d events, ended by %v after %v; want 3 events, then a cut", r.status, len(r.events), r.err, r.elapsed)
			}
			silent := r.elapsed - r.at[2]
			if !within(silent, time.Second, time.Second+c.late) {
				t.Errorf("cut seen %v after the last event, want ~1s (idle_timeout)", silent)
			}
			t.Logf("%s: 3 events, then silence: the client saw the cut %v after the last one (%v)", c.proto, silent.Round(time.Millisecond), r.err)
		}})
	}
	subs = append(subs, subtest{"idle_timeout bounds the wait for the first byte", func(t *testing.T) {
		code, body, took, err := timedGet(base + "/idle/slow?sleep=5s")
		if err != nil || code != http.StatusGatewayTimeout || !within(took, time.Second, 2500*time.Millisecond) {
			t.Fatalf("status %d body %q err %v after %v; want 504 after ~1s", code, body, err, took)
		}
		t.Logf("silent backend: %d %q after %v", code, body, took.Round(time.Millisecond))
	}})
	concurrently(t, subs...)
	// Envoy's counters: the two 504s are upstream timeouts, the silent
	// first byte and the two silent streams idle timeouts. The two streams
	// cut at 2 s count as either: on /short the idle bound defaults to the
	// timeout, and Envoy's two timers expire together.
	stats := g.envoy.stats()
	upstream, idleCut := stats["cluster.short/a.upstream_rq_timeout"], stats["http.modelsplit.downstream_rq_idle_timeout"]
	if upstream < 2 || idleCut < 3 || upstream+idleCut != 7 {
		t.Errorf("upstream_rq_timeout %d + downstream_rq_idle_timeout %d, want at least 2 + 3, 7 in all", upstream, idleCut)
	}
	var names []string
	for name, v := range stats {
		if v > 0 && (strings.Contains(name, "timeout") || strings.Contains(name, "max_duration")) && !strings.Contains(name, "ext_proc") {
			names = append(names, fmt.Sprintf("%s=%d", name, v))
		}
	}
	sort.Strings(names)
	t.Logf("Envoy timeout counters: %s", strings.Join(names, " "))
	g.envoy.assertNoRejections()
}

// longGRPCBackend streams and answers slowly:
//
//	StreamingOutputCall  one message per response_parameters entry, each
//	                     after its interval_us (payload: its index); an
//	                     x-delay metadata value waits before the first
//	EmptyCall            answers after 10 s, recording the deadline the
//	                     call arrived with (grpc-go's server also resets
//	                     the stream itself when that deadline passes)
type longGRPCBackend struct {
	testgrpc.UnimplementedTestServiceServer
	addr      string
	mu        sync.Mutex
	deadlines []time.Duration
}

func startLongGRPCBackend(t *testing.T) *longGRPCBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &longGRPCBackend{addr: lis.Addr().String()}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, b)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return b
}

func mdDuration(ctx context.Context, key string) time.Duration {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(key); len(v) > 0 {
		d, _ := time.ParseDuration(v[0])
		return d
	}
	return 0
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *longGRPCBackend) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	if err := sleepCtx(s.Context(), mdDuration(s.Context(), "x-delay")); err != nil {
		return err
	}
	for i, p := range req.GetResponseParameters() {
		if err := sleepCtx(s.Context(), time.Duration(p.GetIntervalUs())*time.Microsecond); err != nil {
			return err
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(strconv.Itoa(i))}}); err != nil {
			return err
		}
	}
	return nil
}

func (b *longGRPCBackend) EmptyCall(ctx context.Context, _ *testgrpc.Empty) (*testgrpc.Empty, error) {
	if d, ok := ctx.Deadline(); ok {
		b.mu.Lock()
		b.deadlines = append(b.deadlines, time.Until(d))
		b.mu.Unlock()
	}
	if err := sleepCtx(ctx, 10*time.Second); err != nil {
		return nil, err
	}
	return &testgrpc.Empty{}, nil
}

// deafGRPC answers a unary gRPC call after 10 s whatever its grpc-timeout
// says (it never reads it): only Envoy can end such a call on time.
func deafGRPC(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-time.After(10 * time.Second):
	case <-r.Context().Done():
		return
	}
	w.Header().Set("content-type", "application/grpc")
	w.Header().Set("Trailer", "grpc-status")
	_, _ = w.Write([]byte{0, 0, 0, 0, 0}) // an empty SimpleResponse
	w.Header().Set("grpc-status", "0")
}

func streamRequest(n int, every time.Duration) *testgrpc.StreamingOutputCallRequest {
	req := &testgrpc.StreamingOutputCallRequest{}
	for i := 0; i < n; i++ {
		iv := every
		if i == 0 {
			iv = 0
		}
		req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{IntervalUs: int32(iv / time.Microsecond)})
	}
	return req
}

// TestEnvoyLongGRPC: gRPC through Envoy with a grpc-go client over h2c. A
// 40 s server stream (a message a second) with the default bounds arrives
// whole. The client's grpc-timeout bounds its call in Envoy (a raw HTTP/2
// client, with no deadline of its own, gets DEADLINE_EXCEEDED from Envoy
// at its grpc-timeout), and the endpoint's timeout caps it: a grpc-go call
// with an hour's deadline on a 3 s endpoint gets DEADLINE_EXCEEDED from
// Envoy after 3 s, and the backend is told 3 s, not an hour.
//
// Envoy forwards the capped grpc-timeout, so a backend that honours it
// (grpc-go resets the stream at its deadline) ends the call at the same
// moment Envoy does; the client then sees whichever comes first:
// DEADLINE_EXCEEDED from Envoy, or UNAVAILABLE ("reset before headers")
// when the backend's reset wins.
func TestEnvoyLongGRPC(t *testing.T) {
	t.Parallel()
	be := startLongGRPCBackend(t)
	probe := startHTTPBackend(t, "probe")
	deaf := startHTTPBackend(t, "deaf", "grpc-timeout")
	deaf.setHandler(deafGRPC)
	g := startLongGateway(t, fmt.Sprintf(`endpoints:
  - name: probe
    match: {path_prefix: /probe}
    variants: [{name: a, weight: 1, backends: [%q]}]
  - name: gen
    protocol: grpc
    services: [grpc.testing.TestService]
    match: {path_prefix: /grpc.testing.TestService/StreamingOutputCall}
    sticky: {header: x-user-id}
    variants: [{name: a, weight: 1, backends: [%q]}]
  - name: capped
    protocol: grpc
    services: [grpc.testing.TestService]
    match: {path_prefix: /grpc.testing.TestService/UnaryCall}
    timeout: 3s
    variants: [{name: a, weight: 1, backends: [%q]}]
  - name: capped-go
    protocol: grpc
    services: [grpc.testing.TestService]
    match: {path_prefix: /grpc.testing.TestService/EmptyCall}
    timeout: 3s
    variants: [{name: a, weight: 1, backends: [%q]}]
`, probe.addr, be.addr, deaf.addr, be.addr), "", "/probe")
	cc, err := grpc.NewClient(fmt.Sprintf("passthrough:///127.0.0.1:%d", g.port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := testgrpc.NewTestServiceClient(cc)

	var subs []subtest
	subs = append(subs, subtest{"server stream 40s", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-user-id", "streamer")
		start := time.Now()
		s, err := client.StreamingOutputCall(ctx, streamRequest(40, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			m, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d messages and %v: %v", len(got), time.Since(start), err)
			}
			got = append(got, string(m.GetPayload().GetBody()))
		}
		took := time.Since(start)
		for i, m := range got {
			if m != strconv.Itoa(i) {
				t.Fatalf("message %d is %q", i, m)
			}
		}
		if len(got) != 40 || took < 39*time.Second {
			t.Fatalf("%d messages in %v, want 40 over ~39s", len(got), took)
		}
		v, _ := s.Header()
		t.Logf("40/40 messages in order over %v, status OK, variant %v", took.Round(time.Millisecond), v.Get("x-modelsplit-variant"))
	}})
	var rawByEnvoy, deafRan atomic.Int64 // calls Envoy ended at max_stream_duration
	subs = append(subs, subtest{"the client's grpc-timeout bounds the call in Envoy", func(t *testing.T) {
		code, took, err := rawGRPCStream(g.port, "2S", "10s")
		if code == strconv.Itoa(int(codes.DeadlineExceeded)) {
			rawByEnvoy.Add(1)
		}
		// The backend (grpc-go) is told the same 2s and resets the stream
		// then: whichever comes first answers (see above). With the
		// endpoint's retry policy Envoy's own answer came a few ms later
		// and the backend's reset won 3 of 5 runs (1 of 5 without).
		if err != nil || (code != strconv.Itoa(int(codes.DeadlineExceeded)) && code != strconv.Itoa(int(codes.Unavailable))) ||
			!within(took, 2*time.Second, 3500*time.Millisecond) {
			t.Fatalf("grpc-status %q after %v (%v); want %d (DEADLINE_EXCEEDED from Envoy) or %d (the backend's reset at the same deadline) after 2s",
				code, took, err, codes.DeadlineExceeded, codes.Unavailable)
		}
		t.Logf("grpc-timeout: 2S, backend silent 10s, no client deadline: grpc-status %s after %v (4: Envoy ended it, 14: the backend did at the same deadline)", code, took.Round(time.Millisecond))
	}})
	subs = append(subs, subtest{"the endpoint's timeout caps a longer grpc-timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		start := time.Now()
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		took := time.Since(start)
		deafRan.Add(1)
		if status.Code(err) != codes.DeadlineExceeded || !within(took, 3*time.Second, 4500*time.Millisecond) {
			t.Fatalf("%v after %v; want DEADLINE_EXCEEDED after 3s", err, took)
		}
		told := deaf.headerValues("grpc-timeout")
		if len(told) != 1 {
			t.Fatalf("backend received grpc-timeout %v, want one value", told)
		}
		for v := range told {
			if d, err := parseGRPCTimeout(v); err != nil || d > 3*time.Second {
				t.Errorf("backend was told grpc-timeout %q, want at most 3s", v)
			}
			t.Logf("deadline 1h on a 3s endpoint, backend deaf to deadlines: %v after %v; the backend was told grpc-timeout %s", status.Code(err), took.Round(time.Millisecond), v)
		}
	}})
	subs = append(subs, subtest{"a backend told the capped deadline ends the call too", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		start := time.Now()
		_, err := client.EmptyCall(ctx, &testgrpc.Empty{})
		took := time.Since(start)
		code := status.Code(err)
		if (code != codes.DeadlineExceeded && code != codes.Unavailable) || !within(took, 3*time.Second, 4500*time.Millisecond) {
			t.Fatalf("%v after %v; want DEADLINE_EXCEEDED or UNAVAILABLE after 3s", err, took)
		}
		be.mu.Lock()
		deadlines := append([]time.Duration(nil), be.deadlines...)
		be.mu.Unlock()
		if len(deadlines) != 1 || deadlines[0] > 3*time.Second {
			t.Fatalf("backend deadlines %v, want one of at most 3s", deadlines)
		}
		t.Logf("deadline 1h on a 3s endpoint, grpc-go backend: %v after %v; the backend's deadline was %v", err, took.Round(time.Millisecond), deadlines[0].Round(time.Millisecond))
	}})
	concurrently(t, subs...)
	if n, want := g.envoy.stat("http.modelsplit.downstream_rq_max_duration_reached"), uint64(rawByEnvoy.Load()+deafRan.Load()); n < want {
		t.Errorf("downstream_rq_max_duration_reached %d, want at least %d (the deaf call, and the raw one when Envoy ended it)", n, want)
	}
	g.envoy.assertNoRejections()
}

// parseGRPCTimeout reads a grpc-timeout header value (e.g. "2999m").
func parseGRPCTimeout(v string) (time.Duration, error) {
	if len(v) < 2 {
		return 0, fmt.Errorf("bad grpc-timeout %q", v)
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil {
		return 0, err
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, fmt.Errorf("bad grpc-timeout unit in %q", v)
	}
	return time.Duration(n) * unit, nil
}

// rawGRPCStream calls StreamingOutputCall through Envoy over h2c with
// only a grpc-timeout header (no client-side deadline), the backend told
// to wait delay before answering; it returns the grpc-status Envoy gave.
func rawGRPCStream(port int, grpcTimeout, delay string) (string, time.Duration, error) {
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	msg, err := proto.Marshal(streamRequest(3, time.Second))
	if err != nil {
		return "", 0, err
	}
	frame := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	copy(frame[5:], msg)
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/grpc.testing.TestService/StreamingOutputCall", port), bytes.NewReader(frame))
	if err != nil {
		return "", 0, err
	}
	for k, v := range map[string]string{"content-type": "application/grpc", "te": "trailers", "grpc-timeout": grpcTimeout, "x-delay": delay, "x-user-id": "raw"} {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", time.Since(start), err
	}
	defer resp.Body.Close()
	_, err = io.ReadAll(resp.Body)
	took := time.Since(start)
	code := resp.Header.Get("grpc-status")
	if code == "" {
		code = resp.Trailer.Get("grpc-status")
	}
	return code, took, err
}

// TestEnvoyStreamTelemetry: per variant, Envoy's access log gives
// modelsplit one time-to-first-byte and one duration sample per request —
// as many as the backends served and Envoy's router counted — plus the
// token counts the backends reported (a header on short answers, an
// HTTP/2 trailer after a stream). A 3 s event stream is recorded with a
// duration of at least 3 s and a small time to first byte.
func TestEnvoyStreamTelemetry(t *testing.T) {
	t.Parallel()
	a, b, s := startHTTPBackend(t, "a"), startHTTPBackend(t, "b"), startHTTPBackend(t, "s")
	for _, be := range []*httpBackend{a, b, s} {
		be.setHandler(longHandler(be.name))
	}
	g := startLongGateway(t, fmt.Sprintf(`endpoints:
  - name: chat
    match: {path_prefix: /chat}
    sticky: {header: x-user-id}
    allow_target: true
    variants:
      - {name: a, weight: 50, backends: [%q]}
      - {name: b, weight: 50, backends: [%q], protocol: http2}
  - name: sse
    match: {path_prefix: /sse}
    variants: [{name: s, weight: 1, backends: [%q]}]
`, a.addr, b.addr, s.addr), "", "/chat/ping", "x-user-id", "probe")
	base := fmt.Sprintf("http://127.0.0.1:%d", g.port)

	var wg sync.WaitGroup
	var stream sseResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		stream = readSSE(base + "/sse/stream?events=11&every=300ms")
	}()
	// Short answers on both variants (x-modelsplit-tokens: 7 each), and on
	// the HTTP/2 variant one stream reporting its tokens in a trailer.
	users := userNames("tele", 60)
	g.route(t, "/chat/complete", users)
	streamed := readSSE(base+"/chat/stream?events=5&every=100ms&tokens=321", "x-user-id", "tok", "x-modelsplit-target", "b")
	if streamed.status != http.StatusOK || len(streamed.events) != 5 || streamed.err != nil {
		t.Fatalf("token stream: status %d, %d events, %v", streamed.status, len(streamed.events), streamed.err)
	}
	wg.Wait()
	if stream.status != http.StatusOK || len(stream.events) != 11 || stream.err != nil {
		t.Fatalf("3 s stream: status %d, %d events, %v", stream.status, len(stream.events), stream.err)
	}

	for _, v := range []struct {
		endpoint string
		be       *httpBackend
	}{{"chat", a}, {"chat", b}, {"sse", s}} {
		cluster := v.endpoint + "/" + v.be.name
		served := uint64(v.be.count())
		if envoy := g.envoy.stat("cluster." + cluster + ".upstream_rq_total"); envoy != served {
			t.Errorf("%s: backend served %d, Envoy counted %d", cluster, served, envoy)
		}
		labels := map[string]string{"endpoint": v.endpoint, "variant": v.be.name}
		ttfb := waitHistogram(t, g, "modelsplit_variant_time_to_first_byte_seconds", labels, func(h *dto.Histogram) bool { return h.GetSampleCount() >= served })
		dur := waitHistogram(t, g, "modelsplit_variant_duration_seconds", labels, func(h *dto.Histogram) bool { return h.GetSampleCount() >= served })
		if ttfb.GetSampleCount() != served || dur.GetSampleCount() != served {
			t.Errorf("%s: %d requests, %d TTFB samples, %d duration samples", cluster, served, ttfb.GetSampleCount(), dur.GetSampleCount())
		}
		t.Logf("%s: %d requests = %d TTFB samples (sum %.4fs) = %d duration samples (sum %.3fs)",
			cluster, served, ttfb.GetSampleCount(), ttfb.GetSampleSum(), dur.GetSampleCount(), dur.GetSampleSum())
		if v.endpoint == "sse" {
			if dur.GetSampleSum() < 3 || ttfb.GetSampleSum() > 0.5 {
				t.Errorf("3 s stream recorded with duration %.3fs, TTFB %.3fs; want >= 3s and small", dur.GetSampleSum(), ttfb.GetSampleSum())
			}
			t.Logf("3 s stream (events every 300ms, last at %v): duration %.3fs, TTFB %.4fs", stream.at[10].Round(time.Millisecond), dur.GetSampleSum(), ttfb.GetSampleSum())
		}
	}
	// Tokens: 7 per short answer (header), 321 for b's stream (trailer).
	fams := scrape(t, g.admin())
	for _, v := range []struct {
		be      *httpBackend
		streams int
	}{{a, 0}, {b, 1}} {
		tok := findHistogram(fams, "modelsplit_variant_response_tokens", map[string]string{"endpoint": "chat", "variant": v.be.name})
		n := uint64(v.be.count())
		want := float64(7*(int(n)-v.streams) + 321*v.streams)
		if tok.GetSampleCount() != n || tok.GetSampleSum() != want {
			t.Errorf("chat/%s: %d token reports summing to %v, want %d summing to %v", v.be.name, tok.GetSampleCount(), tok.GetSampleSum(), n, want)
		}
		t.Logf("chat/%s: %d token reports, %v tokens", v.be.name, tok.GetSampleCount(), tok.GetSampleSum())
	}
	// Envoy's own count of entries written equals what modelsplit received.
	recorded, _ := series(fams, "modelsplit_access_log_entries_total", map[string]string{"result": "recorded"})
	received := metricSum(t, g.admin(), "modelsplit_access_log_entries_total", nil)
	msgs, _ := series(fams, "modelsplit_access_log_messages_total", nil)
	stats := g.envoy.stats()
	written, dropped := stats["access_logs.grpc_access_log.logs_written"], stats["access_logs.grpc_access_log.logs_dropped"]
	if uint64(received) != written || dropped != 0 || recorded != received {
		t.Errorf("Envoy wrote %d access log entries (dropped %d); modelsplit received %v, recorded %v", written, dropped, received, recorded)
	}
	t.Logf("access log: Envoy wrote %d entries, modelsplit received them in %v messages and recorded %v", written, msgs, recorded)
	g.envoy.assertNoRejections()
}
