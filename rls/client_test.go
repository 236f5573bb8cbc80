package rls

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	_ "google.golang.org/grpc/balancer/rls" // the RLS LB policy; without it grpc-go rejects the route config

	"github.com/modelsplit/modelsplit/cohort/picktest"
	"github.com/modelsplit/modelsplit/config"
)

// outageLength is how long the lookup server stays down in the client test:
// 2s, or MODELSPLIT_RLS_OUTAGE (a Go duration) to measure recovery after
// longer outages.
func outageLength(t testing.TB) time.Duration {
	if v := os.Getenv("MODELSPLIT_RLS_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("MODELSPLIT_RLS_OUTAGE: %v", err)
		}
		return d
	}
	return 2 * time.Second
}

func clientTestConfig(t testing.TB, a, b *variantBackend, wa, wb int) *config.Config {
	return parseConfig(t, fmt.Sprintf(`
endpoints:
  - name: scorer
    protocol: grpc
    services: [grpc.testing.TestService]
    match: {path_prefix: /grpc.testing.TestService/}
    sticky: {header: x-user-id}
    allow_target: true
    variants:
      - {name: a, weight: %d, backends: ["%s"]}
      - {name: b, weight: %d, backends: ["%s"]}
    rules:
      - {header: x-region, equals: eu, variant: b}
`, wa, a.addr, wb, b.addr))
}

type call struct {
	backend string
	rlsData string // the variant when a lookup answer routed the call, "" for the default target
	err     error
}

func unary(ctx context.Context, c testgrpc.TestServiceClient, md ...string) call {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, md...), 5*time.Second)
	defer cancel()
	resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return call{err: err}
	}
	return call{backend: resp.GetHostname(), rlsData: resp.GetUsername()}
}

// forUsers calls once per user id with 16 callers and returns each user's call.
func forUsers(ctx context.Context, c testgrpc.TestServiceClient, ids []string, md ...string) map[string]call {
	var mu sync.Mutex
	out := make(map[string]call, len(ids))
	next := make(chan string)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				r := unary(ctx, c, append([]string{"x-user-id", id}, md...)...)
				mu.Lock()
				out[id] = r
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
	return out
}

func userIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return ids
}

// lookupServer serves the lookup service for eng on addr and can be
// stopped and started again on the same address.
type lookupServer struct {
	t    testing.TB
	srv  *Server
	addr string
	g    *grpc.Server
}

func (l *lookupServer) start() {
	l.t.Helper()
	lis, err := net.Listen("tcp", l.addr)
	if err != nil {
		l.t.Fatal(err)
	}
	l.addr = lis.Addr().String()
	l.g = grpc.NewServer()
	l.srv.RegisterStandalone(l.g)
	go l.g.Serve(lis)
}

func (l *lookupServer) stop() { l.g.Stop() }

// TestGrpcGoClientThroughRLS runs real grpc-go xDS clients that route with
// the RLS cluster-specifier plugin against this package's lookup server
// (real cohort engine, memory store) and real backends.
func TestGrpcGoClientThroughRLS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end with 5,000 users")
	}
	ctx := context.Background()
	a, b := startVariantBackend(t, "a"), startVariantBackend(t, "b")
	cfg := clientTestConfig(t, a, b, 70, 30)
	env := startLookup(t, cfg) // engine + a throwaway server; the test serves its own below
	ls := &lookupServer{t: t, srv: NewServer(env.engine, Options{Metrics: env.metrics}), addr: "127.0.0.1:0"}
	ls.start()
	t.Cleanup(func() { ls.g.Stop() })
	lookupTarget := "dns:///" + ls.addr

	cp := startControlPlane(t)
	cp.set(t, rlsSnapshot(t, &cfg.Endpoints[0], lookupTarget, "1"))
	client := xdsDial(t, cp, "scorer")

	// 1. Every call of one user lands on the same backend, chosen by lookup.
	users := userIDs("user", 5000)
	first := forUsers(ctx, client, users)
	perBackend := map[string]int{}
	for id, c := range first {
		if c.err != nil {
			t.Fatalf("%s: %v", id, c.err)
		}
		if c.rlsData != c.backend {
			t.Fatalf("%s served by %s with RLS data %q: want the lookup's variant", id, c.backend, c.rlsData)
		}
		perBackend[c.backend]++
	}
	for round := 0; round < 2; round++ {
		for id, c := range forUsers(ctx, client, users[:500]) {
			if c.err != nil || c.backend != first[id].backend {
				t.Fatalf("round %d: %s went to %q (err %v), first call went to %q", round, id, c.backend, c.err, first[id].backend)
			}
		}
	}
	// 2. Every user is on the variant the documented rule gives (computed
	// apart from the engine): exact, so no choice of user names can make a
	// skewed split pass. The shares are logged.
	for id, c := range first {
		if want := picktest.Variant("", id, []string{"a", "b"}, []int{70, 30}); c.backend != want {
			t.Fatalf("%s on %s, the rule says %s", id, c.backend, want)
		}
	}
	for name, weight := range map[string]float64{"a": 0.70, "b": 0.30} {
		t.Logf("variant %s: %d users, share %.4f (weight %.2f)", name, perBackend[name], float64(perBackend[name])/float64(len(users)), weight)
	}

	// 3. Targeting rules are honoured.
	for id, c := range forUsers(ctx, client, userIDs("eu", 200), "x-region", "eu") {
		if c.err != nil || c.backend != "b" {
			t.Fatalf("eu user %s went to %q (err %v), want the rule's variant b", id, c.backend, c.err)
		}
	}

	// 4. Weight change 70/30 → 20/80: a fresh client (empty RLS cache, so
	// every answer comes from the server) finds old users where they were;
	// new users follow the new weights.
	cfg2 := clientTestConfig(t, a, b, 20, 80)
	env.engine.SetConfig(cfg2)
	cp.set(t, rlsSnapshot(t, &cfg2.Endpoints[0], lookupTarget, "2"))
	fresh := xdsDial(t, cp, "scorer")
	for id, c := range forUsers(ctx, fresh, users[:2000]) {
		if c.err != nil || c.backend != first[id].backend {
			t.Fatalf("after the weight change %s went to %q (err %v), was on %q", id, c.backend, c.err, first[id].backend)
		}
	}
	newOnB := 0
	newUsers := userIDs("new", 5000)
	for id, c := range forUsers(ctx, fresh, newUsers) {
		if c.err != nil {
			t.Fatalf("%s: %v", id, c.err)
		}
		if c.backend == "b" {
			newOnB++
		}
		if want := picktest.Variant("", id, []string{"a", "b"}, []int{20, 80}); c.backend != want {
			t.Fatalf("new user %s on %s after 70/30 → 20/80, the rule says %s (lookup answer %q; none: the default target served it)", id, c.backend, want, c.rlsData)
		}
	}
	// Each new user was checked against the rule above; the share is only
	// a sanity bound (5 sigma over 5,000 users is ±2.8 pp).
	if share := float64(newOnB) / float64(len(newUsers)); math.Abs(share-0.80) > 0.028 {
		t.Errorf("new users on b: %.4f, want 0.80 ± 0.028 after the change to 20/80", share)
	} else {
		t.Logf("after 70/30 → 20/80: new users on b %.4f", share)
	}

	// 5. Lookup server stopped: cached users stay put, new users are served
	// by the weighted default target, nothing fails.
	ls.stop()
	outage := time.Now()
	for id, c := range forUsers(ctx, fresh, users[:500]) {
		if c.err != nil || c.backend != first[id].backend {
			t.Fatalf("during the outage cached user %s went to %q (err %v), was on %q", id, c.backend, c.err, first[id].backend)
		}
	}
	during := forUsers(ctx, fresh, userIDs("outage", 1000))
	defaults := map[string]int{}
	for id, c := range during {
		if c.err != nil {
			t.Fatalf("during the outage new user %s failed: %v", id, c.err)
		}
		if c.rlsData != "" {
			t.Fatalf("during the outage new user %s was routed by a lookup answer %q", id, c.rlsData)
		}
		defaults[c.backend]++
	}
	t.Logf("outage: 1000 new users served by the default target: %v (weights 20/80)", defaults)
	if defaults["a"] == 0 || defaults["b"] == 0 {
		t.Errorf("default target sent every new user to one variant %v: want a weighted split", defaults)
	}

	// 6. Recovery: restart the lookup server on the same address and time
	// how long until a new user is routed by a lookup answer again.
	time.Sleep(outageLength(t)) // long enough for the client's backoff to grow
	ls.start()
	restarted := time.Now()
	var recovered time.Duration
	for i := 0; ; i++ {
		c := unary(ctx, fresh, "x-user-id", fmt.Sprintf("recovery-%d", i))
		if c.err != nil {
			t.Fatalf("call during recovery failed: %v", c.err)
		}
		if c.rlsData != "" {
			recovered = time.Since(restarted)
			break
		}
		if time.Since(restarted) > 3*time.Minute {
			t.Fatal("lookups not used again 3 minutes after the lookup server came back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("outage of %v: lookups resumed %v after the server came back", restarted.Sub(outage).Round(time.Millisecond), recovered.Round(time.Millisecond))
}
