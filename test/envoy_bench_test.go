package test

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

// BenchmarkEnvoyDecide measures what modelsplit's decision adds to a
// request through a real Envoy: one Envoy, programmed by `modelsplit
// serve`, with two endpoints over the same two backends and the same
// 50/50 weighted clusters, which differ only in the decide filter:
//
//   - envoy:        /alone, decide: false — the decide filter is disabled
//     on its routes, so Envoy routes by weight alone (hashed on x-user-id);
//   - envoy+decide: /decide — one header-only ext_proc round trip to
//     modelsplit per request, then the variant route it picked.
//
// Both have observe: false (no second ext_proc filter). An open-loop
// generator sends GETs at a fixed rate over keep-alive HTTP/1.1
// connections (one pool per arm), cycling through BENCH_USERS users whose
// assignments are warm. Runs alternate envoy, envoy+decide, envoy, ... for
// BENCH_PAIRS pairs of BENCH_DURATION each at every rate in BENCH_RATES,
// and the summary is the median of the pairwise differences.
//
// Latency is measured from each request's scheduled send time, so a late
// generator or a queue in front of Envoy counts (no coordinated omission);
// every sample is kept and percentiles are exact. "lag" is how late the
// generator itself started requests. A run is marked saturated when it
// sent at less than 95% of the scheduled rate, or when its lag exceeds the
// service time it measures (request start to answer) at p50 or at p99.
// Pairs with a saturated run, a failed request, or a decide fallback (the
// decision timed out and Envoy failed open, so it was not measured) are
// left out of the medians, and the summary says how many.
//
// Run it with `make bench-envoy` (-benchtime 1x: one measurement per rate).
func BenchmarkEnvoyDecide(b *testing.B) {
	s := benchSettingsFromEnv(b)
	g := startDecideBench(b)
	out := os.Stdout
	fmt.Fprintf(out, "\nEnvoy alone vs Envoy + modelsplit decide filter: %d pair(s) × %v per rate, %v warm-up per arm, %d users, GOMAXPROCS %d, Envoy --concurrency 1\n",
		s.pairs, s.duration, s.warmup, s.users, runtime.GOMAXPROCS(0))
	fmt.Fprintln(out, "latency from the scheduled send time; lag = generator's own delay; saturated = achieved < 95% of the rate or lag > service time (p50 or p99);")
	fmt.Fprintln(out, "CPU µs/req = the process's CPU time (all threads, /proc schedstat) during the run / requests sent")
	for _, rate := range s.rates {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			for b.Loop() {
				sum := g.measure(b, out, rate, s)
				if sum.valid == 0 {
					continue
				}
				b.ReportMetric(sum.alone50, "alone-p50-µs")
				b.ReportMetric(sum.alone99, "alone-p99-µs")
				b.ReportMetric(sum.decide50, "decide-p50-µs")
				b.ReportMetric(sum.decide99, "decide-p99-µs")
				b.ReportMetric(sum.d50, "Δp50-µs")
				b.ReportMetric(sum.d99, "Δp99-µs")
			}
		})
	}
}

// pacer ticks at a fixed interval (pacer_linux_test.go, pacer_other_test.go).
type pacer interface {
	// Start: slot i (from 0) is due at Start + (i+1)*interval.
	Start() time.Time
	// Wait blocks until at least one more slot is due and returns how
	// many came due since the last call (more when the caller fell behind).
	Wait() (int, error)
	Close() error
}

// benchSettings come from the environment (the Makefile passes them on).
type benchSettings struct {
	rates    []int
	pairs    int
	duration time.Duration
	warmup   time.Duration
	users    int
}

func benchSettingsFromEnv(b *testing.B) benchSettings {
	s := benchSettings{rates: []int{1000, 3000}, pairs: 5, duration: 10 * time.Second, warmup: 2 * time.Second, users: 1000}
	if v := os.Getenv("BENCH_RATES"); v != "" {
		s.rates = nil
		for _, f := range strings.Split(v, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r <= 0 {
				b.Fatalf("BENCH_RATES=%q: want positive integers separated by commas", v)
			}
			s.rates = append(s.rates, r)
		}
	}
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{{"BENCH_DURATION", &s.duration}, {"BENCH_WARMUP", &s.warmup}} {
		if v := os.Getenv(d.env); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x < 0 {
				b.Fatalf("%s=%q: want a duration such as 10s", d.env, v)
			}
			*d.dst = x
		}
	}
	for _, n := range []struct {
		env string
		dst *int
	}{{"BENCH_PAIRS", &s.pairs}, {"BENCH_USERS", &s.users}} {
		if v := os.Getenv(n.env); v != "" {
			x, err := strconv.Atoi(v)
			if err != nil || x <= 0 {
				b.Fatalf("%s=%q: want a positive integer", n.env, v)
			}
			*n.dst = x
		}
	}
	if s.duration <= 0 {
		b.Fatal("BENCH_DURATION must be positive")
	}
	return s
}

// Envoy's counters for the decide filter (HCM stat prefix "modelsplit",
// filter stat prefix "decide").
const (
	statExtProcStreams   = "http.modelsplit.ext_proc.decide.streams_started"
	statExtProcFallbacks = "http.modelsplit.ext_proc.decide.failure_mode_allowed"
)

// decideBench is the running setup: modelsplit serve, one Envoy, two
// backends, and one keep-alive client pool per arm.
type decideBench struct {
	envoy   *envoyProc
	serve   *serveProc
	base    string
	users   []string
	clients map[string]*http.Client
}

// The two arms: name in the table → path prefix (= endpoint name).
var benchArms = []struct{ name, endpoint string }{{"envoy", "alone"}, {"envoy+decide", "decide"}}

func startDecideBench(b *testing.B) *decideBench {
	b.Helper()
	envoyBinary(b) // skip (or fail in CI) before starting anything
	a, bk := startHTTPBackend(b, "a"), startHTTPBackend(b, "b")
	p := newPorts(b)
	port, err := freePort()
	if err != nil {
		b.Fatal(err)
	}
	cfg := p.listenYAML() + fmt.Sprintf("gateway: {port: %d, address: 127.0.0.1}\nendpoints:\n", port)
	for _, arm := range benchArms {
		decide := ""
		if arm.endpoint == "alone" {
			decide = "    decide: false\n"
		}
		cfg += fmt.Sprintf(`  - name: %[1]s
    match: {path_prefix: /%[1]s}
    sticky: {header: x-user-id}
    observe: false
%[2]s    variants:
      - {name: a, weight: 50, backends: [%[3]q]}
      - {name: b, weight: 50, backends: [%[4]q]}
`, arm.endpoint, decide, a.addr, bk.addr)
	}
	// -log-level info, as in production (the harness default is debug).
	g := &decideBench{
		serve:   startServe(b, tempConfig(b, cfg), p, "-log-level", "info"),
		envoy:   startEnvoy(b, envoyOptions{XDS: fmt.Sprintf("127.0.0.1:%d", p.xds)}),
		base:    fmt.Sprintf("http://127.0.0.1:%d", port),
		clients: map[string]*http.Client{},
	}
	probe := newGatewayClient(port)
	for _, arm := range benchArms {
		probe.waitRouted(b, "/"+arm.endpoint+"/predict", 30*time.Second, "x-user-id", "probe")
		g.clients[arm.name] = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Hour, DisableCompression: true,
		}}
		b.Cleanup(g.clients[arm.name].CloseIdleConnections)
	}
	g.envoy.assertNoRejections()
	return g
}

// errWrongVariant is an answer that names another variant than the one
// that answered: a bug, not overload, so the benchmark fails on it.
var errWrongVariant = errors.New("wrong variant header")

// get sends one request of arm for user and checks the answer came from a
// variant and says which.
func (g *decideBench) get(arm, endpoint, user string) error {
	req, err := http.NewRequest(http.MethodGet, g.base+"/"+endpoint+"/predict", nil)
	if err != nil {
		return err
	}
	req.Header.Set("x-user-id", user)
	resp, err := g.clients[arm].Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d: %.100q", resp.StatusCode, body)
	case resp.Header.Get("x-modelsplit-variant") != string(body):
		return fmt.Errorf("%w: answered by %q, x-modelsplit-variant %q", errWrongVariant, body, resp.Header.Get("x-modelsplit-variant"))
	}
	return nil
}

// run is one arm's open-loop run at one rate.
type run struct {
	arm, endpoint string
	rate          int
	sent, errs    int
	firstErr      error
	lat, svc, lag []time.Duration // sorted; successful requests only
	achieved      float64         // requests started per second
	streams       uint64          // ext_proc streams Envoy opened during the run
	envoyCPU      time.Duration   // CPU time Envoy used during the run (-1: unknown)
	serveCPU      time.Duration   // CPU time modelsplit serve used during the run
	fallbacks     uint64          // requests the decision failed open on
}

// pct is the nearest-rank percentile of sorted samples.
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

func (r *run) saturated() string {
	var why []string
	if r.achieved < 0.95*float64(r.rate) {
		why = append(why, fmt.Sprintf("achieved %.0f/s", r.achieved))
	}
	for _, p := range []float64{0.50, 0.99} {
		if l, s := pct(r.lag, p), pct(r.svc, p); l > s {
			why = append(why, fmt.Sprintf("p%.0f lag %dµs > service %dµs", p*100, l.Microseconds(), s.Microseconds()))
		}
	}
	return strings.Join(why, ", ")
}

// openLoop starts requests on a fixed schedule, each in its own goroutine,
// whether or not earlier ones have been answered.
func (g *decideBench) openLoop(b *testing.B, arm, endpoint string, rate int, dur time.Duration) *run {
	n := int(float64(rate) * dur.Seconds())
	interval := time.Second / time.Duration(rate)
	lat, svc, lag := make([]time.Duration, n), make([]time.Duration, n), make([]time.Duration, n)
	sentAt := make([]time.Time, n)
	errs := make([]error, n)
	before := g.envoy.stats()
	envoyPID, servePID := g.envoy.pid(), g.serve.cmd.Process.Pid
	envoyCPU, serveCPU := procCPU(envoyPID), procCPU(servePID)
	runtime.GC() // start each run from a clean heap
	pacer, err := newPacer(interval)
	if err != nil {
		b.Fatal(err)
	}
	defer pacer.Close()
	start := pacer.Start()
	var wg sync.WaitGroup
	for i := 0; i < n; {
		k, err := pacer.Wait()
		if err != nil {
			b.Fatalf("pacer: %v", err)
		}
		for ; k > 0 && i < n; k-- {
			due := start.Add(time.Duration(i+1) * interval)
			wg.Add(1)
			go func(i int, due time.Time) {
				defer wg.Done()
				sent := time.Now()
				errs[i] = g.get(arm, endpoint, g.users[i%len(g.users)])
				done := time.Now()
				sentAt[i], lat[i], svc[i], lag[i] = sent, done.Sub(due), done.Sub(sent), sent.Sub(due)
			}(i, due)
			i++
		}
	}
	wg.Wait()
	envoyCPU, serveCPU = cpuDelta(envoyCPU, procCPU(envoyPID)), cpuDelta(serveCPU, procCPU(servePID))
	after := g.envoy.stats()
	r := &run{arm: arm, endpoint: endpoint, rate: rate, sent: n,
		envoyCPU: envoyCPU, serveCPU: serveCPU,
		streams: after[statExtProcStreams] - before[statExtProcStreams], fallbacks: after[statExtProcFallbacks] - before[statExtProcFallbacks]}
	last, wrong := start, false
	for i := range n {
		if sentAt[i].After(last) {
			last = sentAt[i]
		}
		if errs[i] != nil {
			r.errs++
			if r.firstErr == nil {
				r.firstErr = errs[i]
			}
			if errors.Is(errs[i], errWrongVariant) && !wrong {
				wrong = true
				b.Errorf("arm %s: %v", arm, errs[i])
			}
			continue
		}
		r.lat, r.svc, r.lag = append(r.lat, lat[i]), append(r.svc, svc[i]), append(r.lag, lag[i])
	}
	// n slots end at start + n*interval on schedule.
	r.achieved = float64(n) / last.Sub(start).Seconds()
	for _, s := range [][]time.Duration{r.lat, r.svc, r.lag} {
		slices.Sort(s)
	}
	// The arms must differ exactly by the decision.
	if endpoint == "alone" && r.streams != 0 {
		b.Fatalf("arm %s opened %d ext_proc streams: the decide filter is not off", arm, r.streams)
	}
	if endpoint == "decide" && r.streams < uint64(n-r.errs) {
		b.Fatalf("arm %s: %d requests answered but Envoy opened only %d ext_proc streams", arm, n-r.errs, r.streams)
	}
	return r
}

// procCPU is the CPU time all of pid's threads have used so far (the sum
// of /proc/<pid>/task/*/schedstat, in ns), or -1 where there is no /proc.
// Unlike latency, CPU per request barely moves on a busy machine.
func procCPU(pid int) time.Duration {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return -1
	}
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return -1
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return -1
		}
		total += time.Duration(ns)
	}
	return total
}

func cpuDelta(before, after time.Duration) time.Duration {
	if before < 0 || after < 0 {
		return -1
	}
	return after - before
}

// perRequest formats a run's CPU time per request in µs ("-" if unknown).
func perRequest(cpu time.Duration, n int) string {
	if cpu < 0 || n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", us(cpu)/float64(n))
}

// summary is one rate's medians over the unsaturated pairs (µs).
type summary struct {
	valid                                int
	alone50, alone99, decide50, decide99 float64
	d50, d99, ratio50, ratio99           float64
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// measure warms up both arms at rate, runs the pairs, prints the table
// and the medians, and returns them.
func (g *decideBench) measure(b *testing.B, out io.Writer, rate int, s benchSettings) summary {
	if len(g.users) != s.users {
		g.users = make([]string, s.users)
		for i := range g.users {
			g.users[i] = fmt.Sprintf("user-%d", i)
		}
	}
	old := debug.SetGCPercent(400) // fewer GC cycles in the generator
	defer debug.SetGCPercent(old)
	// Warm-up: every user through both arms (assignments stored and
	// cached), then each arm open-loop at the rate; all discarded.
	for _, arm := range benchArms {
		for _, u := range g.users {
			if err := g.get(arm.name, arm.endpoint, u); err != nil {
				b.Fatalf("warm-up %s: %v", arm.name, err)
			}
		}
		if s.warmup > 0 {
			g.openLoop(b, arm.name, arm.endpoint, rate, s.warmup)
		}
	}

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rate\tpair\tarm\tp50 µs\tp99 µs\tachieved/s\tlag p50 µs\tlag p99 µs\tlag max µs\terrors\tdecide fallbacks\tEnvoy CPU µs/req\tmodelsplit CPU µs/req\t  saturated")
	var sum summary
	var left struct{ saturated, errors, fallbacks int }
	var notes []string
	var a50, a99, d50, d99, diff50, diff99, r50, r99, envoyCPU, serveCPU []float64
	for pair := 1; pair <= s.pairs; pair++ {
		runs := make([]*run, len(benchArms))
		for i, arm := range benchArms { // A B, A B, ...
			runs[i] = g.openLoop(b, arm.name, arm.endpoint, rate, s.duration)
			r := runs[i]
			sat := r.saturated()
			fb := "-"
			if r.endpoint == "decide" {
				fb = strconv.FormatUint(r.fallbacks, 10)
			}
			satCol := "no"
			if sat != "" {
				satCol = "SATURATED (" + sat + ")"
			}
			fmt.Fprintf(tw, "%d/s\t%d\t%s\t%d\t%d\t%.0f\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t  %s\n", rate, pair, r.arm,
				pct(r.lat, .5).Microseconds(), pct(r.lat, .99).Microseconds(), r.achieved,
				pct(r.lag, .5).Microseconds(), pct(r.lag, .99).Microseconds(), pct(r.lag, 1).Microseconds(),
				r.errs, fb, perRequest(r.envoyCPU, r.sent), perRequest(r.serveCPU, r.sent), satCol)
			if r.errs > 0 {
				notes = append(notes, fmt.Sprintf("%d req/s pair %d %s: %d of %d requests failed, first: %v", rate, pair, r.arm, r.errs, r.sent, r.firstErr))
			}
		}
		alone, decide := runs[0], runs[1]
		switch {
		case alone.saturated() != "" || decide.saturated() != "":
			left.saturated++
			continue
		case alone.errs > 0 || decide.errs > 0:
			left.errors++
			continue
		case decide.fallbacks > 0: // the decision timed out: not measured
			left.fallbacks++
			continue
		}
		sum.valid++
		a50, a99 = append(a50, us(pct(alone.lat, .5))), append(a99, us(pct(alone.lat, .99)))
		d50, d99 = append(d50, us(pct(decide.lat, .5))), append(d99, us(pct(decide.lat, .99)))
		diff50 = append(diff50, d50[len(d50)-1]-a50[len(a50)-1])
		diff99 = append(diff99, d99[len(d99)-1]-a99[len(a99)-1])
		r50 = append(r50, d50[len(d50)-1]/a50[len(a50)-1])
		r99 = append(r99, d99[len(d99)-1]/a99[len(a99)-1])
		if alone.envoyCPU >= 0 && decide.envoyCPU >= 0 && decide.serveCPU >= 0 {
			envoyCPU = append(envoyCPU, (us(decide.envoyCPU)/float64(decide.sent))-(us(alone.envoyCPU)/float64(alone.sent)))
			serveCPU = append(serveCPU, us(decide.serveCPU)/float64(decide.sent)-us(alone.serveCPU)/float64(alone.sent))
		}
	}
	tw.Flush()
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	sum.alone50, sum.alone99, sum.decide50, sum.decide99 = median(a50), median(a99), median(d50), median(d99)
	sum.d50, sum.d99, sum.ratio50, sum.ratio99 = median(diff50), median(diff99), median(r50), median(r99)
	if sum.valid < s.pairs {
		fmt.Fprintf(out, "%d req/s: %d of %d pairs left out: %d with a saturated run, %d with errors, %d with decide fallbacks (ext_proc timed out, Envoy failed open)\n",
			rate, s.pairs-sum.valid, s.pairs, left.saturated, left.errors, left.fallbacks)
	}
	if sum.valid == 0 {
		fmt.Fprintf(out, "%d req/s: no valid pair — no figures (the generator or the machine could not keep the rate)\n\n", rate)
		return sum
	}
	fmt.Fprintf(out, "%d req/s, median over %d of %d pairs: envoy p50 %.0f µs p99 %.0f µs; envoy+decide p50 %.0f µs p99 %.0f µs\n",
		rate, sum.valid, s.pairs, sum.alone50, sum.alone99, sum.decide50, sum.decide99)
	fmt.Fprintf(out, "%d req/s, median of pairwise differences (envoy+decide − envoy): p50 %+.0f µs, p99 %+.0f µs (ratios: p50 ×%.2f, p99 ×%.2f)\n",
		rate, sum.d50, sum.d99, sum.ratio50, sum.ratio99)
	if len(envoyCPU) > 0 {
		fmt.Fprintf(out, "%d req/s, CPU per request the decision adds (median of pairwise differences): Envoy %+.0f µs, modelsplit %+.0f µs\n",
			rate, median(envoyCPU), median(serveCPU))
	}
	if rate == 1000 {
		verdict := "met"
		if sum.d50 > 150 || sum.d99 > 500 {
			verdict = "NOT met"
		}
		if sum.valid < 5 {
			verdict += fmt.Sprintf(" (only %d valid pair(s); the method asks for >= 5)", sum.valid)
		}
		fmt.Fprintf(out, "target at 1,000 req/s (decision adds <= 150 µs to p50, <= 500 µs to p99): %s\n", verdict)
	}
	fmt.Fprintln(out)
	return sum
}
