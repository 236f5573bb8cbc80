package rollout

import (
	"maps"
	"time"
)

// Results is where a rollout reads what each variant did: the windowed
// per-variant results the observe filter and the decision engine record.
type Results interface {
	// Windows returns the endpoint's windows that end after since,
	// oldest first: the closed ones, then the open one (Partial).
	// A weight change closes a window, so each has one set of weights.
	Windows(endpoint string, since time.Time) []Window
	// LatencyBounds are the latency histogram's bucket upper bounds in
	// seconds (the last bucket, +Inf, is implied).
	LatencyBounds() []float64
}

// Window is one window of an endpoint's results.
type Window struct {
	Start, End time.Time
	Partial    bool
	Weights    map[string]int
	Variants   map[string]VariantCounts
	Shadows    map[string]ShadowCounts
}

// VariantCounts are one variant's results in a window.
type VariantCounts struct {
	Assigned  uint64   // new users the hash placed on the variant
	Responses uint64   // answered requests (any status, or reset)
	Errors    uint64   // 5xx and requests that got no response
	Latency   []uint64 // per LatencyBounds bucket, plus +Inf last
}

// ShadowCounts are one compare shadow's results in a window.
type ShadowCounts struct {
	Compared, Agreed uint64
}

// evidence is results summed over windows.
type evidence struct {
	variants map[string]*VariantCounts
	shadows  map[string]*ShadowCounts
	// srm holds the new-user counts per distinct weights in force.
	srm []srmWindow
}

type srmWindow struct {
	weights  map[string]int
	assigned map[string]uint64
}

func newEvidence() *evidence {
	return &evidence{variants: map[string]*VariantCounts{}, shadows: map[string]*ShadowCounts{}}
}

func (ev *evidence) add(w *Window) {
	for name, c := range w.Variants {
		t := ev.variants[name]
		if t == nil {
			t = &VariantCounts{}
			ev.variants[name] = t
		}
		t.Assigned += c.Assigned
		t.Responses += c.Responses
		t.Errors += c.Errors
		if len(t.Latency) < len(c.Latency) {
			t.Latency = append(t.Latency, make([]uint64, len(c.Latency)-len(t.Latency))...)
		}
		for i, n := range c.Latency {
			t.Latency[i] += n
		}
	}
	for name, c := range w.Shadows {
		t := ev.shadows[name]
		if t == nil {
			t = &ShadowCounts{}
			ev.shadows[name] = t
		}
		t.Compared += c.Compared
		t.Agreed += c.Agreed
	}
	var sw *srmWindow
	for i := range ev.srm {
		if maps.Equal(ev.srm[i].weights, w.Weights) {
			sw = &ev.srm[i]
		}
	}
	if sw == nil {
		ev.srm = append(ev.srm, srmWindow{weights: maps.Clone(w.Weights), assigned: map[string]uint64{}})
		sw = &ev.srm[len(ev.srm)-1]
	}
	for name, c := range w.Variants {
		sw.assigned[name] += c.Assigned
	}
}

func (ev *evidence) clone() *evidence {
	n := newEvidence()
	for k, v := range ev.variants {
		c := *v
		c.Latency = append([]uint64(nil), v.Latency...)
		n.variants[k] = &c
	}
	for k, v := range ev.shadows {
		c := *v
		n.shadows[k] = &c
	}
	for _, s := range ev.srm {
		n.srm = append(n.srm, srmWindow{weights: maps.Clone(s.weights), assigned: maps.Clone(s.assigned)})
	}
	return n
}

func (ev *evidence) variant(name string) VariantCounts {
	if v := ev.variants[name]; v != nil {
		return *v
	}
	return VariantCounts{}
}

// run is the driver's memory of one step of one plan run: the evidence
// of the step and of the whole rollout, and the sequential tests' state.
// After a restart or a takeover it is rebuilt from the results still
// held, which makes the tests start again (never less conservative).
type run struct {
	plan        string
	step        int
	stepStarted time.Time

	stepClosed, allClosed *evidence // closed windows so far
	through               time.Time // end of the newest closed window added
	stepEv, allEv         *evidence // the closed ones plus the open window

	checks    int // gate checks made in this step (alpha spending)
	seq       map[int]*sequential
	reverse   *sequential // an experiment's canary-better test
	agree     map[int]*agreementTest
	verdicts  []apiVerdict
	lastCheck time.Time
	nextCheck time.Time

	winner, winnerDetail string // an experiment's decision
}

func newRun(plan string, step int, stepStarted time.Time) *run {
	return &run{plan: plan, step: step, stepStarted: stepStarted,
		stepClosed: newEvidence(), allClosed: newEvidence(), seq: map[int]*sequential{}, agree: map[int]*agreementTest{}}
}

// next is the run of step n of plan: the whole rollout's evidence and
// its sequential tests carry over from the previous step of the same
// plan (so the error-ratio test is one test over the whole rollout);
// the step's evidence starts empty.
func (r *run) next(plan string, n int, stepStarted time.Time) *run {
	nr := newRun(plan, n, stepStarted)
	if r == nil || r.plan != plan {
		return nr
	}
	nr.allClosed, nr.through, nr.seq, nr.agree, nr.reverse = r.allClosed, r.through, r.seq, r.agree, r.reverse
	return nr
}

// collect adds the windows closed since the last call, and the open one
// on top (so a check sees the newest results without counting them twice).
func (r *run) collect(res Results, endpoint string, rec *record) {
	if res == nil {
		r.stepEv, r.allEv = r.stepClosed, r.allClosed
		return
	}
	since := rec.Started
	if r.through.After(since) {
		since = r.through
	}
	r.stepEv, r.allEv = nil, nil
	for _, w := range res.Windows(endpoint, since) {
		if w.Start.Before(rec.Started) || (!w.Partial && !w.End.After(r.through)) {
			continue // before the rollout, or already added
		}
		if w.Partial {
			r.stepEv, r.allEv = r.stepClosed.clone(), r.allClosed.clone()
			if !w.Start.Before(r.stepStarted) {
				r.stepEv.add(&w)
			}
			r.allEv.add(&w)
			continue
		}
		if !w.Start.Before(r.stepStarted) {
			r.stepClosed.add(&w)
		}
		r.allClosed.add(&w)
		r.through = w.End
	}
	if r.stepEv == nil {
		r.stepEv, r.allEv = r.stepClosed, r.allClosed
	}
}
