package control_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// replica is one Controller over a config of n endpoints, as a serve
// process has it, syncing every interval until the test ends.
type replica struct {
	ctl *control.Controller
	m   *metrics.Metrics
	eff func() *config.Config
}

func newReplica(t testing.TB, n int, p control.Persister, interval time.Duration) *replica {
	t.Helper()
	r := &replica{m: metrics.New()}
	r.ctl = control.New(context.Background(), control.Options{Metrics: r.m, Persister: p, SyncInterval: interval,
		Apply: func(*config.Config) error { return nil }})
	r.eff = func() *config.Config { return r.ctl.Effective() }
	if _, err := r.ctl.SetFileConfig(manyEndpoints(t, n)); err != nil {
		t.Fatal(err)
	}
	if interval > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { r.ctl.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	return r
}

func (r *replica) weights(t testing.TB, ep string) string {
	t.Helper()
	e, ok := r.eff().Endpoint(ep)
	if !ok {
		t.Fatalf("no endpoint %s", ep)
	}
	var parts []string
	for _, v := range e.Variants {
		parts = append(parts, fmt.Sprintf("%s=%d", v.Name, v.Weight))
	}
	return strings.Join(parts, " ")
}

func redisClient(t testing.TB, r *testredis.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestStateSizeIndependentOfClients: 100 changes sent with a 900 KB
// User-Agent (and a long client address) leave a small state, in the
// state file and in Redis, and each change stays fast.
func TestStateSizeIndependentOfClients(t *testing.T) {
	hugeUA := strings.Repeat("A", 900<<10)
	who := control.Requester{Remote: strings.Repeat("r", 10<<10), UserAgent: hugeUA}
	srv := testredis.Start(t)
	rc := redisClient(t, srv)
	for _, store := range []string{"file", "redis"} {
		t.Run(store, func(t *testing.T) {
			var p control.Persister
			file := filepath.Join(t.TempDir(), "state.json")
			if store == "file" {
				p = control.FilePersister{Path: file}
			} else {
				p = control.RedisPersister{Client: rc, Key: "size:control"}
			}
			r := newReplica(t, 10, p, 0)
			var slowest time.Duration
			start := time.Now()
			for i := range 100 {
				t0 := time.Now()
				res, err := r.ctl.SetWeights("ep1", map[string]int{"a": i + 1, "b": 100 - i}, who)
				if err != nil {
					t.Fatal(err)
				}
				if !res.Persisted {
					t.Fatalf("change %d not persisted: %s", i, res.Warning)
				}
				slowest = max(slowest, time.Since(t0))
			}
			var size int64
			if store == "file" {
				st, err := os.Stat(file)
				if err != nil {
					t.Fatal(err)
				}
				size = st.Size()
			} else {
				size = rc.StrLen(context.Background(), "size:control").Val()
			}
			t.Logf("%s: 100 changes with a %d-byte User-Agent: state %d bytes, %v per change on average, slowest %v",
				store, len(hugeUA), size, time.Since(start)/100, slowest)
			if store == "redis" {
				// How long Redis itself spent per save (it runs one script
				// at a time: nothing else is served meanwhile).
				stats := rc.Info(context.Background(), "commandstats").Val()
				for _, line := range strings.Split(stats, "\r\n") {
					if strings.HasPrefix(line, "cmdstat_evalsha:") || strings.HasPrefix(line, "cmdstat_eval:") {
						t.Logf("redis %s", line)
					}
				}
			}
			if size > 128<<10 {
				t.Errorf("state is %d bytes after 100 changes: it grows with what clients send", size)
			}
			a := r.ctl.Audit(1)
			if len(a) != 1 || len(a[0].UserAgent) > 256 || len(a[0].Remote) > 256 {
				t.Errorf("audit keeps %d bytes of User-Agent and %d of address", len(a[0].UserAgent), len(a[0].Remote))
			}
			if !strings.HasPrefix(a[0].UserAgent, "AAAA") {
				t.Errorf("the clipped User-Agent lost its start: %.20q", a[0].UserAgent)
			}
		})
	}
}

// TestSyncDoesNotReReadUnchangedState: replicas poll the shared state
// every interval; while nothing changes they must not read it whole.
func TestSyncDoesNotReReadUnchangedState(t *testing.T) {
	srv := testredis.Start(t)
	rc := redisClient(t, srv)
	p := control.RedisPersister{Client: rc, Key: "sync:control"}
	r := newReplica(t, 10, p, 0)
	ua := "modelsplit-cli/" + strings.Repeat("v", 200)
	for i := range 500 { // a full audit
		if _, err := r.ctl.SetWeights("ep1", map[string]int{"a": 1 + i%50, "b": 50}, control.Requester{Remote: "127.0.0.1:5555", UserAgent: ua}); err != nil {
			t.Fatal(err)
		}
	}
	size := rc.StrLen(context.Background(), "sync:control").Val()
	_ = newReplica(t, 10, p, 20*time.Millisecond) // a second replica, polling
	before := netOutput(t, srv)
	time.Sleep(time.Second)
	sent := netOutput(t, srv) - before
	t.Logf("state %d bytes; Redis sent %d bytes in 1 s of polling at 20 ms (%d polls)", size, sent, time.Second/(20*time.Millisecond))
	if sent > 20<<10 {
		t.Errorf("Redis sent %d bytes in 1 s of polling an unchanged %d-byte state: the state is re-read whole", sent, size)
	}
}

// netOutput is Redis's total_net_output_bytes (what it sent clients).
func netOutput(t *testing.T, srv *testredis.Server) int64 {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	info, err := c.Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_net_output_bytes:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no total_net_output_bytes in INFO stats")
	return 0
}

// TestStateResavedAfterRedisLosesIt: FLUSHALL, or a new empty Redis in
// the old one's place, loses the shared state. The running replicas save
// it again within one sync interval, a replica started meanwhile adopts
// it, the next change is accepted and persisted, and the gap shows in
// the metrics and the readiness check.
func TestStateResavedAfterRedisLosesIt(t *testing.T) {
	const interval = 100 * time.Millisecond
	for _, loss := range []string{"flushall", "empty replacement"} {
		t.Run(loss, func(t *testing.T) {
			srv := testredis.Start(t)
			rc := redisClient(t, srv)
			p := control.RedisPersister{Client: rc, Key: "t:control"}
			a := newReplica(t, 3, p, interval)
			b := newReplica(t, 3, p, interval)
			if _, err := a.ctl.SetWeights("ep1", map[string]int{"a": 20, "b": 80}, control.Requester{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*time.Second, "replica b adopts a's change", func() bool { return b.weights(t, "ep1") == "a=20 b=80" })

			if loss == "flushall" {
				if err := rc.FlushAll(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
			} else {
				srv.Restart() // not persistent: it comes back empty
			}
			// Saved again by the sync loop: within 3 s (30 sync intervals, a
			// margin a loaded 2-core machine keeps; a replica that only
			// saved on its next change would never save it here).
			lost := time.Now()
			waitFor(t, 3*time.Second, "the state is in Redis again", func() bool {
				return rc.Exists(context.Background(), "t:control").Val() == 1
			})
			t.Logf("%s: state saved again %v after the loss (sync interval %v)", loss, time.Since(lost).Round(time.Millisecond), interval)
			lostTotal := testutil.ToFloat64(a.m.ControlStateLost) + testutil.ToFloat64(b.m.ControlStateLost)
			if lostTotal < 1 {
				t.Errorf("modelsplit_control_state_lost_total = %v on both replicas, want the loss counted", lostTotal)
			}

			c := newReplica(t, 3, p, interval) // a new replica after the loss
			waitFor(t, 2*time.Second, "the new replica serves the live weights", func() bool { return c.weights(t, "ep1") == "a=20 b=80" })
			res, err := c.ctl.SetWeights("ep1", map[string]int{"a": 30, "b": 70}, control.Requester{})
			if err != nil || !res.Persisted {
				t.Fatalf("the next change: %v persisted=%v %s", err, res.Persisted, res.Warning)
			}
			for name, r := range map[string]*replica{"a": a, "b": b} {
				waitFor(t, 2*time.Second, "replica "+name+" adopts the next change", func() bool { return r.weights(t, "ep1") == "a=30 b=70" })
			}
			for name, r := range map[string]*replica{"a": a, "b": b, "c": c} {
				if err := r.ctl.Check(); err != nil {
					t.Errorf("replica %s not ready after the state was saved again: %v", name, err)
				}
				if ok := testutil.ToFloat64(r.m.ControlStateOK); ok != 1 {
					t.Errorf("replica %s: control_state_ok = %v", name, ok)
				}
			}
		})
	}
}

// TestLostStateShowsWhileNotSaved: while the store cannot take the
// state back (here: the key holds something else), the mismatch shows in
// control_state_ok, the revision gauges and the readiness check.
func TestLostStateShowsWhileNotSaved(t *testing.T) {
	srv := testredis.Start(t)
	rc := redisClient(t, srv)
	p := control.RedisPersister{Client: rc, Key: "m:control"}
	a := newReplica(t, 3, p, 50*time.Millisecond)
	if _, err := a.ctl.SetWeights("ep1", map[string]int{"a": 20, "b": 80}, control.Requester{}); err != nil {
		t.Fatal(err)
	}
	rc.Del(context.Background(), "m:control")
	rc.HSet(context.Background(), "m:control", "x", "y") // wrong type: saves fail
	waitFor(t, 2*time.Second, "the mismatch shows", func() bool {
		return a.ctl.Check() != nil && testutil.ToFloat64(a.m.ControlStateOK) == 0
	})
	t.Logf("readiness: %v", a.ctl.Check())
	if mem, stored := testutil.ToFloat64(a.m.ControlStateRevision.WithLabelValues("memory")), testutil.ToFloat64(a.m.ControlStateRevision.WithLabelValues("store")); mem == stored {
		t.Errorf("revision gauges agree (%v) while the store lost the state", mem)
	}
	rc.Del(context.Background(), "m:control")
	waitFor(t, 2*time.Second, "saved again and ready", func() bool {
		return a.ctl.Check() == nil && rc.Exists(context.Background(), "m:control").Val() == 1
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPromoteWeightIsBounded: promote gives the variant the endpoint's
// whole weight, but never more than a weight may be.
func TestPromoteWeightIsBounded(t *testing.T) {
	r := newReplica(t, 2, nil, 0)
	if _, err := r.ctl.SetWeights("ep1", map[string]int{"a": config.MaxWeight, "b": config.MaxWeight}, control.Requester{}); err != nil {
		t.Fatal(err)
	}
	res, err := r.ctl.Promote("ep1", "b", control.Requester{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("promote after a=b=%d: %v", config.MaxWeight, res.Weights)
	if res.Weights["b"] > config.MaxWeight || res.Weights["b"] <= 0 || res.Weights["a"] != 0 {
		t.Errorf("promote wrote weights %v; each must be within 0..%d", res.Weights, config.MaxWeight)
	}
	e, _ := r.eff().Endpoint("ep1")
	if err := control.ValidateWeights(e, res.Weights); err != nil {
		t.Errorf("promoted weights do not pass set-weights validation: %v", err)
	}
}

// TestStoredWeightsAreValidated: weights read from the store that no
// longer pass validation (an older release wrote 2,000,000) are dropped,
// not served.
func TestStoredWeightsAreValidated(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	state := `{"revision": 3, "endpoints": {"ep1": {"weights": {"a": 0, "b": 2000000}, "base": {"a": 90, "b": 10}}}}`
	if err := os.WriteFile(file, []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	r := newReplica(t, 2, control.FilePersister{Path: file}, 0)
	if got := r.weights(t, "ep1"); got != "a=90 b=10" {
		t.Errorf("served %s from a stored state with b=2000000, want the file's a=90 b=10", got)
	}
}

// TestChangesOnTwoReplicasNeverOverwrite: replicas sharing Redis change
// the state without waiting for a sync; each change starts from the
// newest stored state (or is redone on top of it), so none is lost and
// the replicas agree.
func TestChangesOnTwoReplicasNeverOverwrite(t *testing.T) {
	srv := testredis.Start(t)
	rc := redisClient(t, srv)
	p := control.RedisPersister{Client: rc, Key: "two:control"}
	a := newReplica(t, 10, p, 0) // no background sync: only what a change reads
	b := newReplica(t, 10, p, 0)
	set := func(r *replica, ep string, wa int) {
		t.Helper()
		res, err := r.ctl.SetWeights(ep, map[string]int{"a": wa, "b": 100 - wa}, control.Requester{})
		if err != nil || !res.Persisted {
			t.Fatalf("set %s: %v persisted=%v %s", ep, err, res.Persisted, res.Warning)
		}
	}
	set(a, "ep1", 10)
	set(b, "ep2", 20) // b has not synced: it must build on a's change
	set(a, "ep3", 30)
	if got := b.weights(t, "ep1"); got != "a=10 b=90" {
		t.Errorf("b's change dropped a's: b serves ep1 %s", got)
	}
	if got := a.weights(t, "ep2"); got != "a=20 b=80" {
		t.Errorf("a's change dropped b's: a serves ep2 %s", got)
	}
	stored, err := p.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for ep, want := range map[string]int{"ep1": 10, "ep2": 20, "ep3": 30} {
		if es := stored.Endpoints[ep]; es == nil || es.Weights["a"] != want {
			t.Errorf("stored state lost %s=a%d: %+v", ep, want, es)
		}
	}

	// At the same time, from both replicas.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		for j, r := range []*replica{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ep := fmt.Sprintf("ep%d", 4+j*3+i%3)
				res, err := r.ctl.SetWeights(ep, map[string]int{"a": 1 + i, "b": 50}, control.Requester{})
				if err == nil && !res.Persisted {
					err = fmt.Errorf("not persisted: %s", res.Warning)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	refused := 0
	for err := range errs {
		refused++
		if !strings.Contains(err.Error(), "try again") {
			t.Errorf("concurrent change: %v", err)
		}
	}
	stored, _ = p.Load(context.Background())
	changes := 0
	for _, e := range stored.Audit {
		if e.Action == "set_weights" {
			changes++
		}
	}
	t.Logf("40 concurrent changes on two replicas: %d audited in the store, %d refused as conflicts (nothing changed)", changes-3, refused)
	if changes-3 != 40-refused {
		t.Errorf("%d changes succeeded but %d are in the stored audit: some overwrote others", 40-refused, changes-3)
	}
}
