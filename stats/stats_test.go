package stats_test

import (
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/stats"
)

// clock is a settable clock, safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.ns.Store(t.UnixNano()); return c }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

var t0 = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func newRecorder(c *clock, o stats.Options) *stats.Recorder {
	o.Now = c.Now
	return stats.New(o)
}

func TestWindowsRotateAtAlignedBoundaries(t *testing.T) {
	c := newClock(at(3))
	r := newRecorder(c, stats.Options{})
	r.SetWeights("ep", map[string]int{"a": 90, "b": 10})
	a, b := r.Variant("ep", "a"), r.Variant("ep", "b")
	if ws := r.Windows("ep", time.Time{}); len(ws) != 0 {
		t.Fatalf("windows before any traffic: %+v", ws)
	}
	a.Request(stats.Class2xx, 3*time.Millisecond)
	a.Request(stats.Class5xx, 20*time.Millisecond)
	b.Request(stats.ClassNone, 0)
	a.Assigned()
	b.Decided()
	c.Set(at(9.999))
	r.Rotate()
	if ws := r.Windows("ep", time.Time{}); len(ws) != 0 {
		t.Fatalf("a window closed before its boundary: %+v", ws)
	}
	cur, ok := r.Current("ep")
	if !ok || !cur.Partial || !cur.Start.Equal(at(0)) || !cur.End.Equal(at(10)) {
		t.Fatalf("current = %+v, %v; want partial [0s, 10s)", cur, ok)
	}
	c.Set(at(10))
	r.Rotate()
	ws := r.Windows("ep", time.Time{})
	if len(ws) != 1 {
		t.Fatalf("%d windows, want 1", len(ws))
	}
	w := ws[0]
	if !w.Start.Equal(at(0)) || !w.End.Equal(at(10)) || w.Partial {
		t.Errorf("window [%v, %v) partial %v; want [0s, 10s) closed", w.Start, w.End, w.Partial)
	}
	if w.Weights["a"] != 90 || w.Weights["b"] != 10 {
		t.Errorf("weights %v", w.Weights)
	}
	va, vb := w.Variants["a"], w.Variants["b"]
	if va.Requests != 2 || va.Responses[stats.Class2xx] != 1 || va.Responses[stats.Class5xx] != 1 || va.Assigned != 1 || va.Latency.Count() != 2 {
		t.Errorf("a = %+v", va)
	}
	// 3 ms is in the 5 ms bucket (index 2), 20 ms in the 25 ms one (4).
	if va.Latency.Counts[2] != 1 || va.Latency.Counts[4] != 1 || va.Latency.Sum < 0.0229 || va.Latency.Sum > 0.0231 {
		t.Errorf("a latency = %+v", va.Latency)
	}
	if vb.Requests != 1 || vb.Responses[stats.ClassNone] != 1 || vb.Latency.Count() != 0 || vb.Decisions != 1 || vb.Answered() != 0 {
		t.Errorf("b = %+v", vb)
	}
	if _, ok := r.Current("ep"); ok {
		t.Error("a current window without traffic since the boundary")
	}
	// The next record opens the next aligned window, even much later.
	c.Set(at(47))
	a.Request(stats.Class2xx, time.Millisecond)
	c.Set(at(50))
	ws = r.Windows("ep", at(10))
	if len(ws) != 1 || !ws[0].Start.Equal(at(40)) || !ws[0].End.Equal(at(50)) || ws[0].Variants["a"].Requests != 1 {
		t.Fatalf("windows since 10s = %+v; want one, [40s, 50s)", ws)
	}
}

func TestSetWeightsClosesTheWindow(t *testing.T) {
	c := newClock(at(1))
	r := newRecorder(c, stats.Options{})
	r.SetWeights("ep", map[string]int{"a": 90, "b": 10})
	a := r.Variant("ep", "a")
	a.Assigned()
	c.Set(at(4))
	r.SetWeights("ep", map[string]int{"a": 90, "b": 10}) // unchanged: no split
	a.Assigned()
	c.Set(at(5))
	w := map[string]int{"a": 50, "b": 50}
	r.SetWeights("ep", w)
	w["a"] = 1 // the recorder keeps its own copy
	a.Assigned()
	c.Set(at(7))
	r.SetWeights("ep", map[string]int{"a": 0, "b": 100}) // no traffic since: nothing to close
	c.Set(at(8))
	a.Assigned()
	c.Set(at(12))
	ws := r.Windows("ep", time.Time{})
	type want struct {
		start, end float64
		a          int
		assigned   uint64
	}
	wants := []want{{0, 5, 90, 2}, {5, 7, 50, 1}, {7, 10, 0, 1}}
	if len(ws) != len(wants) {
		t.Fatalf("%d windows, want %d: %+v", len(ws), len(wants), ws)
	}
	for i, x := range wants {
		g := ws[i]
		if !g.Start.Equal(at(x.start)) || !g.End.Equal(at(x.end)) || g.Weights["a"] != x.a || g.Variants["a"].Assigned != x.assigned {
			t.Errorf("window %d: [%v, %v) weights %v assigned %d; want [%vs, %vs) a=%d assigned %d",
				i, g.Start.Sub(t0), g.End.Sub(t0), g.Weights, g.Variants["a"].Assigned, x.start, x.end, x.a, x.assigned)
		}
	}
}

func TestRetentionIsBounded(t *testing.T) {
	c := newClock(at(0))
	r := newRecorder(c, stats.Options{Window: time.Second, Retention: 30 * time.Second})
	a := r.Variant("ep", "a")
	var ms runtime.MemStats
	heap := func() uint64 { runtime.GC(); runtime.ReadMemStats(&ms); return ms.HeapAlloc }
	n := 0
	var before uint64
	for i := range 5000 {
		if i == 1000 {
			before = heap()
		}
		a.Request(stats.Class2xx, time.Millisecond)
		n++
		if i%7 == 0 { // weight changes split windows: still at most MaxWindows
			r.SetWeights("ep", map[string]int{"a": i})
		}
		c.Advance(time.Second)
		r.Rotate()
	}
	ws := r.Windows("ep", time.Time{})
	if len(ws) > 30 {
		t.Fatalf("%d windows kept, want at most 30", len(ws))
	}
	if got := r.Totals("ep").Variants["a"].Requests; got != uint64(n) {
		t.Fatalf("totals %d, want %d: windows dropped by retention must stay in the totals", got, n)
	}
	if after := heap(); after > before+256<<10 {
		t.Errorf("heap grew from %d to %d bytes over 4,000 more windows", before, after)
	}
	// Without traffic, retention empties the endpoint.
	c.Advance(31 * time.Second)
	if ws := r.Windows("ep", time.Time{}); len(ws) != 0 {
		t.Errorf("%d windows older than the retention kept", len(ws))
	}
}

func TestConcurrentRecordersWhileWindowsRotate(t *testing.T) {
	c := newClock(at(0))
	r := newRecorder(c, stats.Options{Window: time.Second, Retention: time.Hour, MaxWindows: 1 << 20})
	const workers, rotations = 4, 100
	var (
		wg, started sync.WaitGroup
		done        atomic.Bool
		progress    atomic.Uint64 // records, in steps of 64
		recorded    [workers]uint64
	)
	for w := range workers {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			a, b := r.Variant("ep", "a"), r.Variant("ep", "b")
			s := r.Shadow("ep", "s")
			started.Done()
			i := uint64(0)
			for ; !done.Load() || i < 1000; i++ {
				a.Request(stats.Class(i%stats.NumClasses), time.Duration(i)*time.Microsecond)
				b.Assigned()
				s.Compared(i%2 == 0)
				if i%64 == 0 {
					progress.Add(1)
					runtime.Gosched() // let the rotator run: 2 shared cores
				}
				if i == 500 && w == 0 {
					r.Variant("ep", "late") // a variant added mid-window
				}
			}
			recorded[w] = i
		}()
	}
	started.Wait()
	// Rotate, split windows by weight changes and read while they record.
	for i := range rotations {
		for p := progress.Load(); progress.Load() < p+2; { // some records in every window
			runtime.Gosched()
		}
		c.Advance(100 * time.Millisecond)
		if i%5 == 0 {
			r.SetWeights("ep", map[string]int{"a": i})
		}
		r.Rotate()
		_ = r.Windows("ep", time.Time{})
		runtime.Gosched()
	}
	done.Store(true)
	wg.Wait()
	var n, answered, agreed uint64
	for _, k := range recorded {
		n += k
		answered += k - (k+stats.NumClasses-1)/stats.NumClasses // i%NumClasses == ClassNone: no latency
		agreed += (k + 1) / 2
	}
	all := r.Windows("ep", time.Time{})
	if cur, ok := r.Current("ep"); ok {
		all = append(all, cur)
	}
	sum := stats.Sum(all)
	if a := sum.Variants["a"]; a.Requests != n || a.Latency.Count() != answered {
		t.Errorf("windows: a requests %d latency %d, want %d and %d", a.Requests, a.Latency.Count(), n, answered)
	}
	if b := sum.Variants["b"]; b.Assigned != n {
		t.Errorf("windows: b assigned %d, want %d", b.Assigned, n)
	}
	if s := sum.Shadows["s"]; s.Compared != n || s.Agreed != agreed {
		t.Errorf("windows: shadow %+v, want %d compared, %d agreed", s, n, agreed)
	}
	tot := r.Totals("ep")
	if tot.Variants["a"].Requests != n || tot.Variants["b"].Assigned != n || tot.Shadows["s"].Compared != n {
		t.Errorf("totals %+v, want %d each", tot, n)
	}
	if len(all) < rotations/10 {
		t.Errorf("only %d windows over %d rotations", len(all), rotations)
	}
}

func TestPrometheusEqualsWhatWasRecorded(t *testing.T) {
	c := newClock(at(0))
	r := newRecorder(c, stats.Options{Window: time.Second, Retention: 2 * time.Second})
	a := r.Variant("ep", "a")
	a.Request(stats.Class2xx, 2*time.Millisecond)
	c.Advance(time.Second)
	r.Rotate() // closed, not folded yet
	a.Request(stats.Class2xx, 2*time.Second)
	a.Request(stats.Class4xx, 50*time.Millisecond)
	c.Advance(5 * time.Second)
	r.Rotate() // both folded and dropped by retention
	a.Request(stats.Class5xx, 40*time.Second)
	a.Request(stats.ClassNone, 0) // not in requests_total: no status
	r.Variant("ep", "b")          // no traffic: no series
	r.Variant("other", "x").Request(stats.Class1xx, time.Millisecond)
	want := `
# HELP modelsplit_variant_latency_seconds Time from request headers to response headers as the observe filter saw them, by endpoint and variant.
# TYPE modelsplit_variant_latency_seconds histogram
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="0.001"} 0
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="0.0025"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="0.005"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="0.01"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="0.025"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="0.05"} 2
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="0.1"} 2
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="0.25"} 2
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="0.5"} 2
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="1"} 2
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="2.5"} 3
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="5"} 3
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="10"} 3
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="30"} 3
modelsplit_variant_latency_seconds_bucket{endpoint="ep",variant="a",le="+Inf"} 4
modelsplit_variant_latency_seconds_sum{endpoint="ep",variant="a"} 42.052
modelsplit_variant_latency_seconds_count{endpoint="ep",variant="a"} 4
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="0.001"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="0.0025"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="0.005"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="0.01"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="0.025"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="0.05"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="0.1"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="0.25"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="0.5"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="1"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="2.5"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="5"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="10"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="30"} 1
modelsplit_variant_latency_seconds_bucket{endpoint="other",variant="x",le="+Inf"} 1
modelsplit_variant_latency_seconds_sum{endpoint="other",variant="x"} 0.001
modelsplit_variant_latency_seconds_count{endpoint="other",variant="x"} 1
# HELP modelsplit_variant_requests_total Requests seen by the observe filter, by endpoint and the variant that served them.
# TYPE modelsplit_variant_requests_total counter
modelsplit_variant_requests_total{endpoint="ep",variant="a"} 4
modelsplit_variant_requests_total{endpoint="other",variant="x"} 1
# HELP modelsplit_variant_responses_total Responses by endpoint, variant and status class (2xx, 3xx, 4xx, 5xx; gRPC codes mapped as grpc-gateway does).
# TYPE modelsplit_variant_responses_total counter
modelsplit_variant_responses_total{class="2xx",endpoint="ep",variant="a"} 2
modelsplit_variant_responses_total{class="3xx",endpoint="ep",variant="a"} 0
modelsplit_variant_responses_total{class="4xx",endpoint="ep",variant="a"} 1
modelsplit_variant_responses_total{class="5xx",endpoint="ep",variant="a"} 1
modelsplit_variant_responses_total{class="1xx",endpoint="other",variant="x"} 1
modelsplit_variant_responses_total{class="2xx",endpoint="other",variant="x"} 0
modelsplit_variant_responses_total{class="3xx",endpoint="other",variant="x"} 0
modelsplit_variant_responses_total{class="4xx",endpoint="other",variant="x"} 0
modelsplit_variant_responses_total{class="5xx",endpoint="other",variant="x"} 0
`
	if err := testutil.CollectAndCompare(r.Collector(), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.CollectAndLint(r.Collector()); err != nil || len(n) != 0 {
		t.Errorf("lint: %v %v", n, err)
	}
}

func TestRewardsAndSum(t *testing.T) {
	c := newClock(at(0))
	r := newRecorder(c, stats.Options{})
	v := r.Variant("ep", "a")
	v.Reward(1)
	v.Reward(3)
	c.Set(at(10))
	r.Rotate()
	v.Reward(-2)
	c.Set(at(20))
	ws := r.Windows("ep", time.Time{})
	if len(ws) != 2 {
		t.Fatalf("%d windows", len(ws))
	}
	s := stats.Sum(ws).Variants["a"]
	if s.Rewards != 3 || s.RewardSum != 2 || s.RewardSumSquares != 14 {
		t.Errorf("sum = %+v, want 3 rewards, sum 2, squares 14", s)
	}
	var nilV *stats.VariantRecorder
	var nilS *stats.ShadowRecorder
	nilV.Request(stats.Class2xx, 0)
	nilV.Decided()
	nilV.Assigned()
	nilV.Reward(1)
	nilS.Compared(true)
	if r.Windows("nope", time.Time{}) != nil {
		t.Error("windows of an unknown endpoint")
	}
}

func TestClassNames(t *testing.T) {
	for c, want := range map[stats.Class]string{stats.ClassNone: "none", stats.Class1xx: "1xx", stats.Class5xx: "5xx", stats.NumClasses: "invalid", 200: "invalid"} {
		if got := c.String(); got != want {
			t.Errorf("Class(%d) = %q, want %q", c, got, want)
		}
	}
}

// A variant without an answered request is skipped, not the end of its
// endpoint's series: whichever order the map gives (it changes from one
// collection to the next), the variant with answers is exported.
func TestPrometheusSkipsOnlyVariantsWithoutAnswers(t *testing.T) {
	r := newRecorder(newClock(at(0)), stats.Options{})
	r.Variant("ep", "idle")
	r.Variant("ep", "reset").Request(stats.ClassNone, 0)
	r.Variant("ep", "busy").Request(stats.Class2xx, time.Millisecond)
	for i := range 40 {
		// requests_total, 4 response classes and a histogram for busy only.
		if n := testutil.CollectAndCount(r.Collector()); n != 6 {
			t.Fatalf("collection %d: %d series, want 6 (busy's)", i, n)
		}
	}
}

// Variants and shadows resolved while a window is open join it: their
// records land in the same window as the earlier ones, none is lost. A
// class out of range is not recorded.
func TestHandlesAddedMidWindow(t *testing.T) {
	c := newClock(at(1))
	r := newRecorder(c, stats.Options{})
	s1 := r.Shadow("ep", "s1")
	s1.Compared(true) // opens the window
	a := r.Variant("ep", "a")
	a.Request(stats.Class2xx, time.Millisecond)
	s2 := r.Shadow("ep", "s2")
	s2.Compared(false)
	b := r.Variant("ep", "b")
	b.Request(stats.Class5xx, time.Millisecond)
	b.Decided()
	a.Assigned()
	s1.Compared(false)
	b.Request(stats.NumClasses, time.Millisecond)
	b.Request(stats.NumClasses+1, time.Millisecond)
	c.Set(at(10))
	ws := r.Windows("ep", time.Time{})
	if len(ws) != 1 {
		t.Fatalf("%d windows, want 1", len(ws))
	}
	w := ws[0]
	if va, vb := w.Variants["a"], w.Variants["b"]; va.Requests != 1 || va.Assigned != 1 || vb.Requests != 1 || vb.Responses[stats.Class5xx] != 1 || vb.Decisions != 1 {
		t.Errorf("variants %+v", w.Variants)
	}
	if w.Shadows["s1"] != (stats.ShadowCounts{Compared: 2, Agreed: 1}) || w.Shadows["s2"] != (stats.ShadowCounts{Compared: 1}) {
		t.Errorf("shadows %+v", w.Shadows)
	}
	if tb := r.Totals("ep").Variants["b"]; tb.Requests != 1 {
		t.Errorf("b's total %d requests, want 1 (classes out of range are not recorded)", tb.Requests)
	}
}

// MaxWindows keeps exactly the newest MaxWindows closed windows, however
// many weight changes split them; Retention drops windows that ended
// before it, and keeps one that ended exactly at its edge.
func TestWindowBoundsAreExact(t *testing.T) {
	c := newClock(at(0))
	r := newRecorder(c, stats.Options{MaxWindows: 3})
	a := r.Variant("ep", "a")
	for i := range 6 { // six windows in one slot, split by weight changes
		a.Request(stats.Class2xx, time.Millisecond)
		c.Advance(time.Second)
		r.SetWeights("ep", map[string]int{"a": i + 1})
	}
	ws := r.Windows("ep", time.Time{})
	if len(ws) != 3 || !ws[0].Start.Equal(at(3)) || !ws[2].End.Equal(at(6)) {
		t.Fatalf("%d windows from %v: want the newest 3, [3s, 6s)", len(ws), ws)
	}
	if ws[0].Shadows != nil {
		t.Errorf("a window of an endpoint without shadows has a shadows map: %v", ws[0].Shadows)
	}
	c2 := newClock(at(0))
	r2 := newRecorder(c2, stats.Options{Window: time.Second, Retention: 5 * time.Second})
	b := r2.Variant("ep", "b")
	for range 3 {
		b.Request(stats.Class2xx, time.Millisecond)
		c2.Advance(time.Second)
		r2.Rotate()
	}
	// Windows ended at 1s, 2s and 3s; at 6s the retention edge is 1s.
	c2.Set(at(6))
	if ws := r2.Windows("ep", time.Time{}); len(ws) != 3 {
		t.Fatalf("at the retention edge: %d windows, want 3 (the one ending at the edge kept)", len(ws))
	}
	c2.Set(at(6.001))
	if ws := r2.Windows("ep", time.Time{}); len(ws) != 2 || !ws[0].End.Equal(at(2)) {
		t.Fatalf("past the edge: %d windows, want the 2 that ended at 2s and 3s", len(ws))
	}
}

// Totals and AllTotals keep every shadow's comparisons.
func TestShadowTotals(t *testing.T) {
	r := newRecorder(newClock(at(0)), stats.Options{})
	r.Shadow("ep", "s1").Compared(true)
	r.Shadow("ep", "s2").Compared(false)
	r.Shadow("ep", "s2").Compared(true)
	for name, tot := range map[string]stats.Totals{"Totals": r.Totals("ep"), "AllTotals": r.AllTotals()["ep"]} {
		if tot.Shadows["s1"] != (stats.ShadowCounts{Compared: 1, Agreed: 1}) || tot.Shadows["s2"] != (stats.ShadowCounts{Compared: 2, Agreed: 1}) {
			t.Errorf("%s: shadows %+v", name, tot.Shadows)
		}
	}
}
