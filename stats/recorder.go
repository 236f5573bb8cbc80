package stats

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults.
const (
	DefaultWindow    = 10 * time.Second
	DefaultRetention = 15 * time.Minute
)

// Options configures a Recorder.
type Options struct {
	// Window is the windows' length; default DefaultWindow. Windows are
	// aligned to multiples of it since the Unix epoch.
	Window time.Duration
	// Retention: closed windows that ended longer ago are dropped;
	// default DefaultRetention.
	Retention time.Duration
	// MaxWindows bounds the closed windows kept per endpoint; default
	// Retention / Window. Weight changes split windows, so without it a
	// burst of changes would keep more.
	MaxWindows int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Recorder keeps every endpoint's windows. It is safe for concurrent use.
type Recorder struct {
	opts Options

	mu        sync.RWMutex
	endpoints map[string]*endpoint

	publisher atomic.Pointer[publisher] // set by Publish
}

// New returns an empty Recorder.
func New(opts Options) *Recorder {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Retention < opts.Window {
		opts.Retention = opts.Window
	}
	if opts.MaxWindows <= 0 {
		opts.MaxWindows = int(opts.Retention / opts.Window)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Recorder{opts: opts, endpoints: map[string]*endpoint{}}
}

// WindowLength is the configured window length.
func (r *Recorder) WindowLength() time.Duration { return r.opts.Window }

// endpoint is one endpoint's state. cur is read by recorders without a
// lock; everything else is guarded by mu.
type endpoint struct {
	r    *Recorder
	name string
	cur  atomic.Pointer[window] // nil between a close and the next record

	mu        sync.Mutex
	variants  []string // index → name; only grows
	vindex    map[string]int
	shadows   []string
	sindex    map[string]int
	weights   map[string]int // in force; replaced, never modified
	nextStart time.Time      // end of the last closed window
	closed    []*window      // oldest first
	total     []*counters    // since start, by variant
	stotal    []*shadowCounters
}

// window is one window's counters. vars and shadows are fixed per
// struct: a variant added mid-window makes a new struct sharing the
// existing counters (grow), so no add is lost.
type window struct {
	start     time.Time
	deadline  time.Time // the aligned boundary it closes at, at the latest
	end       time.Time // set at close (under ep.mu)
	weights   map[string]int
	vars      []*counters
	shadows   []*shadowCounters
	published bool // handed to the publisher, if any (under ep.mu)
}

func (r *Recorder) endpoint(name string) *endpoint {
	r.mu.RLock()
	ep := r.endpoints[name]
	r.mu.RUnlock()
	if ep != nil {
		return ep
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ep = r.endpoints[name]; ep == nil {
		ep = &endpoint{r: r, name: name, vindex: map[string]int{}, sindex: map[string]int{}}
		r.endpoints[name] = ep
	}
	return ep
}

func (r *Recorder) lookup(name string) *endpoint {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.endpoints[name]
}

func (r *Recorder) all() []*endpoint {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*endpoint, 0, len(r.endpoints))
	for _, ep := range r.endpoints {
		out = append(out, ep)
	}
	return out
}

// VariantRecorder records one endpoint variant's results. Resolve it
// once (Recorder.Variant) and keep it: its methods take no lock and
// allocate nothing. A nil *VariantRecorder records nothing.
type VariantRecorder struct {
	ep    *endpoint
	idx   int
	total *counters
}

// Variant returns the handle for endpoint's variant; the same one for the
// same names. It allocates no window.
func (r *Recorder) Variant(endpoint, variant string) *VariantRecorder {
	ep := r.endpoint(endpoint)
	ep.mu.Lock()
	defer ep.mu.Unlock()
	i, ok := ep.vindex[variant]
	if !ok {
		i = len(ep.variants)
		ep.vindex[variant] = i
		ep.variants = append(ep.variants, variant)
		ep.total = append(ep.total, new(counters))
	}
	return &VariantRecorder{ep: ep, idx: i, total: ep.total[i]}
}

// ShadowRecorder records one shadow's comparisons. A nil one records
// nothing.
type ShadowRecorder struct {
	ep    *endpoint
	idx   int
	total *shadowCounters
}

// Shadow returns the handle for endpoint's shadow.
func (r *Recorder) Shadow(endpoint, shadow string) *ShadowRecorder {
	ep := r.endpoint(endpoint)
	ep.mu.Lock()
	defer ep.mu.Unlock()
	i, ok := ep.sindex[shadow]
	if !ok {
		i = len(ep.shadows)
		ep.sindex[shadow] = i
		ep.shadows = append(ep.shadows, shadow)
		ep.stotal = append(ep.stotal, new(shadowCounters))
	}
	return &ShadowRecorder{ep: ep, idx: i, total: ep.stotal[i]}
}

func (v *VariantRecorder) counters() *counters {
	if w := v.ep.cur.Load(); w != nil && v.idx < len(w.vars) {
		return w.vars[v.idx]
	}
	return v.ep.open().vars[v.idx]
}

// Request records one request the observe filter saw end, in class c,
// with latency (ignored for ClassNone).
func (v *VariantRecorder) Request(c Class, latency time.Duration) {
	if v == nil || int(c) >= NumClasses {
		return
	}
	k, b := v.counters(), bucket(latency)
	for _, k := range [2]*counters{k, v.total} {
		k.requests.Add(1)
		k.responses[c].Add(1)
		if c != ClassNone {
			k.latency[b].Add(1)
			k.latencyNanos.Add(int64(latency))
		}
	}
}

// Decided records a decision for the variant (any source).
func (v *VariantRecorder) Decided() {
	if v != nil {
		v.counters().decisions.Add(1)
		v.total.decisions.Add(1)
	}
}

// Assigned records a new user the hash placed on the variant (see
// VariantCounts.Assigned).
func (v *VariantRecorder) Assigned() {
	if v != nil {
		v.counters().assigned.Add(1)
		v.total.assigned.Add(1)
	}
}

// Reward records one reward (for bandits).
func (v *VariantRecorder) Reward(x float64) {
	if v == nil {
		return
	}
	for _, k := range [2]*counters{v.counters(), v.total} {
		k.rewards.Add(1)
		addFloat(&k.rewardSum, x)
		addFloat(&k.rewardSq, x*x)
	}
}

// Compared records one comparison of the shadow with the primary.
func (s *ShadowRecorder) Compared(agreed bool) {
	if s == nil {
		return
	}
	w := s.ep.cur.Load()
	if w == nil || s.idx >= len(w.shadows) {
		w = s.ep.open()
	}
	for _, k := range [2]*shadowCounters{w.shadows[s.idx], s.total} {
		k.compared.Add(1)
		if agreed {
			k.agreed.Add(1)
		}
	}
}

// open is the slow path: no window is open (the last one closed), or the
// open one predates a variant or shadow. It returns a window with a slot
// for every handle resolved so far.
func (ep *endpoint) open() *window {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	w := ep.cur.Load()
	if w != nil && len(w.vars) == len(ep.variants) && len(w.shadows) == len(ep.shadows) {
		return w // another recorder got here first
	}
	nw := &window{}
	if w != nil {
		// Grow: same window, same counters, more slots.
		*nw = window{start: w.start, deadline: w.deadline, weights: w.weights,
			vars: append([]*counters(nil), w.vars...), shadows: append([]*shadowCounters(nil), w.shadows...)}
	} else {
		now := ep.r.opts.Now()
		slot := now.Truncate(ep.r.opts.Window)
		nw.start, nw.deadline, nw.weights = slot, slot.Add(ep.r.opts.Window), ep.weights
		if ep.nextStart.After(slot) && ep.nextStart.Before(nw.deadline) {
			nw.start = ep.nextStart // the rest of a window a weight change split
		}
	}
	for len(nw.vars) < len(ep.variants) {
		nw.vars = append(nw.vars, new(counters))
	}
	for len(nw.shadows) < len(ep.shadows) {
		nw.shadows = append(nw.shadows, new(shadowCounters))
	}
	ep.cur.Store(nw)
	return nw
}

// SetWeights records the weights now in force on endpoint. When they
// differ from the previous ones, the current window closes now, so that
// each window has one set of weights. Call it for every endpoint of each
// config applied: unchanged weights are a no-op.
func (r *Recorder) SetWeights(endpoint string, weights map[string]int) {
	ep := r.endpoint(endpoint)
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.weights != nil && maps.Equal(ep.weights, weights) {
		return
	}
	if w := ep.cur.Load(); w != nil {
		now := r.opts.Now()
		end := now
		if !now.Before(w.deadline) {
			end = w.deadline // overdue anyway: close it where it should have
		}
		ep.closeLocked(w, end, now)
	}
	ep.weights = maps.Clone(weights)
	if ep.weights == nil {
		ep.weights = map[string]int{}
	}
}

// closeLocked closes the current window w at end.
func (ep *endpoint) closeLocked(w *window, end, now time.Time) {
	ep.cur.Store(nil)
	w.end = end
	ep.nextStart = end
	ep.closed = append(ep.closed, w)
	ep.trimLocked(now)
}

// trimLocked publishes windows closed for a whole window length (late
// adds have had that long to land), then drops windows past the
// retention or the count bound.
func (ep *endpoint) trimLocked(now time.Time) {
	o := ep.r.opts
	for _, w := range ep.closed {
		if !w.published && !now.Before(w.end.Add(o.Window)) {
			ep.publishLocked(w)
		}
	}
	drop := 0
	for drop < len(ep.closed) && (len(ep.closed)-drop > o.MaxWindows || ep.closed[drop].end.Before(now.Add(-o.Retention))) {
		ep.publishLocked(ep.closed[drop])
		drop++
	}
	if drop > 0 {
		n := copy(ep.closed, ep.closed[drop:])
		clear(ep.closed[n:])
		ep.closed = ep.closed[:n]
	}
}

func (ep *endpoint) publishLocked(w *window) {
	if w.published {
		return
	}
	w.published = true
	if p := ep.r.publisher.Load(); p != nil {
		p.enqueue(ep.name, ep.snapshotLocked(w, false))
	}
}

// rotate closes ep's window if its boundary has passed, and trims.
func (ep *endpoint) rotate(now time.Time) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if w := ep.cur.Load(); w != nil && !now.Before(w.deadline) {
		ep.closeLocked(w, w.deadline, now)
		return
	}
	ep.trimLocked(now)
}

// Rotate closes every window whose boundary has passed and drops what
// retention no longer keeps. Run calls it at each boundary; readers call
// it for their endpoint, so an answer never includes an overdue window
// as current.
func (r *Recorder) Rotate() {
	now := r.opts.Now()
	for _, ep := range r.all() {
		ep.rotate(now)
	}
}

// Run rotates windows at each aligned boundary until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	for {
		now := r.opts.Now()
		next := now.Truncate(r.opts.Window).Add(r.opts.Window)
		t := time.NewTimer(next.Sub(now) + time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
			r.Rotate()
		}
	}
}

func (ep *endpoint) snapshotLocked(w *window, partial bool) Window {
	out := Window{Start: w.start, End: w.end, Partial: partial, Weights: w.weights,
		Variants: make(map[string]VariantCounts, len(w.vars))}
	if partial {
		out.End = w.deadline
	}
	for i, k := range w.vars {
		out.Variants[ep.variants[i]] = k.read()
	}
	if len(w.shadows) > 0 {
		out.Shadows = make(map[string]ShadowCounts, len(w.shadows))
		for i, k := range w.shadows {
			out.Shadows[ep.shadows[i]] = k.read()
		}
	}
	return out
}

// Windows returns endpoint's closed windows that ended after since,
// oldest first (the current, partial one is not included: see Current).
// A window closed moments ago can still receive a late add (see the
// package doc).
func (r *Recorder) Windows(endpoint string, since time.Time) []Window {
	ep := r.lookup(endpoint)
	if ep == nil {
		return nil
	}
	ep.rotate(r.opts.Now())
	ep.mu.Lock()
	defer ep.mu.Unlock()
	var out []Window
	for _, w := range ep.closed {
		if w.end.After(since) {
			out = append(out, ep.snapshotLocked(w, false))
		}
	}
	return out
}

// Current returns endpoint's open window (Partial set), if it has one.
func (r *Recorder) Current(endpoint string) (Window, bool) {
	ep := r.lookup(endpoint)
	if ep == nil {
		return Window{}, false
	}
	ep.rotate(r.opts.Now())
	ep.mu.Lock()
	defer ep.mu.Unlock()
	w := ep.cur.Load()
	if w == nil {
		return Window{}, false
	}
	return ep.snapshotLocked(w, true), true
}

// Totals returns endpoint's counts since the Recorder started (every
// window, closed, dropped or current).
func (r *Recorder) Totals(endpoint string) Totals {
	t := Totals{Variants: map[string]VariantCounts{}, Shadows: map[string]ShadowCounts{}}
	if ep := r.lookup(endpoint); ep != nil {
		ep.totals(&t)
	}
	return t
}

// totals adds ep's counts since start into t.
func (ep *endpoint) totals(t *Totals) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	for i, k := range ep.total {
		s := t.Variants[ep.variants[i]]
		s.Add(k.read())
		t.Variants[ep.variants[i]] = s
	}
	for i, k := range ep.stotal {
		if t.Shadows == nil {
			t.Shadows = map[string]ShadowCounts{}
		}
		s := t.Shadows[ep.shadows[i]]
		s.Add(k.read())
		t.Shadows[ep.shadows[i]] = s
	}
}

// AllTotals returns Totals for every endpoint that has a handle.
func (r *Recorder) AllTotals() map[string]Totals {
	eps := r.all()
	out := make(map[string]Totals, len(eps))
	for _, ep := range eps {
		t := Totals{Variants: make(map[string]VariantCounts, 2)}
		ep.totals(&t)
		out[ep.name] = t
	}
	return out
}
