package cohort

import (
	"context"
	"errors"
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
	downAfterFailures = 3                      // consecutive failed reads before "down"
	probeInterval     = 200 * time.Millisecond // PING while down
	// upAfterProbes consecutive PINGs answered within the read budget mark
	// Redis up again. Holding probes to the budget (and asking several)
	// keeps a Redis that answers PING but too slowly for reads from
	// flapping between up and down.
	upAfterProbes   = 3
	writeQueueSize  = 16384   // pending write-behind assignments
	retryBufferSize = 100_000 // assignments kept while Redis is down
	writeBatch      = 256
	writeTimeout    = 2 * time.Second
)

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

	up       atomic.Bool
	failures atomic.Int32
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
		s.failures.Store(0)
		return v, true, nil
	case errors.Is(err, redis.Nil):
		s.failures.Store(0)
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
		s.failures.Store(0)
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
	if s.failures.Add(1) >= downAfterFailures {
		s.markDown(err)
	}
}

func (s *redisStore) markDown(err error) {
	if s.up.CompareAndSwap(true, false) {
		s.metrics.StoreUp.Set(0)
		s.log.Warn("redis marked down; decisions fall back to the weighted hash until it answers again", zap.Error(err))
	}
}

func (s *redisStore) markUp() {
	s.failures.Store(0)
	if s.up.CompareAndSwap(false, true) {
		s.metrics.StoreUp.Set(1)
		s.log.Info("redis reachable again; stored assignments are read again")
	}
}

// PutIfAbsent queues the write; it never blocks. A full queue drops the
// write (counted): the hash gives the same answer until weights change.
func (s *redisStore) PutIfAbsent(a Assignment) {
	if s.closed.Load() {
		s.metrics.StoreWritesLost.Inc()
		return
	}
	s.inflight.Add(1)
	select {
	case s.queue <- a:
	default:
		s.inflight.Add(-1)
		s.metrics.StoreWritesLost.Inc()
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
	switch {
	case err != nil && !isConnectionError(err):
		// Redis answered with an error (e.g. a foreign key of another type
		// under our prefix): retrying will not help, and Redis is up.
		s.errors[opPut].Inc()
		s.log.Debug("redis refused an assignment write", zap.Error(err))
	case err != nil:
		s.errors[opPut].Inc()
		s.keepForRetry(batch)
		s.markDown(err)
		return
	}
	for i, c := range cmds {
		// Not set: another replica (or an earlier decision) stored first;
		// the stored one is the assignment, so drop our in-process copy.
		if c.Err() == nil && !c.Val() && batch[i].OnConflict != nil {
			batch[i].OnConflict()
		}
	}
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
		if len(s.retry) >= retryBufferSize {
			s.metrics.StoreWritesLost.Inc()
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
	answered := 0 // consecutive successful probes
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if s.up.Load() && s.retryLen() == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.budget)
		err := s.client.Ping(ctx).Err()
		cancel()
		if err != nil {
			answered = 0
			continue
		}
		if answered++; !s.up.Load() && answered < upAfterProbes {
			continue
		}
		answered = 0
		s.markUp()
		s.replay()
	}
}

func (s *redisStore) retryLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.retry)
}

func (s *redisStore) replay() {
	s.mu.Lock()
	pending := make([]Assignment, 0, len(s.retry))
	for _, w := range s.retry {
		pending = append(pending, w)
	}
	s.retry = map[string]Assignment{}
	s.mu.Unlock()
	for len(pending) > 0 {
		n := min(writeBatch, len(pending))
		s.write(pending[:n])
		pending = pending[n:]
	}
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

// Close flushes queued writes (up to 2s), stops the background work and
// closes the client. Later writes are dropped (counted); closing twice is
// harmless.
func (s *redisStore) Close() error {
	var err error
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.Flush(ctx)
		cancel()
		s.closed.Store(true)
		close(s.stop)
		s.done.Wait()
		s.inflight.Store(0)
		// Whatever is still queued or kept for retry (Redis down at
		// shutdown) will never be written: count it, and say so once.
		lost := len(s.queue) + s.retryLen()
		if lost > 0 {
			s.metrics.StoreWritesLost.Add(float64(lost))
			s.log.Warn("closing with assignments never written to redis; those users are hashed again on return", zap.Int("assignments", lost))
		}
		err = s.client.Close()
	})
	return err
}
