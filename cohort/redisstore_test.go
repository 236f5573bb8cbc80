package cohort_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// With Redis hung, writes pile up: the queue is bounded, the overflow is
// dropped and counted, and no caller ever waits.
func TestWriteQueueIsBoundedAndNeverBlocks(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	r.Pause()
	defer r.Resume()
	const n = 50_000
	start := time.Now()
	for i := 0; i < n; i++ {
		store.PutIfAbsent(cohort.Assignment{Key: fmt.Sprintf("t:a:q:%d", i), Variant: "v0"})
	}
	// Non-blocking writes take milliseconds; a blocked one never returns
	// while Redis hangs. 10s is a margin, not a speed claim.
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("%d writes against a hung redis took %v: PutIfAbsent blocked", n, took)
	}
	if lost := writesLost(m); lost == 0 || lost >= n {
		t.Errorf("writes lost = %v of %d, want some (the queue is bounded) but not all", lost, n)
	}
	// Dropped writes are not waited for: Flush returns once the queued
	// ones have been attempted (kept for retry, Redis being down by now).
	r.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := store.Flush(ctx); err != nil {
		t.Errorf("Flush after the queue overflowed: %v", err)
	}
}

// Closing twice is harmless; writes after Close are dropped, and Flush
// does not wait for them.
func TestRedisStoreCloseIsFinal(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	store.Close()
	store.PutIfAbsent(cohort.Assignment{Key: "t:a:late", Variant: "v0"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := store.Flush(ctx); err != nil {
		t.Errorf("Flush after Close: %v", err)
	}
	if writesLost(m) != 1 {
		t.Error("a write after Close was not counted as lost")
	}
	if _, _, err := store.Get(ctx, "t:a:late", 0); err == nil {
		t.Error("Get on a closed store succeeded")
	}
}

// Redis going down and coming back is logged once each (Warn, then Info),
// however many decisions run meanwhile; nothing else reaches Info, and no
// log line carries a user id.
func TestStoreStateChangesLoggedOnceWithoutUserIDs(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	r := testredis.Start(t)
	m := metrics.New()
	store, err := cohort.NewRedisStore(config.Store{Redis: r.URL(), Timeout: config.Duration(50 * time.Millisecond)}, log, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := cohort.NewEngine(store, cohort.Options{Logger: log, Metrics: m})
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Store.Timeout = config.Duration(50 * time.Millisecond)
	e.SetConfig(cfg)
	run := func(tag string) {
		for i := 0; i < 300; i++ {
			if _, err := e.Decide(context.Background(), "m", user(fmt.Sprintf("secret-user-%s-%d", tag, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	run("up")
	r.Kill()
	run("down")
	r.Restart()
	waitHealthy(t, store)
	run("again")
	e.Close()

	var warns, infos int
	for _, entry := range logs.All() {
		text := entry.Message + fmt.Sprint(entry.ContextMap())
		if strings.Contains(text, "secret-user") {
			t.Errorf("user id in log: %s", text)
		}
		switch {
		case entry.Level == zap.WarnLevel && strings.Contains(entry.Message, "marked down"):
			warns++
		case entry.Level == zap.InfoLevel && strings.Contains(entry.Message, "reachable again"):
			infos++
		case entry.Level >= zap.InfoLevel:
			t.Errorf("unexpected %s log: %s", entry.Level, text)
		}
	}
	if warns != 1 || infos != 1 {
		t.Errorf("logged down %d times and up %d times, want once each", warns, infos)
	}
	t.Logf("%d log entries in all (debug included)", logs.Len())
}

// An error reply for one key (a foreign value of another type under our
// prefix) is counted but does not mark a healthy Redis down.
func TestErrorRepliesDoNotMarkRedisDown(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := redisClient(t, r).SAdd(ctx, "t:a:wrongtype", "x").Err(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, _, err := store.Get(ctx, "t:a:wrongtype", time.Hour); err == nil {
			t.Fatal("GET of a set succeeded")
		}
	}
	// In a pipelined Lookup an error reply fails only its own command.
	if err := redisClient(t, r).Set(ctx, "t:list:not-a-set", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := redisClient(t, r).Set(ctx, "t:a:stored", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	l := &cohort.Lookup{Key: "t:a:stored", TTL: time.Hour, Member: "u", Lists: []string{"t:list:not-a-set"}}
	store.Lookup(ctx, l)
	if l.ListErr == nil || l.Err != nil || !l.Found || l.Variant != "v1" {
		t.Errorf("lookup with a WRONGTYPE list: %+v, want the list failed and the assignment read", l)
	}
	if !store.Healthy() {
		t.Error("error replies marked Redis down")
	}
	if got := testutil.ToFloat64(m.StoreErrors.WithLabelValues("get")); got != 10 {
		t.Errorf("store errors{op=get} = %v, want 10", got)
	}
	if got := testutil.ToFloat64(m.StoreErrors.WithLabelValues("list")); got != 1 {
		t.Errorf("store errors{op=list} = %v, want 1", got)
	}
}

// Closing while Redis is down loses the assignments kept for retry; they
// are counted, not dropped silently.
func TestCloseWhileDownCountsUnwrittenAssignments(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	core, logs := observer.New(zap.InfoLevel)
	store, err := cohort.NewRedisStore(config.Store{Redis: r.URL(), KeyPrefix: "t:", Timeout: config.Duration(50 * time.Millisecond)}, zap.New(core), m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e, _ := newEngine(t, store, splitConfig(t, r.URL(), 50, 50))
	r.Kill()
	for i := 0; i < 100; i++ {
		if d := decide(t, e, user(fmt.Sprintf("unwritten-%d", i))); d.Source != cohort.SourceFallback && d.Source != cohort.SourceHash {
			t.Fatalf("decision %d with redis killed: %s", i, d.Source)
		}
	}
	flush(t, e)
	if lost := writesLost(m); lost != 0 {
		t.Fatalf("%v writes counted lost before Close; they should wait for Redis", lost)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if lost := writesLost(m); lost != 100 {
		t.Errorf("closing with 100 unwritten assignments counted %v lost", lost)
	}
	if up := testutil.ToFloat64(m.StoreUp); up != 0 {
		t.Errorf("store_up %v after closing with redis down, want 0 (Close writes back only if redis answers)", up)
	}
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "reachable again") {
			t.Errorf("Close with redis down logged %q", e.Message)
		}
	}
}

// Closing a store that slow reads marked down, while Redis answers again
// (before the prober, which wants 3 answered probes, brought it up), writes
// back what was kept rather than lose it: when the same Redis resumes, and
// when it restarted, leaving dead connections in the store's pool.
func TestCloseWritesBackWhenRedisAnswers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		comes func(*testredis.Server)
	}{
		{"resumed", (*testredis.Server).Resume},
		{"restarted", (*testredis.Server).Restart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testredis.Start(t)
			m := metrics.New()
			store := redisStore(t, r.URL(), m)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// Several connections in the pool, each used once.
			var wg sync.WaitGroup
			for i := 0; i < 8; i++ {
				wg.Go(func() { store.Get(ctx, fmt.Sprintf("t:a:warm-%d", i), 0) })
			}
			wg.Wait()
			r.Pause()
			for i := 0; i < 10 && store.Healthy(); i++ {
				short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
				store.Get(short, "t:a:k", 0)
				cancelShort()
			}
			if store.Healthy() {
				r.Resume()
				t.Fatal("still up after 10 reads from a paused redis")
			}
			for i := 0; i < 3; i++ {
				store.PutIfAbsent(cohort.Assignment{Key: fmt.Sprintf("t:a:back-%d", i), Variant: "v0", TTL: time.Hour})
			}
			if err := store.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			tc.comes(r)
			if err := store.Close(); err != nil {
				t.Fatal(err)
			}
			if k, lost := redisKeys(t, r), writesLost(m); k != 3 || lost != 0 {
				t.Errorf("%d keys, %v lost after Close; want the 3 kept written back", k, lost)
			}
		})
	}
}

// Closing with nothing left to write says nothing, not even at debug level
// (there is nothing to write back).
func TestCloseWithNothingPendingIsQuiet(t *testing.T) {
	r := testredis.Start(t)
	core, logs := observer.New(zap.DebugLevel)
	m := metrics.New()
	store, err := cohort.NewRedisStore(config.Store{Redis: r.URL(), KeyPrefix: "t:", Timeout: config.Duration(time.Second)}, zap.New(core), m)
	if err != nil {
		t.Fatal(err)
	}
	store.PutIfAbsent(cohort.Assignment{Key: "t:a:written", Variant: "v0", TTL: time.Hour})
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	for _, e := range logs.All() {
		t.Errorf("logged at close: %s %v", e.Message, e.ContextMap())
	}
	if k := redisKeys(t, r); k != 1 || writesLost(m) != 0 {
		t.Errorf("%d keys, %v lost after Close; want the queued write written", k, writesLost(m))
	}
}

// A Redis that refuses connections fails each read at once (an error), not
// by running out the read budget in dial retries (a timeout); soon the
// store is down and reads are skipped.
func TestRefusedConnectionsFailFast(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Store.Timeout = config.Duration(10 * time.Millisecond)
	cfg.Endpoints[0].Rules = nil
	e, _ := newEngine(t, store, cfg)
	r.Kill()
	for i := 0; i < 10; i++ {
		if d := decide(t, e, user(fmt.Sprintf("refused-%d", i))); d.Source != cohort.SourceFallback {
			t.Fatalf("decision %d with redis refusing: %s, want fallback", i, d.Source)
		}
	}
	if store.Healthy() {
		t.Error("store still up after 10 refused reads")
	}
	if got := testutil.ToFloat64(m.StoreTimeouts); got != 0 {
		t.Errorf("%v reads ran out their budget against a refusing redis; want errors at once", got)
	}
	// With no read answered yet, ten failed reads (the health window's
	// minimum) mark it down, or fewer when a failed write-behind batch got
	// there first: how many depends on when the writer runs, so only the
	// bound is fixed. Then reads are skipped.
	if got := testutil.ToFloat64(m.StoreErrors.WithLabelValues("get")); got < 1 || got > 10 {
		t.Errorf("store errors{op=get} = %v, want 1 to 10", got)
	}
}

// Each new user's assignment is counted in its variant's HyperLogLog as it
// is written, once however often the user returns; CountUsers reads the
// counts in one round trip, and fails when Redis is gone.
func TestRedisCountsUsersPerVariant(t *testing.T) {
	r := testredis.Start(t)
	store := redisStore(t, r.URL(), metrics.New())
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Endpoints[0].Rules = nil
	e, _ := newEngine(t, store, cfg)
	want := map[string]int64{}
	const n = 200
	for i := 0; i < n; i++ {
		d := decide(t, e, user(fmt.Sprintf("counted-%d", i)))
		if d.Source != cohort.SourceHash {
			t.Fatalf("new user %d decided by %s, want the hash", i, d.Source)
		}
		want[d.Variant]++
	}
	flush(t, e)
	for i := 0; i < n; i += 2 { // returning users are not counted again
		decide(t, e, user(fmt.Sprintf("counted-%d", i)))
	}
	flush(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := e.Users(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	if want["v0"] == 0 || want["v1"] == 0 {
		t.Fatalf("decisions %v: want both variants picked", want)
	}
	// A HyperLogLog estimate; at a few hundred users Redis's is within a
	// user or two.
	for i, v := range []string{"v0", "v1"} {
		if d := got[i] - want[v]; d < -3 || d > 3 {
			t.Errorf("users of %s: counted %d, assigned %d", v, got[i], want[v])
		}
	}
	many, err := e.UsersMany(ctx, []string{"m", "no-such-endpoint"})
	if err != nil || len(many) != 1 || !slices.Equal(many["m"], got) {
		t.Errorf("UsersMany: %v %v, want m: %v", many, err, got)
	}
	r.Kill()
	if got, err := e.Users(ctx, "m"); err == nil {
		t.Errorf("counting users with redis killed: %v, no error", got)
	}
}

// A read without a sticky TTL leaves the key's expiry alone: it must not
// become GETEX without options, which PERSISTs the key. The pipelined
// Lookup reads the same way, with lists (one round trip) or without. A read
// with a TTL renews it, also after a read that found nothing.
func TestReadWithoutTTLKeepsExpiry(t *testing.T) {
	r := testredis.Start(t)
	store := redisStore(t, r.URL(), metrics.New())
	c := redisClient(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ttlOf := func(key string) time.Duration {
		t.Helper()
		d, err := c.TTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if v, ok, err := store.Get(ctx, "t:a:absent", 24*time.Hour); err != nil || ok {
		t.Fatalf("Get of an absent key: %q %v %v, want not found and no error", v, ok, err)
	}
	keys := []string{"t:a:get", "t:a:lookup", "t:a:lookup-no-list"}
	redisAdd(t, r, "t:list:l", "u")
	for _, key := range keys {
		if err := c.Set(ctx, key, "v1", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	lookups := func(ttl time.Duration) {
		t.Helper()
		if v, ok, err := store.Get(ctx, "t:a:get", ttl); err != nil || !ok || v != "v1" {
			t.Fatalf("Get (TTL %v): %q %v %v", ttl, v, ok, err)
		}
		for _, l := range []*cohort.Lookup{
			{Key: "t:a:lookup", TTL: ttl, Member: "u", Lists: []string{"t:list:l"}},
			{Key: "t:a:lookup-no-list", TTL: ttl},
		} {
			store.Lookup(ctx, l)
			if l.Err != nil || l.ListErr != nil || !l.Found || l.Variant != "v1" || len(l.In) != len(l.Lists) || (len(l.In) > 0 && !l.In[0]) {
				t.Fatalf("Lookup (TTL %v): %+v, want v1 found (and u in the list)", ttl, l)
			}
		}
	}
	lookups(0)
	for _, key := range keys {
		if d := ttlOf(key); d <= 0 || d > time.Hour {
			t.Errorf("%s: TTL %v after a read without TTL, want the hour it was set with", key, d)
		}
	}
	// With a TTL the read sets it: a day, whatever it was.
	lookups(24 * time.Hour)
	for _, key := range keys {
		if d := ttlOf(key); d <= time.Hour {
			t.Errorf("%s: TTL %v after a read with a 24h TTL, want it renewed to 24h", key, d)
		}
	}
	// Neither key nor lists: nothing to read, nothing found.
	l := &cohort.Lookup{Member: "u"}
	store.Lookup(ctx, l)
	if l.Found || l.Err != nil || l.ListErr != nil {
		t.Errorf("empty Lookup: %+v", l)
	}
}

// A read that times out on the connection (the URL's read_timeout, before
// the caller's deadline) counts as a timeout, not an error; so does one
// that runs out the caller's deadline.
func TestReadTimeoutsCountedAsTimeouts(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL()+"?read_timeout=100ms", m)
	r.Pause()
	defer r.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := store.Get(ctx, "t:a:hung", time.Hour); err == nil || ctx.Err() != nil {
		t.Fatalf("read from a paused redis: %v (caller's context: %v), want the connection's read timeout first", err, ctx.Err())
	}
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	if _, _, err := store.Get(short, "t:a:hung", time.Hour); err == nil {
		t.Fatal("read from a paused redis succeeded")
	}
	if got, errs := testutil.ToFloat64(m.StoreTimeouts), testutil.ToFloat64(m.StoreErrors.WithLabelValues("get")); got != 2 || errs != 0 {
		t.Errorf("timeouts %v, errors{op=get} %v; want 2 timeouts, no errors", got, errs)
	}
}

// Reads alone mark a Redis that refuses connections down: with none
// answered, the tenth failed read does it (no write-behind batch here to
// get there first). A read whose caller went away says nothing about
// Redis: it is neither counted nor held against it.
func TestRefusedReadsMarkRedisDown(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	r.Kill()
	gone, cancelGone := context.WithCancel(context.Background())
	cancelGone()
	for i := 0; i < 30; i++ {
		if _, _, err := store.Get(gone, "t:a:k", time.Hour); err == nil {
			t.Fatal("read with a canceled context succeeded")
		}
	}
	if !store.Healthy() || testutil.ToFloat64(m.StoreErrors.WithLabelValues("get")) != 0 || testutil.ToFloat64(m.StoreTimeouts) != 0 {
		t.Fatalf("after reads whose caller went away: healthy %v, errors %v, timeouts %v; want up, none counted",
			store.Healthy(), testutil.ToFloat64(m.StoreErrors.WithLabelValues("get")), testutil.ToFloat64(m.StoreTimeouts))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 1; i <= 10; i++ {
		if _, _, err := store.Get(ctx, "t:a:k", time.Hour); err == nil {
			t.Fatalf("read %d from a killed redis succeeded", i)
		}
		if up := store.Healthy(); up != (i < 10) {
			t.Fatalf("after %d refused reads: healthy %v", i, up)
		}
	}
	if got := testutil.ToFloat64(m.StoreErrors.WithLabelValues("get")); got != 10 {
		t.Errorf("errors{op=get} = %v, want 10", got)
	}
	if _, _, err := store.Get(ctx, "t:a:k", time.Hour); !errors.Is(err, cohort.ErrStoreDown) {
		t.Errorf("read once down: %v, want ErrStoreDown without asking redis", err)
	}
}

// A write Redis refuses (OOM under maxmemory with noeviction) is counted
// lost, warned about once, and does not mark Redis down: retrying would be
// refused again.
func TestRefusedWritesCountedNotRetried(t *testing.T) {
	r := testredis.Start(t)
	core, logs := observer.New(zap.WarnLevel)
	m := metrics.New()
	store, err := cohort.NewRedisStore(config.Store{Redis: r.URL(), KeyPrefix: "t:", Timeout: config.Duration(time.Second)}, zap.New(core), m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if reply, err := r.Do(ctx, "CONFIG", "SET", "maxmemory", "1"); err != nil || reply != "+OK" {
		t.Fatalf("CONFIG SET maxmemory: %q %v", reply, err)
	}
	for i := 0; i < 3; i++ {
		store.PutIfAbsent(cohort.Assignment{Key: fmt.Sprintf("t:a:oom-%d", i), Variant: "v0", TTL: time.Hour})
	}
	if err := store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.StoreWritesLost.WithLabelValues("refused")); got != 3 {
		t.Errorf("writes lost{refused} = %v, want 3", got)
	}
	if !store.Healthy() {
		t.Error("refused writes marked redis down")
	}
	if warned := logs.FilterMessageSnippet("refused assignment writes").Len(); warned != 1 {
		t.Errorf("refused writes warned about %d times, want once", warned)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.StoreWritesLost.WithLabelValues("shutdown")); got != 0 {
		t.Errorf("lost{shutdown} = %v: refused writes were kept for retry", got)
	}
	if k := redisKeys(t, r); k != 0 {
		t.Errorf("%d keys written under maxmemory 1", k)
	}
}

// A Redis that has become a read-only replica (after a failover) answers
// writes READONLY: that is Redis unavailable for writes, not a refusal.
// The store goes down, keeps the writes, and writes them once the server
// is a master again.
func TestReadOnlyReplicaWritesKeptUntilMaster(t *testing.T) {
	r := testredis.Start(t)
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	gone := testredis.Start(t)
	gone.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	host, port, _ := strings.Cut(gone.Addr(), ":")
	if reply, err := r.Do(ctx, "REPLICAOF", host, port); err != nil || reply != "+OK" {
		t.Fatalf("REPLICAOF: %q %v", reply, err)
	}
	for i := 0; i < 3; i++ {
		store.PutIfAbsent(cohort.Assignment{Key: fmt.Sprintf("t:a:ro-%d", i), Variant: "v0", TTL: time.Hour})
	}
	if err := store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if store.Healthy() {
		t.Error("writes answered READONLY left the store up")
	}
	if lost := writesLost(m); lost != 0 {
		t.Errorf("%v writes lost; READONLY writes must be kept for retry", lost)
	}
	if reply, err := r.Do(ctx, "REPLICAOF", "NO", "ONE"); err != nil || reply != "+OK" {
		t.Fatalf("REPLICAOF NO ONE: %q %v", reply, err)
	}
	waitHealthy(t, store)
	for redisKeys(t, r) != 3 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if k := redisKeys(t, r); k != 3 {
		t.Errorf("%d keys after the server became master again, want the 3 kept", k)
	}
}

// The replies of a Redis that is not serving (a replica that lost its
// master and serves no stale data: MASTERDOWN; a cluster node whose slots
// are not served: CLUSTERDOWN) mean Redis is unavailable, not a bad key:
// reads that get them mark it down like refused connections do.
func TestNotServingRepliesMarkRedisDown(t *testing.T) {
	setups := map[string]struct {
		opts  []testredis.Option
		setup [][]string
	}{
		"masterdown":  {nil, [][]string{{"CONFIG", "SET", "replica-serve-stale-data", "no"}, {"REPLICAOF", "127.0.0.1", "1"}}},
		"clusterdown": {[]testredis.Option{testredis.Cluster()}, [][]string{{"CLUSTER", "DELSLOTSRANGE", "0", "16383"}}},
	}
	for name, c := range setups {
		t.Run(name, func(t *testing.T) {
			r := testredis.Start(t, c.opts...)
			m := metrics.New()
			store := redisStore(t, r.URL(), m)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, cmd := range c.setup {
				if reply, err := r.Do(ctx, cmd...); err != nil || reply != "+OK" {
					t.Fatalf("%v: %q %v", cmd, reply, err)
				}
			}
			for i := 1; i <= 10; i++ {
				// A plain GET (no TTL): GETEX is a write, which a replica
				// refuses READONLY before it says MASTERDOWN.
				if _, _, err := store.Get(ctx, "t:a:k", 0); err == nil {
					t.Fatalf("read %d succeeded", i)
				} else if i == 1 {
					t.Logf("read: %v", err)
				}
			}
			if store.Healthy() {
				t.Error("still up after 10 reads answered that Redis is not serving")
			}
		})
	}
}

// pipelineGate holds the first pipeline until released, and records how
// many SET commands each pipeline carries.
type pipelineGate struct {
	entered, release chan struct{}
	once             sync.Once
	mu               sync.Mutex
	sets             []int
}

func (g *pipelineGate) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (g *pipelineGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (g *pipelineGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, c := range cmds {
			if c.Name() == "set" {
				n++
			}
		}
		if n > 0 {
			g.once.Do(func() { close(g.entered); <-g.release })
			g.mu.Lock()
			g.sets = append(g.sets, n)
			g.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// Write-behind writes go to Redis in pipelines of at most 256 (writeBatch):
// 1,000 waiting writes take four.
func TestWritesPipelinedInBatchesOf256(t *testing.T) {
	r := testredis.Start(t)
	store := redisStore(t, r.URL(), metrics.New())
	g := &pipelineGate{entered: make(chan struct{}), release: make(chan struct{})}
	store.(interface{ Client() redis.UniversalClient }).Client().AddHook(g)
	store.PutIfAbsent(cohort.Assignment{Key: "t:a:first", Variant: "v0", TTL: time.Hour})
	<-g.entered // the writer is in its first pipeline: the rest wait in the queue
	for i := 0; i < 1000; i++ {
		store.PutIfAbsent(cohort.Assignment{Key: fmt.Sprintf("t:a:batched-%d", i), Variant: "v0", TTL: time.Hour})
	}
	close(g.release)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := store.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Equal(g.sets, []int{1, 256, 256, 256, 232}) {
		t.Errorf("SETs per pipeline: %v, want [1 256 256 256 232]", g.sets)
	}
	if k := redisKeys(t, r); k != 1001 {
		t.Errorf("%d keys written, want 1001", k)
	}
}
