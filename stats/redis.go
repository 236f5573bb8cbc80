package stats

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/redis/go-redis/v9"
)

// Replicas each see part of an endpoint's traffic. With Publish, each
// closed window's counts are added into one Redis hash per endpoint and
// aligned window slot, so MergedWindows can sum over replicas: windows
// are aligned to the wall clock, so every replica's slot has the same
// start.
//
// A weight change splits a slot at a slightly different instant on each
// replica, so within a slot the fields are keyed by a fingerprint of the
// weights in force: the parts of every replica with the same weights add
// up to one merged window, and a merged window still has one set of
// weights. (Weights that change away and back within one slot add both
// parts into one.)
//
// Layout, prefix = the Publish prefix, one hash per endpoint and slot,
// TTL = retention:
//
//	<prefix>stats:<endpoint>:<slot start, unix seconds>
//	  <fp>|w                      the weights, "a=90,b=10" (sorted)
//	  <fp>|v|<variant>|<counter>  HINCRBY / HINCRBYFLOAT
//	  <fp>|s|<shadow>|<counter>
//
// A window is published once it has been closed for a whole window
// length (when it is folded into the totals), so late adds are in, and
// MergedWindows lags the local Windows by one to two window lengths.

// publishQueue bounds the windows waiting for Redis; past it a window is
// dropped (counted by PublishDropped), never waited for.
const publishQueue = 4096

type publisher struct {
	client  redis.UniversalClient
	prefix  string
	ttl     time.Duration
	queue   chan published
	dropped atomic.Uint64
	failed  atomic.Uint64
}

type published struct {
	endpoint string
	w        Window
}

// enqueue is called under the endpoint's lock: it never blocks.
func (p *publisher) enqueue(endpoint string, w Window) {
	select {
	case p.queue <- published{endpoint, w}:
	default:
		p.dropped.Add(1)
	}
}

// Publish adds every window closed from now on into Redis (see the
// layout above), from a goroutine of its own, until ctx ends. Call it
// once.
func (r *Recorder) Publish(ctx context.Context, client redis.UniversalClient, prefix string) {
	p := &publisher{client: client, prefix: prefix, ttl: r.opts.Retention + 2*r.opts.Window,
		queue: make(chan published, publishQueue)}
	r.publisher.Store(p)
	go func() {
		for {
			select {
			case <-ctx.Done():
				r.publisher.CompareAndSwap(p, nil)
				return
			case x := <-p.queue:
				wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				if err := p.write(wctx, r.slotKey(prefix, x.endpoint, x.w.Start), x.w); err != nil {
					p.failed.Add(1)
				}
				cancel()
			}
		}
	}()
}

// PublishFailures returns the windows not added to Redis: dropped (queue
// full) and failed writes.
func (r *Recorder) PublishFailures() (dropped, failed uint64) {
	if p := r.publisher.Load(); p != nil {
		return p.dropped.Load(), p.failed.Load()
	}
	return 0, 0
}

func (r *Recorder) slotKey(prefix, endpoint string, start time.Time) string {
	return prefix + "stats:" + endpoint + ":" + strconv.FormatInt(start.Truncate(r.opts.Window).Unix(), 10)
}

// weightsKey is the weights as "a=90,b=10", sorted by name.
func weightsKey(w map[string]int) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(w)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.Itoa(w[k]))
	}
	return b.String()
}

func fingerprint(wk string) string { return strconv.FormatUint(xxhash.Sum64String(wk), 36) }

// The counters' field names, in VariantCounts order.
const (
	fRequests  = "req"
	fDecisions = "dec"
	fAssigned  = "new"
	fResponses = "c" // c0..c5, by Class
	fLatency   = "l" // l0..l14, by bucket
	fLatSum    = "lsum"
	fRewards   = "rn"
	fRewardSum = "rs"
	fRewardSq  = "rq"
	fCompared  = "cmp"
	fAgreed    = "agr"
)

func (p *publisher) write(ctx context.Context, key string, w Window) error {
	wk := weightsKey(w.Weights)
	fp := fingerprint(wk)
	_, err := p.client.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		pl.HSet(ctx, key, fp+"|w", wk)
		incr := func(name, field string, n uint64) {
			if n != 0 {
				pl.HIncrBy(ctx, key, fp+"|"+name+"|"+field, int64(n))
			}
		}
		incrF := func(name, field string, x float64) {
			if x != 0 {
				pl.HIncrByFloat(ctx, key, fp+"|"+name+"|"+field, x)
			}
		}
		for v, c := range w.Variants {
			n := "v|" + v
			incr(n, fRequests, c.Requests)
			incr(n, fDecisions, c.Decisions)
			incr(n, fAssigned, c.Assigned)
			for i, k := range c.Responses {
				incr(n, fResponses+strconv.Itoa(i), k)
			}
			for i, k := range c.Latency.Counts {
				incr(n, fLatency+strconv.Itoa(i), k)
			}
			incrF(n, fLatSum, c.Latency.Sum)
			incr(n, fRewards, c.Rewards)
			incrF(n, fRewardSum, c.RewardSum)
			incrF(n, fRewardSq, c.RewardSumSquares)
		}
		for s, c := range w.Shadows {
			incr("s|"+s, fCompared, c.Compared)
			incr("s|"+s, fAgreed, c.Agreed)
		}
		pl.Expire(ctx, key, p.ttl)
		return nil
	})
	return err
}

// MergedWindows returns endpoint's windows summed over every replica
// that publishes to client under prefix, for the slots from since's to
// the last one published, oldest first. Each has one set of weights (as
// published); its bounds are the local window's with those weights in
// that slot, else the slot's. Partial is never set, but a replica may
// still add to a recent slot (publishing lags a window length or two).
func (r *Recorder) MergedWindows(ctx context.Context, client redis.UniversalClient, prefix, endpoint string, since time.Time) ([]Window, error) {
	now := r.opts.Now()
	first := since.Truncate(r.opts.Window)
	var slots []time.Time
	for s := first; s.Before(now); s = s.Add(r.opts.Window) {
		slots = append(slots, s)
	}
	if len(slots) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(slots))
	_, err := client.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for i, s := range slots {
			cmds[i] = pl.HGetAll(ctx, r.slotKey(prefix, endpoint, s))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	local := map[[2]string]Window{} // slot, weights → local window
	for _, w := range r.Windows(endpoint, since) {
		local[[2]string{strconv.FormatInt(w.Start.Truncate(r.opts.Window).Unix(), 10), weightsKey(w.Weights)}] = w
	}
	var out []Window
	for i, s := range slots {
		byFP := map[string]*Window{}
		var order []string
		get := func(fp string) *Window {
			w := byFP[fp]
			if w == nil {
				w = &Window{Start: s, End: s.Add(r.opts.Window), Variants: map[string]VariantCounts{}}
				byFP[fp] = w
				order = append(order, fp)
			}
			return w
		}
		for field, val := range cmds[i].Val() {
			fp, rest, _ := strings.Cut(field, "|")
			if rest == "w" {
				get(fp).Weights = parseWeights(val)
				continue
			}
			kind, rest, _ := strings.Cut(rest, "|")
			j := strings.LastIndexByte(rest, '|')
			if j < 0 {
				continue
			}
			name, counter := rest[:j], rest[j+1:]
			w := get(fp)
			switch kind {
			case "v":
				c := w.Variants[name]
				if err := setCounter(&c, counter, val); err != nil {
					return nil, fmt.Errorf("stats: %s field %q: %w", endpoint, field, err)
				}
				w.Variants[name] = c
			case "s":
				if w.Shadows == nil {
					w.Shadows = map[string]ShadowCounts{}
				}
				c := w.Shadows[name]
				n, err := strconv.ParseUint(val, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("stats: %s field %q: %w", endpoint, field, err)
				}
				switch counter {
				case fCompared:
					c.Compared = n
				case fAgreed:
					c.Agreed = n
				}
				w.Shadows[name] = c
			}
		}
		var ws []Window
		for _, fp := range order {
			w := *byFP[fp]
			if l, ok := local[[2]string{strconv.FormatInt(s.Unix(), 10), weightsKey(w.Weights)}]; ok {
				w.Start, w.End = l.Start, l.End
			}
			ws = append(ws, w)
		}
		slices.SortFunc(ws, func(a, b Window) int { return a.Start.Compare(b.Start) })
		out = append(out, ws...)
	}
	return out, nil
}

func parseWeights(s string) map[string]int {
	w := map[string]int{}
	if s == "" {
		return w
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, _ := strconv.Atoi(v)
		w[k] = n
	}
	return w
}

func setCounter(c *VariantCounts, counter, val string) error {
	switch counter {
	case fLatSum, fRewardSum, fRewardSq:
		x, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return err
		}
		switch counter {
		case fLatSum:
			c.Latency.Sum = x
		case fRewardSum:
			c.RewardSum = x
		default:
			c.RewardSumSquares = x
		}
		return nil
	}
	n, err := strconv.ParseUint(val, 10, 64)
	if err != nil {
		return err
	}
	switch {
	case counter == fRequests:
		c.Requests = n
	case counter == fDecisions:
		c.Decisions = n
	case counter == fAssigned:
		c.Assigned = n
	case counter == fRewards:
		c.Rewards = n
	case strings.HasPrefix(counter, fLatency):
		if i, err := strconv.Atoi(counter[len(fLatency):]); err == nil && i >= 0 && i < NumBuckets {
			c.Latency.Counts[i] = n
		}
	case strings.HasPrefix(counter, fResponses):
		if i, err := strconv.Atoi(counter[len(fResponses):]); err == nil && i >= 0 && i < NumClasses {
			c.Responses[i] = n
		}
	}
	return nil
}
