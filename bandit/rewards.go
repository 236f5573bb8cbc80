package bandit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/stats"
)

// Bounds on what the reward join keeps in memory.
const (
	// MaxRequests is how many recent request ids (per process) are kept
	// to join rewards posted by request id, for RequestTTL.
	MaxRequests = 200_000
	RequestTTL  = 15 * time.Minute
	// MaxRewardIDs is how many reward ids are remembered (per process,
	// without Redis) so a retried post counts once; with Redis the ids
	// are kept there for RewardIDTTL, shared by replicas.
	MaxRewardIDs = 200_000
	RewardIDTTL  = 24 * time.Hour
)

// UserJoin finds the variant a user is assigned to (the decision engine).
type UserJoin interface {
	Lookup(ctx context.Context, endpoint, userKey string) (variant string, found bool, err error)
}

// Rewards turns answers and posted rewards into each arm's rewards,
// recorded into the stats windows (which replicas share through Redis).
// It is the observe filter's RewardObserver and serves the rewards API.
type Rewards struct {
	stats    *stats.Recorder
	metrics  *metrics.Metrics
	users    UserJoin
	settings atomic.Pointer[map[string]settings]

	requests *fifo[string] // endpoint \x00 request id → variant
	ids      dedup
}

type settings struct {
	source  string
	numeric bool
	budget  time.Duration
	header  string
}

// NewRewards returns the reward path; redis may be nil (ids remembered in
// process only).
func NewRewards(m *metrics.Metrics, users UserJoin, client redis.UniversalClient, keyPrefix string) *Rewards {
	r := &Rewards{stats: m.Stats, metrics: m, users: users, requests: newFIFO[string](MaxRequests, RequestTTL)}
	if client != nil {
		r.ids = redisDedup{c: client, prefix: keyPrefix + "reward:"}
	} else {
		r.ids = &memDedup{ids: newFIFO[struct{}](MaxRewardIDs, RewardIDTTL)}
	}
	empty := map[string]settings{}
	r.settings.Store(&empty)
	return r
}

// SetConfig takes each endpoint's bandit reward settings.
func (r *Rewards) SetConfig(cfg *config.Config) {
	m := map[string]settings{}
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		b := e.Bandit
		if b == nil {
			continue
		}
		s := settings{source: b.RewardSource(), numeric: b.Numeric, budget: b.LatencyBudget.D()}
		if s.source == "header" {
			s.header = b.HeaderName()
		}
		m[e.Name] = s
	}
	r.settings.Store(&m)
}

// RewardHeader implements extproc.RewardObserver.
func (r *Rewards) RewardHeader(endpoint string) (string, bool) {
	s, ok := (*r.settings.Load())[endpoint]
	return s.header, ok
}

// Observed implements extproc.RewardObserver: one answer of a bandit
// endpoint. success rewards 1 for a 2xx within the latency budget, else
// 0; header rewards the header's number (absent or malformed: counted,
// ignored); api keeps the request id so a reward posted for it joins
// the variant that answered. A request the bandit did not place (target
// header, rule) earns nothing.
func (r *Rewards) Observed(endpoint, variant string, class stats.Class, latency time.Duration, requestID, reward string, hasReward, unsampled bool) {
	s, ok := (*r.settings.Load())[endpoint]
	if !ok {
		return
	}
	if unsampled {
		r.count(endpoint, s.source, "unsampled")
		return
	}
	switch s.source {
	case "success":
		x := 0.0
		if class == stats.Class2xx && (s.budget == 0 || latency <= s.budget) {
			x = 1
		}
		r.record(endpoint, variant, s.source, x)
	case "header":
		if !hasReward {
			r.count(endpoint, s.source, "missing")
			return
		}
		x, err := parseReward(strings.TrimSpace(reward), s.numeric)
		if err != nil {
			r.count(endpoint, s.source, "invalid")
			return
		}
		r.record(endpoint, variant, s.source, x)
	case "api":
		if requestID != "" {
			r.requests.put(endpoint+"\x00"+requestID, variant)
		}
	}
}

func (r *Rewards) record(endpoint, variant, source string, x float64) {
	if v := r.stats.Variant(endpoint, variant); v != nil {
		v.Reward(x)
		r.count(endpoint, source, "counted")
	}
}

func (r *Rewards) count(endpoint, source, result string) {
	r.metrics.BanditRewards.WithLabelValues(endpoint, source, result).Inc()
}

// parseReward reads a reward: any finite number when numeric, else 0 or 1.
func parseReward(s string, numeric bool) (float64, error) {
	x, err := strconv.ParseFloat(s, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("must be a finite number, got %s", clip(s))
	case err != nil:
		return 0, fmt.Errorf("must be a number, got %s", clip(s))
	case math.IsNaN(x) || math.IsInf(x, 0):
		return 0, fmt.Errorf("must be a finite number, got %s", clip(s))
	case !numeric && x != 0 && x != 1:
		return 0, fmt.Errorf("must be 0 or 1 (the endpoint's rewards are binary), got %s", clip(s))
	}
	return x, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return strconv.Quote(s[:40]) + "…"
	}
	return s
}

// RequestError is a refused rewards post: Status is the HTTP status.
type RequestError struct {
	Status int
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

func badRequest(format string, args ...any) error {
	return &RequestError{Status: 400, Msg: fmt.Sprintf(format, args...)}
}

// Post takes a batch of rewards for endpoint. The whole batch is checked
// first (any malformed reward refuses it, naming the reward and the
// problem); then each is joined to the variant its user or request was
// served by. A reward id already seen counts once; one that names no
// known user or request is refused and counted.
func (r *Rewards) Post(ctx context.Context, cfg *config.Config, endpoint string, req api.RewardsRequest) (api.RewardsResult, error) {
	var res api.RewardsResult
	e, ok := cfg.Endpoint(endpoint)
	if !ok {
		return res, &RequestError{Status: 404, Msg: fmt.Sprintf("unknown endpoint %q", endpoint)}
	}
	if e.Bandit == nil {
		return res, &RequestError{Status: 404, Msg: fmt.Sprintf("endpoint %q has no bandit to reward", endpoint)}
	}
	if src := e.Bandit.RewardSource(); src != "api" {
		return res, &RequestError{Status: 409, Msg: fmt.Sprintf("endpoint %q's bandit takes its rewards from %s, not the API (bandit.reward: api)", endpoint, src)}
	}
	switch n := len(req.Rewards); {
	case n == 0:
		return res, badRequest(`body: "rewards" is required: [{"id": "r1", "user": "u1", "value": 1}]`)
	case n > api.MaxRewardBatch:
		return res, &RequestError{Status: 413, Msg: fmt.Sprintf("rewards: %d in one batch, at most %d", n, api.MaxRewardBatch)}
	}
	values := make([]float64, len(req.Rewards))
	for i, rw := range req.Rewards {
		f := fmt.Sprintf("rewards[%d]", i)
		switch {
		case rw.ID == "":
			return res, badRequest("%s.id: required (a retried post counts once per id)", f)
		case len(rw.ID) > 128:
			return res, badRequest("%s.id: at most 128 bytes, got %d", f, len(rw.ID))
		case (rw.User == "") == (rw.RequestID == ""):
			return res, badRequest("%s: give exactly one of user and request_id", f)
		case len(rw.User) > 256 || len(rw.RequestID) > 256:
			return res, badRequest("%s: user and request_id are at most 256 bytes", f)
		case len(rw.Value) == 0:
			return res, badRequest("%s.value: required", f)
		}
		raw := strings.TrimSpace(string(rw.Value))
		if strings.HasPrefix(raw, `"`) {
			return res, badRequest("%s.value: must be a JSON number, got the string %s", f, clip(raw))
		}
		x, err := parseReward(raw, e.Bandit.Numeric)
		if err != nil {
			return res, badRequest("%s.value: %v", f, err)
		}
		values[i] = x
	}
	for i, rw := range req.Rewards {
		variant, reason := r.join(ctx, endpoint, rw)
		if reason != "" {
			res.Refused = append(res.Refused, api.RefusedReward{Index: i, ID: rw.ID, Reason: reason})
			r.count(endpoint, "api", "unknown")
			continue
		}
		dup, err := r.ids.seen(ctx, endpoint, rw.ID)
		if err != nil {
			return res, &RequestError{Status: 503, Msg: fmt.Sprintf("rewards[%d]: the reward-id store is unavailable (%v); nothing after it was counted, post them again", i, err)}
		}
		if dup {
			res.Duplicates++
			r.count(endpoint, "api", "duplicate")
			continue
		}
		r.record(endpoint, variant, "api", values[i])
		res.Accepted++
	}
	return res, nil
}

// join is the variant that served rw's user or request, or why none.
func (r *Rewards) join(ctx context.Context, endpoint string, rw api.Reward) (string, string) {
	if rw.RequestID != "" {
		if v, ok := r.requests.get(endpoint + "\x00" + rw.RequestID); ok {
			return v, ""
		}
		return "", fmt.Sprintf("unknown request_id (not answered on this replica in the last %v, or forgotten past %d requests)", RequestTTL, MaxRequests)
	}
	if r.users == nil {
		return "", "users cannot be looked up"
	}
	v, ok, err := r.users.Lookup(ctx, endpoint, rw.User)
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		return "", "the assignment store is unavailable: " + err.Error()
	case !ok:
		return "", "unknown user (no variant assigned)"
	}
	return v, ""
}

// dedup remembers reward ids.
type dedup interface {
	seen(ctx context.Context, endpoint, id string) (bool, error)
}

type memDedup struct{ ids *fifo[struct{}] }

func (d *memDedup) seen(_ context.Context, endpoint, id string) (bool, error) {
	return !d.ids.putIfAbsent(endpoint+"\x00"+id, struct{}{}), nil
}

// redisDedup shares reward ids between replicas: SET NX with an expiry.
type redisDedup struct {
	c      redis.UniversalClient
	prefix string
}

func (d redisDedup) seen(ctx context.Context, endpoint, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ok, err := d.c.SetNX(ctx, d.prefix+endpoint+":"+id, 1, RewardIDTTL).Result()
	return !ok && err == nil, err
}

// fifo is a bounded map with an expiry: past its size the oldest entries
// go first.
type fifo[V any] struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	m     map[string]fifoEntry[V]
	order []string
	head  int
}

type fifoEntry[V any] struct {
	v  V
	at time.Time
}

func newFIFO[V any](max int, ttl time.Duration) *fifo[V] {
	return &fifo[V]{max: max, ttl: ttl, m: make(map[string]fifoEntry[V])}
}

func (f *fifo[V]) put(k string, v V) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.putLocked(k, v)
}

func (f *fifo[V]) putLocked(k string, v V) {
	if _, ok := f.m[k]; !ok {
		if len(f.order) < f.max {
			f.order = append(f.order, k)
		} else {
			delete(f.m, f.order[f.head])
			f.order[f.head] = k
			f.head = (f.head + 1) % f.max
		}
	}
	f.m[k] = fifoEntry[V]{v: v, at: time.Now()}
}

// putIfAbsent adds k unless present (and fresh); it reports whether it
// added it.
func (f *fifo[V]) putIfAbsent(k string, v V) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e, ok := f.m[k]; ok && time.Since(e.at) < f.ttl {
		return false
	}
	f.putLocked(k, v)
	return true
}

func (f *fifo[V]) get(k string) (V, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.m[k]
	if !ok || time.Since(e.at) >= f.ttl {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (f *fifo[V]) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.m)
}
