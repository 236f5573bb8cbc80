package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// classes are the status classes modelsplit_variant_responses_total
// exports (3xx never happens here but is compared all the same).
var classes = []string{"2xx", "3xx", "4xx", "5xx"}

// variantCounts is one variant's requests, classes and latency samples.
type variantCounts struct {
	requests, latency uint64
	class             map[string]uint64
}

func (c variantCounts) String() string {
	return fmt.Sprintf("requests=%d 2xx=%d 3xx=%d 4xx=%d 5xx=%d latency_samples=%d",
		c.requests, c.class["2xx"], c.class["3xx"], c.class["4xx"], c.class["5xx"], c.latency)
}

// modelsplitCounts reads one variant's observe series from /metrics.
func modelsplitCounts(t *testing.T, admin, endpoint, variant string) variantCounts {
	t.Helper()
	fams := scrape(t, admin)
	l := map[string]string{"endpoint": endpoint, "variant": variant}
	c := variantCounts{class: map[string]uint64{}}
	v, _ := series(fams, "modelsplit_variant_requests_total", l)
	c.requests = uint64(v)
	v, _ = series(fams, "modelsplit_variant_latency_seconds", l)
	c.latency = uint64(v)
	for _, class := range classes {
		v, _ := series(fams, "modelsplit_variant_responses_total", map[string]string{"endpoint": endpoint, "variant": variant, "class": class})
		c.class[class] = uint64(v)
	}
	return c
}

// metricSum adds up every series of a family whose labels include these.
func metricSum(t *testing.T, admin, name string, labels map[string]string) float64 {
	t.Helper()
	f, ok := scrape(t, admin)[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, m := range f.GetMetric() {
		match := true
		for k, v := range labels {
			found := false
			for _, l := range m.GetLabel() {
				found = found || (l.GetName() == k && l.GetValue() == v)
			}
			match = match && found
		}
		if match {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// waitObserveSettled waits until modelsplit has ended every ext_proc stream
// Envoy opened (both filters: the decision's and the observer's). The
// observer runs in observability mode, so a request is over for the client
// before its observation is: the stream's messages are still in flight,
// and Envoy closes it only deferred_close_timeout after the request.
// Each stream is counted by modelsplit when it ends, after its last
// message was handled, so equal counts mean every observation is in.
// Call it only once the traffic has stopped.
func waitObserveSettled(t *testing.T, g *gateway, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var started, ended uint64
	for {
		started = 0
		for name, v := range g.envoy.stats() {
			// http.<hcm prefix>.ext_proc.<filter prefix>streams_started,
			// whatever prefixes the filters get.
			if strings.HasPrefix(name, "http.") && strings.Contains(name, ".ext_proc.") && strings.HasSuffix(name, "streams_started") {
				started += v
			}
		}
		ended = uint64(metricSum(t, g.admin(), "modelsplit_observe_streams_total", map[string]string{"client": "envoy"}) +
			metricSum(t, g.admin(), "modelsplit_extproc_streams_total", map[string]string{"client": "envoy"}))
		if started > 0 && started == ended {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ext_proc streams not settled after %v: Envoy started %d, modelsplit ended %d", timeout, started, ended)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// envoyHistogramCount is the sample count of a cluster histogram (e.g.
// upstream_rq_time) from Envoy's Prometheus endpoint. Envoy merges
// histograms on its stats flush (every 5 s), so callers poll.
func envoyHistogramCount(e *envoyProc, metric, cluster string) (uint64, bool) {
	code, body := httpGet(e.adminURL("/stats/prometheus?usedonly"))
	if code != http.StatusOK {
		return 0, false
	}
	prefix := fmt.Sprintf("envoy_cluster_%s_count{envoy_cluster_name=%q}", metric, cluster)
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			v, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// waitEnvoyLatencySamples waits until Envoy's upstream_rq_time histogram
// for cluster holds want samples (it lags by up to one stats flush).
func waitEnvoyLatencySamples(t *testing.T, e *envoyProc, cluster string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var got uint64
	for time.Now().Before(deadline) {
		if got, _ = envoyHistogramCount(e, "upstream_rq_time", cluster); got == want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("Envoy cluster %s: upstream_rq_time has %d samples, modelsplit observed %d latencies", cluster, got, want)
}

// statusTally counts what one backend answered, per class.
type statusTally struct {
	mu sync.Mutex
	by map[string]uint64
}

func (s *statusTally) add(class string) {
	s.mu.Lock()
	if s.by == nil {
		s.by = map[string]uint64{}
	}
	s.by[class]++
	s.mu.Unlock()
}

func (s *statusTally) counts() variantCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := variantCounts{class: map[string]uint64{}}
	for k, v := range s.by {
		c.class[k] = v
		c.requests += v
	}
	c.latency = c.requests
	return c
}

// httpStatusFor is the answer the HTTP backends give to request i: a
// fixed mix of 200, 404 and 503.
func httpStatusFor(i int) int {
	switch {
	case i%5 == 0:
		return http.StatusNotFound
	case i%7 == 0:
		return http.StatusServiceUnavailable
	default:
		return http.StatusOK
	}
}

func httpClass(code int) string { return strconv.Itoa(code/100) + "xx" }

// grpcStatusBackend is a gRPC backend whose answer the call asks for in
// its x-want metadata:
//
//	ok             unary OK (the default)
//	only:<code>    unary error before any header: a trailers-only answer
//	headers:<code> unary error after the response headers went out: the
//	               status travels in trailers
//	stream:<code>  server stream: one message, then the status in trailers
//	               (<code> 0: a stream that ends OK)
type grpcStatusBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name  string
	addr  string
	tally statusTally
	codes map[codes.Code]uint64
	mu    sync.Mutex
}

func startGRPCStatusBackend(t *testing.T, name string) *grpcStatusBackend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &grpcStatusBackend{name: name, addr: lis.Addr().String(), codes: map[codes.Code]uint64{}}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, b)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return b
}

// grpcClassOf is the README's mapping of gRPC codes onto status classes.
func grpcClassOf(c codes.Code) string {
	switch c {
	case codes.OK:
		return "2xx"
	case codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.ResourceExhausted, codes.FailedPrecondition, codes.OutOfRange, codes.Unauthenticated:
		return "4xx"
	default:
		return "5xx"
	}
}

func (b *grpcStatusBackend) answered(c codes.Code) {
	b.tally.add(grpcClassOf(c))
	b.mu.Lock()
	b.codes[c]++
	b.mu.Unlock()
}

func want(ctx context.Context) (kind string, code codes.Code) {
	md, _ := metadata.FromIncomingContext(ctx)
	w := "ok"
	if v := md.Get("x-want"); len(v) > 0 {
		w = v[0]
	}
	kind, n, _ := strings.Cut(w, ":")
	c, _ := strconv.Atoi(n)
	return kind, codes.Code(c)
}

func (b *grpcStatusBackend) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	kind, code := want(ctx)
	switch kind {
	case "only":
		b.answered(code)
		return nil, status.Error(code, "trailers-only "+code.String())
	case "headers":
		if err := grpc.SendHeader(ctx, metadata.Pairs("x-backend", b.name)); err != nil {
			return nil, err
		}
		b.answered(code)
		return nil, status.Error(code, "after headers "+code.String())
	}
	b.answered(codes.OK)
	return &testgrpc.SimpleResponse{Hostname: b.name}, nil
}

func (b *grpcStatusBackend) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	_, code := want(s.Context())
	if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(b.name)}}); err != nil {
		return err
	}
	b.answered(code)
	if code == codes.OK {
		return nil
	}
	return status.Error(code, "after a message "+code.String())
}

// grpcErrors are the error codes each erroring phase cycles through:
// two caller mistakes (4xx), two server troubles (5xx).
var grpcErrors = []codes.Code{codes.NotFound, codes.InvalidArgument, codes.Unavailable, codes.Internal}

// grpcPhase is one shape of gRPC answer: kind is the backend's x-want
// kind; errors says whether the calls fail (cycling through grpcErrors).
type grpcPhase struct {
	name   string
	kind   string
	errors bool
}

var grpcPhases = []grpcPhase{
	{"unary OK (status in trailers after the message)", "ok", false},
	{"stream OK (status in trailers after a message)", "stream", false},
	{"trailers-only errors (status in the response headers)", "only", true},
	{"unary errors after the response headers (status in trailers)", "headers", true},
	{"stream errors after a message (status in trailers)", "stream", true},
}

// callGRPC makes one call of the phase through Envoy and returns the code
// the client saw and the one the backend was asked for.
func callGRPC(ctx context.Context, c testgrpc.TestServiceClient, p grpcPhase, i int, user string) (got, want codes.Code) {
	if p.errors {
		want = grpcErrors[i%len(grpcErrors)]
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "x-user-id", user, "x-want", fmt.Sprintf("%s:%d", p.kind, want))
	if p.kind != "stream" {
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return status.Code(err), want
	}
	s, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		return status.Code(err), want
	}
	for {
		if _, err := s.Recv(); err == io.EOF {
			return codes.OK, want
		} else if err != nil {
			return status.Code(err), want
		}
	}
}

// TestEnvoyTelemetryEqualsEnvoyCounts: per variant, what modelsplit's
// observe filter exports (requests, 2xx/3xx/4xx/5xx, latency samples)
// equals what Envoy counted for that variant's cluster, for an HTTP
// endpoint whose backends answer a mix of 200/404/503 and for a gRPC
// endpoint whose backends answer OK, errors in trailers (after the
// headers, after a streamed message) and trailers-only errors. The gRPC
// shapes go one phase at a time, compared after each, so a failure names
// the shape that broke.
//
// The comparison. HTTP: the router's cluster.<endpoint>/<variant>
// upstream_rq_total and upstream_rq_2xx/3xx/4xx/5xx. gRPC: the router
// counts HTTP statuses, and every gRPC answer is HTTP 200 whatever its
// grpc-status, so upstream_rq_2xx is every call there (checked); the
// classes are compared with Envoy's per-cluster gRPC status counters
// (cluster.<endpoint>/<variant>.grpc.<code>, from the grpc_stats filter
// modelsplit puts on the gateway when an endpoint speaks gRPC), mapped
// onto classes as the README maps codes; requests with upstream_rq_total
// (and grpc.total). Latency: one sample per request, as many as Envoy's
// upstream_rq_time histogram holds. The backends' own tally of what they
// answered is a third witness.
func TestEnvoyTelemetryEqualsEnvoyCounts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	httpVariants := []string{"a", "b", "c"}
	httpTallies := map[string]*statusTally{}
	var addrs []any
	for _, v := range httpVariants {
		be := startHTTPBackend(t, v)
		tally := &statusTally{}
		httpTallies[v] = tally
		be.setHandler(func(w http.ResponseWriter, r *http.Request) {
			code := http.StatusOK
			if s := r.Header.Get("x-want-status"); s != "" {
				code, _ = strconv.Atoi(s)
			}
			tally.add(httpClass(code))
			w.Header().Set("content-type", "text/plain")
			w.WriteHeader(code)
			_, _ = fmt.Fprintf(w, "%s %d", v, code)
		})
		addrs = append(addrs, be.addr)
	}
	ga, gb := startGRPCStatusBackend(t, "a"), startGRPCStatusBackend(t, "b")
	addrs = append(addrs, ga.addr, gb.addr)
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 40, backends: [%q]}
      - {name: b, weight: 30, backends: [%q]}
      - {name: c, weight: 30, backends: [%q]}
  - name: echo
    protocol: grpc
    match: {path_prefix: /grpc.testing.TestService/}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 50, backends: [%q]}
      - {name: b, weight: 50, backends: [%q]}
`, addrs...), "", "/model/predict", "x-user-id", "probe")

	// compare checks every variant of both endpoints (counts so far).
	compare := func(phase string, final bool) {
		t.Helper()
		waitObserveSettled(t, g, 20*time.Second)
		stats := g.envoy.stats()
		check := func(endpoint, variant string, backend variantCounts, grpcStatus bool) {
			t.Helper()
			cluster := "cluster." + endpoint + "/" + variant + "."
			envoy := variantCounts{requests: stats[cluster+"upstream_rq_total"], class: map[string]uint64{}}
			if grpcStatus {
				for name, v := range stats {
					rest, ok := strings.CutPrefix(name, cluster+"grpc.")
					if !ok {
						continue
					}
					if n, err := strconv.Atoi(rest); err == nil {
						envoy.class[grpcClassOf(codes.Code(n))] += v
					}
				}
				if total := stats[cluster+"grpc.total"]; total != envoy.requests {
					t.Errorf("%s: %s/%s: Envoy grpc.total %d != upstream_rq_total %d", phase, endpoint, variant, total, envoy.requests)
				}
				if ok := stats[cluster+"upstream_rq_2xx"]; ok != envoy.requests {
					t.Errorf("%s: %s/%s: Envoy upstream_rq_2xx %d != upstream_rq_total %d (every gRPC answer is HTTP 200)", phase, endpoint, variant, ok, envoy.requests)
				}
			} else {
				for _, class := range classes {
					envoy.class[class] = stats[cluster+"upstream_rq_"+class]
				}
			}
			envoy.latency = envoy.requests
			ms := modelsplitCounts(t, g.admin(), endpoint, variant)
			if ms.String() != envoy.String() {
				t.Errorf("%s: %s/%s: modelsplit %v\n                   != envoy %v", phase, endpoint, variant, ms, envoy)
			}
			if backend.String() != envoy.String() {
				t.Errorf("%s: %s/%s: the backend answered %v\n                   but envoy counted %v", phase, endpoint, variant, backend, envoy)
			}
			if !final {
				return
			}
			t.Logf("%s/%s: envoy, modelsplit and backend all %v", endpoint, variant, ms)
			if envoy.requests == 0 {
				t.Errorf("%s/%s: no traffic reached this variant; the comparison proves nothing", endpoint, variant)
			}
			waitEnvoyLatencySamples(t, g.envoy, endpoint+"/"+variant, ms.latency)
		}
		for _, v := range httpVariants {
			check("model", v, httpTallies[v].counts(), false)
		}
		for _, be := range []*grpcStatusBackend{ga, gb} {
			check("echo", be.name, be.tally.counts(), true)
		}
		if t.Failed() {
			t.FailNow()
		}
	}

	// HTTP, sequential (the machine is shared): each request's status is
	// fixed by its index, its variant by its user's hash.
	for i := 0; i < 420; i++ {
		code := httpStatusFor(i)
		r, err := g.client.get("/model/predict", "x-user-id", fmt.Sprintf("user-%d", i%70), "x-want-status", strconv.Itoa(code))
		if err != nil {
			t.Fatal(err)
		}
		if r.status != code {
			t.Fatalf("HTTP request %d: status %d, want %d (body %q)", i, r.status, code, r.body)
		}
	}
	compare("HTTP 200/404/503", false)

	// gRPC through Envoy's gateway port, over h2c.
	cc, err := grpc.NewClient(fmt.Sprintf("passthrough:///127.0.0.1:%d", g.port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	gc := testgrpc.NewTestServiceClient(cc)
	for _, p := range grpcPhases {
		for i := 0; i < 60; i++ {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			got, want := callGRPC(cctx, gc, p, i, fmt.Sprintf("user-%d", i%40))
			ccancel()
			if got != want {
				t.Fatalf("%s: call %d: the client saw %v, want %v", p.name, i, got, want)
			}
		}
		compare(p.name, false)
	}
	compare("all", true)
	for _, be := range []*grpcStatusBackend{ga, gb} {
		be.mu.Lock()
		var byCode []string
		for c, n := range be.codes {
			byCode = append(byCode, fmt.Sprintf("%v=%d", c, n))
		}
		be.mu.Unlock()
		sort.Strings(byCode)
		t.Logf("echo/%s answered %s", be.name, strings.Join(byCode, " "))
	}
	g.envoy.assertNoRejections()
}
