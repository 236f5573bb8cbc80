package cohort

import (
	"context"
	"errors"
	"math/bits"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
)

// Tuning of the Redis store. Reads are bounded by store.timeout; these
// govern how fast a dead Redis is detected and how writes are batched.
const (
	// Redis is marked down when downAfterFailures reads in a row failed
	// (error or over the budget) and at least downFailureRatio of the
	// reads in the last healthWindow did (counted once the window holds
	// healthMinReads), or when downAlways reads in a row failed whatever
	// the rate. A slow Redis that misses the budget on some reads (a
	// loaded machine) stays up: each late read falls back on its own, and
	// "down" (skip reads altogether) is kept for a Redis that fails most
	// of them. A dead one fails every read, so it is down after
	// downAfterFailures reads at any busy rate, downAlways at a slow one.
	downAfterFailures = 5
	downAlways        = 20
	downFailureRatio  = 0.5
	healthMinReads    = 10
	healthWindow      = time.Second
	healthBuckets     = 10
	probeInterval     = 200 * time.Millisecond // PING while down
	// upAfterProbes of the last probeWindow PINGs answered within the
	// read budget mark Redis up again. Holding probes to the budget (and
	// asking several) keeps a Redis that answers PING but too slowly for
	// reads from flapping between up and down; a majority rather than a
	// run lets one that is late now and then come back.
	upAfterProbes   = 3
	probeWindow     = 5
	writeQueueSize  = 16384   // pending write-behind assignments
	retryBufferSize = 100_000 // assignments kept while Redis is down
	writeBatch      = 256
	writeTimeout    = 2 * time.Second
	// closeBudget bounds Close: flushing the queue, then writing back what
	// was kept while Redis was down, if it answers.
	closeBudget = 5 * time.Second
	// refusedLogEvery spaces the warnings about writes Redis refuses.
	refusedLogEvery = time.Minute
)

// Reasons an assignment is never written (StoreWritesLost's label).
const (
	lostQueueFull = "queue_full"
	lostRetryFull = "retry_full"
	lostRefused   = "refused"
	lostShutdown  = "shutdown"
)

// readHealth tells a Redis that fails most reads from one that misses the
// budget now and then: consecutive failures and the failure ratio over a
// sliding window of healthBuckets buckets.
type readHealth struct {
	mu          sync.Mutex
	consecutive int
	buckets     [healthBuckets]healthBucket
}

type healthBucket struct {
	slot       int64 // unix nanoseconds / bucket width; which window slice this counts
	ok, failed int
}

// record counts one read and reports whether Redis should now be
// considered down.
func (h *readHealth) record(now time.Time, failed bool) bool {
	const width = int64(healthWindow / healthBuckets)
	slot := now.UnixNano() / width
	h.mu.Lock()
	defer h.mu.Unlock()
	b := &h.buckets[slot%healthBuckets]
	if b.slot != slot {
		*b = healthBucket{slot: slot}
	}
	if !failed {
		b.ok++
		h.consecutive = 0
		return false
	}
	b.failed++
	h.consecutive++
	switch {
	case h.consecutive >= downAlways:
		return true
	case h.consecutive < downAfterFailures:
		return false
	}
	var ok, bad int
	for i := range h.buckets {
		if x := &h.buckets[i]; x.slot > slot-healthBuckets {
			ok, bad = ok+x.ok, bad+x.failed
		}
	}
	return ok+bad >= healthMinReads && float64(bad) >= downFailureRatio*float64(ok+bad)
}

func (h *readHealth) reset() {
	h.mu.Lock()
	h.consecutive = 0
	h.buckets = [healthBuckets]healthBucket{}
	h.mu.Unlock()
}

// redisStore keeps assignments in Redis, shared by every replica. Reads
// have a budget; past it, or while Redis is down, the engine hashes
// instead. Writes are queued and pipelined in the background so a new
// assignment never waits for Redis, and kept for retry while Redis is down.
type redisStore struct {
	client  redis.UniversalClient
	log     *zap.Logger
	metrics *metrics.Metrics
	errors  [numOps]prometheus.Counter // StoreErrors by op, resolved once
	budget  time.Duration              // store.timeout: what a probe must answer within

	up     atomic.Bool
	health readHealth
	// lost and writeBacks are StoreWritesLost and StoreWriteBacks by
	// label, resolved once.
	lost       map[string]prometheus.Counter
	writeBacks [2]prometheus.Counter // stored, conflict
	refusedLog atomic.Int64          // unix nanoseconds of the last refused-write warning
	refusedN   atomic.Int64          // refused writes since that warning
	// noGetEx is set once Redis (older than 6.2) refuses GETEX: reads then
	// use GET, and the sticky TTL only counts from the first assignment.
	noGetEx atomic.Bool

	queue chan Assignment
	mu    sync.Mutex
	retry map[string]Assignment // key → newest write, bounded
	// inflight counts writes queued or being written, for Flush.
	inflight atomic.Int64

	stop      chan struct{}
	done      sync.WaitGroup
	closeOnce sync.Once
	closed    atomic.Bool
}

// NewRedisStore connects to the Redis named by cfg.Redis (URL forms in
// redisurl.go). Connection problems at start are not errors: the store
// starts down, the hash decides, and it recovers by itself once Redis
// answers. A malformed URL or CA file is an error.
func NewRedisStore(cfg config.Store, log *zap.Logger, m *metrics.Metrics) (Store, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if m == nil {
		m = metrics.New()
	}
	client, err := newUniversalClient(cfg)
	if err != nil {
		return nil, err
	}
	budget := cfg.Timeout.D()
	if budget <= 0 {
		budget = config.DefaultStoreTimeout.D()
	}
	s := &redisStore{client: client, log: log, metrics: m, budget: budget,
		queue: make(chan Assignment, writeQueueSize), retry: map[string]Assignment{}, stop: make(chan struct{})}
	for op := range numOps {
		s.errors[op] = m.StoreErrors.WithLabelValues(op.String())
	}
	s.lost = map[string]prometheus.Counter{}
	for _, r := range []string{lostQueueFull, lostRetryFull, lostRefused, lostShutdown} {
		s.lost[r] = m.StoreWritesLost.WithLabelValues(r)
	}
	s.writeBacks = [2]prometheus.Counter{m.StoreWriteBacks.WithLabelValues("stored"), m.StoreWriteBacks.WithLabelValues("conflict")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err = client.Ping(ctx).Err()
	cancel()
	if err != nil {
		log.Warn("redis unreachable at start; decisions fall back to hashing until it answers", zap.Error(err))
		s.metrics.StoreUp.Set(0)
	} else {
		s.up.Store(true)
		s.metrics.StoreUp.Set(1)
	}
	s.done.Add(2)
	go s.writer()
	go s.prober()
	return s, nil
}

// storeOp is the op label of StoreErrors.
type storeOp int

const (
	opGet storeOp = iota
	opPut
	opList
	numOps
)

func (o storeOp) String() string { return [...]string{"get", "put", "list"}[o] }

func (s *redisStore) Healthy() bool { return s.up.Load() }

// Client is the store's Redis client; live-control state shares it.
func (s *redisStore) Client() redis.UniversalClient { return s.client }

// CountUsers estimates the users under each counter key (PFCOUNT).
func (s *redisStore) CountUsers(ctx context.Context, keys []string) ([]int64, error) {
	cmds := make([]*redis.IntCmd, len(keys))
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.PFCount(ctx, k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(keys))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

func (s *redisStore) Get(ctx context.Context, key string, ttl time.Duration) (string, bool, error) {
	if !s.up.Load() {
		return "", false, ErrStoreDown
	}
	v, err := s.read(ctx, key, ttl)
	switch {
	case err == nil:
		s.health.record(time.Now(), false)
		return v, true, nil
	case errors.Is(err, redis.Nil):
		s.health.record(time.Now(), false)
		return "", false, nil
	default:
		s.readFailed(ctx, err, opGet)
		return "", false, err
	}
}

// read is GETEX with the sticky TTL (a read renews it), or GET without
// one: GETEX with no expiry would PERSIST the key.
func (s *redisStore) read(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if ttl <= 0 || s.noGetEx.Load() {
		return s.client.Get(ctx, key).Result()
	}
	v, err := s.client.GetEx(ctx, key, ttl).Result()
	if isUnknownCommand(err) {
		s.getExRefused()
		return s.client.Get(ctx, key).Result()
	}
	return v, err
}

// getExRefused switches reads to GET for good, saying so once.
func (s *redisStore) getExRefused() {
	if s.noGetEx.CompareAndSwap(false, true) {
		s.log.Warn("redis does not know GETEX (older than 6.2): sticky.ttl counts from the first assignment, not the last visit")
	}
}

// Lookup pipelines the list checks (SISMEMBER) and the assignment read,
// so they cost one round trip together.
func (s *redisStore) Lookup(ctx context.Context, l *Lookup) {
	l.In = make([]bool, len(l.Lists))
	if !s.up.Load() {
		l.Err, l.ListErr = ErrStoreDown, ErrStoreDown
		return
	}
	if len(l.Lists) == 0 {
		if l.Key != "" {
			l.Variant, l.Found, l.Err = s.Get(ctx, l.Key, l.TTL)
		}
		return
	}
	pipe := s.client.Pipeline()
	lists := make([]*redis.BoolCmd, len(l.Lists))
	for i, name := range l.Lists {
		lists[i] = pipe.SIsMember(ctx, name, l.Member)
	}
	var get *redis.StringCmd
	switch {
	case l.Key == "":
	case l.TTL > 0 && !s.noGetEx.Load():
		get = pipe.GetEx(ctx, l.Key, l.TTL)
	default:
		get = pipe.Get(ctx, l.Key)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	for i, c := range lists {
		if err := c.Err(); err != nil {
			l.ListErr = err
			break
		}
		l.In[i] = c.Val()
	}
	if get != nil {
		switch err := get.Err(); {
		case err == nil:
			l.Variant, l.Found = get.Val(), true
		case errors.Is(err, redis.Nil):
		case isUnknownCommand(err):
			s.getExRefused() // Redis older than 6.2: read again with GET
			l.Variant, l.Found, l.Err = s.Get(ctx, l.Key, l.TTL)
		default:
			l.Err = err
		}
	}
	switch {
	case l.Err != nil && !errors.Is(l.Err, ErrStoreDown):
		s.readFailed(ctx, l.Err, opGet)
	case l.ListErr != nil:
		s.readFailed(ctx, l.ListErr, opList)
	default:
		s.health.record(time.Now(), false)
	}
}

func isUnknownCommand(err error) bool {
	var reply redis.Error
	return err != nil && errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "ERR unknown command")
}

func (s *redisStore) readFailed(ctx context.Context, err error, op storeOp) {
	if errors.Is(ctx.Err(), context.Canceled) {
		// The caller went away (client hung up); says nothing about Redis.
		return
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		s.metrics.StoreTimeouts.Inc()
	} else {
		s.errors[op].Inc()
	}
	if !isConnectionError(err) && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// An error reply (e.g. a foreign value under one key): Redis is up.
		return
	}
	if s.health.record(time.Now(), true) {
		s.markDown(err)
	}
}

func (s *redisStore) markDown(err error) {
	if s.up.CompareAndSwap(true, false) {
		s.metrics.StoreUp.Set(0)
		s.metrics.StoreDown.Inc()
		s.log.Warn("redis marked down; decisions fall back to the weighted hash until it answers again", zap.Error(err))
	}
}

func (s *redisStore) markUp() {
	s.health.reset()
	if s.up.CompareAndSwap(false, true) {
		s.metrics.StoreUp.Set(1)
		s.log.Info("redis reachable again; stored assignments are read again")
	}
}

// PutIfAbsent queues the write; it never blocks. A full queue drops the
// write (counted): the hash gives the same answer until weights change.
func (s *redisStore) PutIfAbsent(a Assignment) {
	if s.closed.Load() {
		s.lost[lostShutdown].Inc()
		return
	}
	s.inflight.Add(1)
	select {
	case s.queue <- a:
	default:
		s.inflight.Add(-1)
		s.lost[lostQueueFull].Inc()
	}
}

// writer drains the queue in pipelined batches of SET NX.
func (s *redisStore) writer() {
	defer s.done.Done()
	batch := make([]Assignment, 0, writeBatch)
	for {
		select {
		case <-s.stop:
			return
		case w := <-s.queue:
			batch = append(batch[:0], w)
		drain:
			for len(batch) < writeBatch {
				select {
				case w := <-s.queue:
					batch = append(batch, w)
				default:
					break drain
				}
			}
			s.write(batch)
			s.inflight.Add(-int64(len(batch)))
		}
	}
}

func (s *redisStore) write(batch []Assignment) {
	if !s.up.Load() {
		s.keepForRetry(batch)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	cmds := make([]*redis.BoolCmd, len(batch))
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, w := range batch {
			cmds[i] = p.SetNX(ctx, w.Key, w.Variant, w.TTL)
			if w.Users != "" {
				// Counted whether or not SET NX wins: another replica
				// counts the same user hash into the same (idempotent)
				// HyperLogLog only when it picked the same variant.
				p.PFAdd(ctx, w.Users, w.Key)
			}
		}
		return nil
	})
	if err != nil {
		s.errors[opPut].Inc()
	}
	// Each SET NX on its own: a pipeline can fail part-way, and Redis
	// may refuse some commands (OOM) and take others.
	var unanswered []Assignment
	var unansweredErr, refusedErr error
	refused := 0
	for i, c := range cmds {
		switch cerr := c.Err(); {
		case cerr == nil:
			// Not set: another replica (or an earlier decision) stored
			// first; the stored one is the assignment, so drop our
			// in-process copy.
			if !c.Val() && batch[i].OnConflict != nil {
				batch[i].OnConflict()
			}
			if batch[i].WriteBack {
				s.writeBacks[boolIndex(!c.Val())].Inc()
			}
		case isConnectionError(cerr):
			unanswered, unansweredErr = append(unanswered, batch[i]), cerr
		default:
			// Refused (OOM under maxmemory with noeviction, a foreign key
			// of another type): retrying now would be refused again.
			refused++
			refusedErr = cerr
		}
	}
	if refused > 0 {
		s.lost[lostRefused].Add(float64(refused))
		s.warnRefused(refused, refusedErr)
	}
	if len(unanswered) > 0 {
		s.keepForRetry(unanswered)
		s.markDown(unansweredErr)
	}
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// warnRefused logs refused writes at most once per refusedLogEvery, with
// how many were refused since the last warning.
func (s *redisStore) warnRefused(n int, err error) {
	total := s.refusedN.Add(int64(n))
	now := time.Now().UnixNano()
	last := s.refusedLog.Load()
	if now-last < int64(refusedLogEvery) || !s.refusedLog.CompareAndSwap(last, now) {
		return
	}
	s.refusedN.Add(-total)
	s.log.Warn("redis refused assignment writes; counted in modelsplit_store_writes_lost_total{reason=\"refused\"} "+
		"(those users keep their variant on this replica only)", zap.Int64("refused", total), zap.Error(err))
}

// isConnectionError tells an unavailable Redis from a definite error
// reply. Everything that is not a reply (lost or refused connection, EOF,
// timeout, pool exhausted, closed client) means unavailable, and so do the
// replies of a Redis that is not serving yet or any more: loading after a
// restart, read-only replica after a failover, cluster down, try again,
// master down, too many clients.
func isConnectionError(err error) bool {
	var reply redis.Error
	if !errors.As(err, &reply) {
		return true
	}
	return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsMasterDownError(err) || redis.IsMaxClientsError(err)
}

func (s *redisStore) keepForRetry(batch []Assignment) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range batch {
		if _, kept := s.retry[w.Key]; kept {
			continue // the first decision is the one the user was served first
		}
		if len(s.retry) >= retryBufferSize {
			s.lost[lostRetryFull].Inc()
			continue
		}
		s.retry[w.Key] = w
	}
}

// prober checks a down Redis and, once it answers, replays the writes
// kept while it was down (SET NX: never over an existing assignment).
func (s *redisStore) prober() {
	defer s.done.Done()
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	var recent probes
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if s.up.Load() && s.retryLen() == 0 {
			recent = 0
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.budget)
		err := s.client.Ping(ctx).Err()
		cancel()
		enough := recent.add(err == nil)
		if err != nil {
			continue
		}
		if !s.up.Load() && !enough {
			continue
		}
		recent = 0
		s.markUp()
		s.replay()
	}
}

// probes are the outcomes of the last probeWindow probes, newest in bit 0:
// 1 answered in time.
type probes uint8

// add records a probe's outcome and reports whether upAfterProbes of the
// window answered in time: enough for a down Redis to count as up.
func (p *probes) add(answered bool) bool {
	*p = (*p << 1) & (1<<probeWindow - 1)
	if answered {
		*p |= 1
	}
	return bits.OnesCount8(uint8(*p)) >= upAfterProbes
}

func (s *redisStore) retryLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.retry)
}

func (s *redisStore) replay() { s.replayUntil(context.Background()) }

// replayUntil writes back what was kept while Redis was down, in batches
// (SET NX: never over an existing assignment), until ctx ends; what is
// not written stays kept.
func (s *redisStore) replayUntil(ctx context.Context) {
	s.mu.Lock()
	pending := make([]Assignment, 0, len(s.retry))
	for _, w := range s.retry {
		pending = append(pending, w)
	}
	s.retry = map[string]Assignment{}
	s.mu.Unlock()
	for len(pending) > 0 && ctx.Err() == nil {
		n := min(writeBatch, len(pending))
		s.write(pending[:n])
		pending = pending[n:]
	}
	s.keepForRetry(pending)
	if n := s.retryLen(); n == 0 {
		s.log.Debug("replayed assignments kept while redis was down")
	}
}

// Flush waits for queued writes to be attempted.
func (s *redisStore) Flush(ctx context.Context) error {
	for s.inflight.Load() > 0 && !s.closed.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// Close flushes queued writes, stops the background work, writes back
// what was kept while Redis was down if it answers now (all within
// closeBudget) and closes the client. Later writes are dropped (counted);
// closing twice is harmless.
func (s *redisStore) Close() error {
	var err error
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeBudget)
		defer cancel()
		flushCtx, cancelFlush := context.WithTimeout(ctx, closeBudget/2)
		_ = s.Flush(flushCtx)
		cancelFlush()
		s.closed.Store(true)
		close(s.stop)
		s.done.Wait()
		s.inflight.Store(0)
		// Whatever is still queued joins what was kept for retry; if
		// Redis answers (it may have been marked down by a few slow
		// reads), write it all now rather than lose it.
		var queued []Assignment
	drain:
		for {
			select {
			case w := <-s.queue:
				queued = append(queued, w)
			default:
				break drain
			}
		}
		s.keepForRetry(queued)
		if s.retryLen() > 0 && s.client.Ping(ctx).Err() == nil {
			s.markUp()
			s.replayUntil(ctx)
		}
		// Whatever is left will never be written: count it, and say so once.
		if lost := s.retryLen(); lost > 0 {
			s.lost[lostShutdown].Add(float64(lost))
			s.log.Warn("closing with assignments never written to redis; those users are hashed again on return", zap.Int("assignments", lost))
		}
		err = s.client.Close()
	})
	return err
}
