package cohort_test

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// busy loads every core until the test ends with spinning processes, as
// other engineers' builds load a shared 2-core machine: the OS shares the
// cores between them and this test (they inherit its nice level).
// Goroutines would not do: spinners that hold every P starve Go's network
// poller, which a loaded machine does not.
func busy(t *testing.T) {
	t.Helper()
	for i := 0; i < runtime.NumCPU(); i++ {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting a busy process: %v", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
}

// Redis slow, not dead: 30% of its replies arrive well past store.timeout
// (a proxy holds them back), the cores are loaded, and the weights change
// every 100 ms. Each of 2,000 users is decided once, then returns five
// times: none may move off the variant first served, and every first
// decision ends up stored in Redis (written back, never overwritten).
func TestSlowRedisMovesNoReturningUser(t *testing.T) {
	r := testredis.Start(t)
	proxy := testredis.StartSlowProxy(t, r.Addr(), 0.3, 60*time.Millisecond)
	m := metrics.New()
	store, err := cohort.NewRedisStore(config.Store{Redis: proxy.URL(), KeyPrefix: "t:", Timeout: config.Duration(20 * time.Millisecond)}, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	weights := [][]int{{50, 50}, {10, 90}, {90, 10}}
	cfgs := make([]*config.Config, len(weights))
	for i, w := range weights {
		cfgs[i] = splitConfig(t, proxy.URL(), w...)
		cfgs[i].Store.Timeout = config.Duration(20 * time.Millisecond)
		cfgs[i].Endpoints[0].Rules = nil
	}
	e := cohort.NewEngine(store, cohort.Options{Metrics: m})
	e.SetConfig(cfgs[0])
	busy(t)

	stop := make(chan struct{})
	var changer sync.WaitGroup
	changer.Add(1)
	changes := 0
	go func() {
		defer changer.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				e.SetConfig(cfgs[i%len(cfgs)])
				changes++
			}
		}
	}()

	const users, returns, workers = 2000, 5, 4
	first := make([]string, users)
	var mu sync.Mutex
	moved := map[int]string{}
	round := func(check bool) {
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for u := w; u < users; u += workers {
					d, err := e.Decide(context.Background(), "m", user(fmt.Sprintf("slow-%d", u)))
					if err != nil {
						t.Error(err)
						return
					}
					time.Sleep(time.Millisecond) // a few thousand decisions a second, so the weights change between visits
					if !check {
						first[u] = d.Variant
					} else if d.Variant != first[u] {
						mu.Lock()
						moved[u] = fmt.Sprintf("%s→%s (%s)", first[u], d.Variant, d.Source)
						mu.Unlock()
					}
				}
			}(w)
		}
		wg.Wait()
	}
	round(false)
	for i := 0; i < returns; i++ {
		round(true)
	}
	close(stop)
	changer.Wait()
	replies, delayed := proxy.Counts()
	t.Logf("%d weight changes; proxy delayed %d of %d replies; store timeouts %v, went down %v times; fallback decisions %v",
		changes, delayed, replies, testutil.ToFloat64(m.StoreTimeouts), testutil.ToFloat64(m.StoreDown),
		testutil.ToFloat64(m.Decisions.WithLabelValues("m", "v0", "fallback"))+testutil.ToFloat64(m.Decisions.WithLabelValues("m", "v1", "fallback")))
	if len(moved) > 0 {
		var some []string
		for u, s := range moved {
			if len(some) < 5 {
				some = append(some, fmt.Sprintf("user %d %s", u, s))
			}
		}
		t.Errorf("%d of %d returning users moved with Redis slow: %s", len(moved), users, strings.Join(some, "; "))
	}
	if delayed == 0 || testutil.ToFloat64(m.StoreTimeouts) == 0 {
		t.Fatal("no read ran over the budget: the test did not test a slow Redis")
	}

	// Every first decision is stored, as first served: written at once,
	// or written back once Redis answered (at the latest on Close).
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	// A fresh engine straight on Redis (no proxy, empty cache) reads them.
	direct := redisStore(t, r.URL(), metrics.New())
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Endpoints[0].Rules = nil
	reader, _ := newEngine(t, direct, cfg)
	stored, wrong := 0, 0
	for u := 0; u < users; u++ {
		d := decide(t, reader, user(fmt.Sprintf("slow-%d", u)))
		if d.Source != cohort.SourceStore {
			continue
		}
		stored++
		if d.Variant != first[u] {
			wrong++
		}
	}
	t.Logf("stored %d of %d assignments, %d differ from the first decision; write-backs stored %v, conflict %v; writes lost %v",
		stored, users, wrong, testutil.ToFloat64(m.StoreWriteBacks.WithLabelValues("stored")),
		testutil.ToFloat64(m.StoreWriteBacks.WithLabelValues("conflict")), writesLost(m))
	if stored != users || wrong != 0 {
		t.Errorf("%d of %d assignments stored, %d of them not the variant first served; want all, as served", stored, users, wrong)
	}
	if testutil.ToFloat64(m.StoreWriteBacks.WithLabelValues("stored")) == 0 {
		t.Error("no write-back counted, though reads ran over the budget")
	}
}

// A Redis out of memory with maxmemory-policy noeviction refuses writes
// (OOM) but still answers reads: every refused assignment is counted as
// lost (reason refused), Redis is not marked down, and the users keep
// their variant on this replica.
func TestOOMRefusedWritesAreCounted(t *testing.T) {
	r := testredis.Start(t)
	c := redisClient(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// 2 MB of data, then a 1 MB limit: every write that needs memory is refused.
	if err := c.Set(ctx, "filler", strings.Repeat("x", 2<<20), 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"maxmemory", "1mb"}, {"maxmemory-policy", "noeviction"}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Set(ctx, "probe", "x", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "OOM") {
		t.Fatalf("SET under maxmemory: %v, want an OOM refusal", err)
	}
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	cfg := splitConfig(t, r.URL(), 50, 50)
	cfg.Endpoints[0].Rules = nil
	e, _ := newEngine(t, store, cfg)
	const n = 50
	first := make([]string, n)
	for i := range n {
		first[i] = decide(t, e, user(fmt.Sprintf("oom-%d", i))).Variant
	}
	flush(t, e)
	if got := testutil.ToFloat64(m.StoreWritesLost.WithLabelValues("refused")); got != n {
		t.Errorf("writes lost{reason=refused} = %v, want %d", got, n)
	}
	if testutil.ToFloat64(m.StoreErrors.WithLabelValues("put")) == 0 {
		t.Error("no put error counted")
	}
	if !store.Healthy() {
		t.Error("refused writes marked Redis down (it answers)")
	}
	for i := range n {
		if d := decide(t, e, user(fmt.Sprintf("oom-%d", i))); d.Variant != first[i] {
			t.Errorf("user %d moved from %s to %s after its write was refused", i, first[i], d.Variant)
		}
	}
	if k := redisKeys(t, r); k != 0 {
		t.Errorf("%d assignments stored by an out-of-memory Redis", k)
	}
}

// A few slow reads in a row do not mark a Redis down that answers the
// rest in time (the flap the earlier rule, three in a row, caused under
// load); one that misses every read is down, and each up→down transition
// is counted (modelsplit_store_down_total).
func TestSlowReadsAloneDoNotMarkRedisDown(t *testing.T) {
	r := testredis.Start(t)
	proxy := testredis.StartSlowProxy(t, r.Addr(), 0, 0)
	m := metrics.New()
	store, err := cohort.NewRedisStore(config.Store{Redis: proxy.URL(), KeyPrefix: "t:", Timeout: config.Duration(50 * time.Millisecond)}, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	read := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, _, err := store.Get(ctx, "t:a:x", time.Hour)
		return err
	}
	for range 20 {
		if err := read(); err != nil {
			t.Fatalf("read through an idle proxy: %v", err)
		}
	}
	proxy.Set(1, 200*time.Millisecond)
	for i := range 4 {
		if err := read(); err == nil {
			t.Fatalf("slow read %d answered in time", i)
		}
	}
	proxy.Set(0, 0)
	time.Sleep(250 * time.Millisecond) // the held-back replies drain
	for range 20 {
		_ = read()
	}
	if !store.Healthy() || testutil.ToFloat64(m.StoreDown) != 0 {
		t.Fatalf("4 slow reads among 44: healthy %v, went down %v times; want up, 0", store.Healthy(), testutil.ToFloat64(m.StoreDown))
	}
	proxy.Set(1, 200*time.Millisecond)
	for range 30 {
		_ = read()
	}
	if store.Healthy() || testutil.ToFloat64(m.StoreDown) != 1 {
		t.Fatalf("every read late: healthy %v, went down %v times; want down, once", store.Healthy(), testutil.ToFloat64(m.StoreDown))
	}
}
