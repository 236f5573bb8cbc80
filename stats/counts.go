package stats

import (
	"math"
	"sync/atomic"
	"time"
)

// Class is a response's status class.
type Class uint8

const (
	// ClassNone: no status ever came (the stream was reset, or the client
	// left, before the answer's status was known).
	ClassNone Class = iota
	Class1xx
	Class2xx
	Class3xx
	Class4xx
	Class5xx
)

// NumClasses is the number of classes, ClassNone included.
const NumClasses = 6

var classNames = [NumClasses]string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"}

func (c Class) String() string {
	if int(c) < NumClasses {
		return classNames[c]
	}
	return "invalid"
}

// LatencyBuckets are the latency histogram's upper bounds in seconds,
// shared by every window so windows (and replicas) add up bucket by
// bucket. They are the bounds modelsplit_variant_latency_seconds always
// had, so dashboards' quantiles do not move.
var LatencyBuckets = [...]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// NumBuckets is len(LatencyBuckets) plus the +Inf bucket.
const NumBuckets = len(LatencyBuckets) + 1

// latencyBounds are LatencyBuckets as durations, so the hot path
// compares integers.
var latencyBounds = func() (b [len(LatencyBuckets)]time.Duration) {
	for i, s := range LatencyBuckets {
		b[i] = time.Duration(math.Round(s * float64(time.Second)))
	}
	return b
}()

func bucket(d time.Duration) int {
	for i, b := range latencyBounds {
		if d <= b {
			return i
		}
	}
	return len(latencyBounds)
}

// counters are one variant's counts in one window: 28 words, 224 bytes.
// Every field is added to atomically; nothing is ever reset.
type counters struct {
	requests  atomic.Uint64
	decisions atomic.Uint64
	assigned  atomic.Uint64
	responses [NumClasses]atomic.Uint64
	latency   [NumBuckets]atomic.Uint64
	// latencyNanos is the latency sum: an integer add instead of a
	// compare-and-swap loop on float bits (a window cannot overflow it).
	latencyNanos atomic.Int64
	rewards      atomic.Uint64
	rewardSum    atomic.Uint64 // float64 bits
	rewardSq     atomic.Uint64 // float64 bits
}

type shadowCounters struct {
	compared atomic.Uint64
	agreed   atomic.Uint64
}

// addFloat adds x to the float64 whose bits a holds.
func addFloat(a *atomic.Uint64, x float64) {
	for {
		old := a.Load()
		if a.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+x)) {
			return
		}
	}
}

// Histogram is a latency distribution over LatencyBuckets.
type Histogram struct {
	// Counts[i] is the number of latencies in (LatencyBuckets[i-1],
	// LatencyBuckets[i]]; the last is above every bound (not cumulative).
	Counts [NumBuckets]uint64
	Sum    float64 // seconds
}

// Count is the number of latencies recorded.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// VariantCounts are one variant's counts over a window (or a sum of
// windows).
type VariantCounts struct {
	// Requests the observe filter saw end, with a status or without one
	// (Responses[ClassNone]).
	Requests uint64
	// Decisions made for the variant, any source.
	Decisions uint64
	// Assigned are new users the hash placed on the variant: a user key
	// with no stored assignment, hashed and stored (not targets, rules,
	// random splits, stored assignments or minted ids not yet returned).
	Assigned  uint64
	Responses [NumClasses]uint64
	// Latency: request headers to response headers, for requests with a
	// response.
	Latency Histogram
	// Rewards, for bandits: how many, their sum and sum of squares.
	Rewards          uint64
	RewardSum        float64
	RewardSumSquares float64
}

// Answered is the requests that got a status: what
// modelsplit_variant_requests_total counts.
func (c VariantCounts) Answered() uint64 { return c.Requests - c.Responses[ClassNone] }

// Add adds o into c.
func (c *VariantCounts) Add(o VariantCounts) {
	c.Requests += o.Requests
	c.Decisions += o.Decisions
	c.Assigned += o.Assigned
	for i := range c.Responses {
		c.Responses[i] += o.Responses[i]
	}
	for i := range c.Latency.Counts {
		c.Latency.Counts[i] += o.Latency.Counts[i]
	}
	c.Latency.Sum += o.Latency.Sum
	c.Rewards += o.Rewards
	c.RewardSum += o.RewardSum
	c.RewardSumSquares += o.RewardSumSquares
}

func (k *counters) read() VariantCounts {
	c := VariantCounts{
		Requests:         k.requests.Load(),
		Decisions:        k.decisions.Load(),
		Assigned:         k.assigned.Load(),
		Rewards:          k.rewards.Load(),
		RewardSum:        math.Float64frombits(k.rewardSum.Load()),
		RewardSumSquares: math.Float64frombits(k.rewardSq.Load()),
	}
	for i := range k.responses {
		c.Responses[i] = k.responses[i].Load()
	}
	for i := range k.latency {
		c.Latency.Counts[i] = k.latency[i].Load()
	}
	c.Latency.Sum = time.Duration(k.latencyNanos.Load()).Seconds()
	return c
}

// ShadowCounts are one shadow's comparisons over a window.
type ShadowCounts struct {
	Compared uint64
	Agreed   uint64
}

// Add adds o into c.
func (c *ShadowCounts) Add(o ShadowCounts) {
	c.Compared += o.Compared
	c.Agreed += o.Agreed
}

func (k *shadowCounters) read() ShadowCounts {
	return ShadowCounts{Compared: k.compared.Load(), Agreed: k.agreed.Load()}
}

// Window is one endpoint's counts over [Start, End).
type Window struct {
	Start time.Time
	// End is when the window closed: the aligned boundary, or the weight
	// change that closed it early. For the current window (Partial), the
	// boundary it will close at.
	End     time.Time
	Partial bool
	// Weights in force over the whole window (shared: do not modify).
	// Nil when none were ever set for the endpoint.
	Weights  map[string]int
	Variants map[string]VariantCounts
	Shadows  map[string]ShadowCounts
}

// Totals are counts summed over windows (or since start).
type Totals struct {
	Variants map[string]VariantCounts
	Shadows  map[string]ShadowCounts
}

// Sum adds up windows per variant and per shadow.
func Sum(ws []Window) Totals {
	t := Totals{Variants: map[string]VariantCounts{}, Shadows: map[string]ShadowCounts{}}
	for _, w := range ws {
		for v, c := range w.Variants {
			s := t.Variants[v]
			s.Add(c)
			t.Variants[v] = s
		}
		for v, c := range w.Shadows {
			s := t.Shadows[v]
			s.Add(c)
			t.Shadows[v] = s
		}
	}
	return t
}
