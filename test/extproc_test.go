package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc/extproctest"
)

// TestGRPCClientExtProcHeaderReachesBackend: a real grpc-go client with the
// ext_proc filter configured over xDS by `modelsplit serve` calls the
// decision server on every RPC, and the variant header reaches the backend
// on every call (grpc-go cannot re-route on it, docs/envoy-notes.md §4.1: the
// header informs the backend; the route stays the weighted pick).
func TestGRPCClientExtProcHeaderReachesBackend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := newPorts(t)
	startServe(t, tempConfig(t, echoConfig(p, a, b, 50, 50)), p)
	client := xdsClient(t, "echo")
	ackedRoute(t, "echo", "", 15*time.Second)

	const calls = 2000
	res := callN(ctx, client, calls, 4, "x-user-id", "user-42")
	if res.failed != 0 {
		t.Fatalf("%d calls failed: %v", res.failed, res.firstErr)
	}
	headers := map[string]int{}
	for _, be := range []*backend{a, b} {
		for v, n := range be.variantHeaders() {
			headers[v] += n
		}
	}
	t.Logf("x-modelsplit-variant seen by the backends over %d calls: %v", calls, headers)
	if headers[""] != 0 {
		t.Errorf("%d calls reached a backend without x-modelsplit-variant", headers[""])
	}
	// One user, one sticky decision: every call carries the same variant.
	if len(headers) != 1 {
		t.Errorf("one user's calls carried %d different variants: %v", len(headers), headers)
	}
	total := 0
	for _, n := range headers {
		total += n
	}
	if total != calls {
		t.Errorf("backends saw %d calls, want %d", total, calls)
	}
}

// TestEnvoyFaithfulClientAgainstServe runs the Envoy-like ext_proc client
// (one stream per request, raw_value, route-cache rules) against the
// ext_proc listener of `modelsplit serve`: users stick, rules apply, and
// the route cache is cleared with the mutation.
func TestEnvoyFaithfulClientAgainstServe(t *testing.T) {
	a, b := startBackend(t, "a"), startBackend(t, "b")
	p := newPorts(t)
	cfg := echoConfig(p, a, b, 50, 50) + "    rules:\n      - {header: x-region, equals: eu, variant: b}\n"
	startServe(t, tempConfig(t, cfg), p)
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", p.extproc), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	md := map[string]string{config.ClientMetadataKey: "envoy", config.EndpointMetadataKey: "echo"}
	counts := map[string]int{}
	for i := 0; i < 2000; i++ {
		u := fmt.Sprintf("u%d", i%500)
		res, err := extproctest.Do(context.Background(), conn, extproctest.Request{Metadata: md,
			Headers: []extproctest.Header{extproctest.H("x-user-id", u)}})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := extproctest.Get(res.RequestHeaders, config.VariantHeader)
		if !res.RouteCacheCleared || v == "" {
			t.Fatalf("request %d: variant %q, route cache cleared %v", i, v, res.RouteCacheCleared)
		}
		counts[u+"="+v]++
	}
	if len(counts) != 500 {
		t.Errorf("500 users produced %d (user, variant) pairs: someone was not sticky", len(counts))
	}
	res, err := extproctest.Do(context.Background(), conn, extproctest.Request{Metadata: md,
		Headers: []extproctest.Header{extproctest.H("x-user-id", "u1"), extproctest.H("x-region", "eu")}})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := extproctest.Get(res.RequestHeaders, config.VariantHeader); v != "b" {
		t.Errorf("rule x-region=eu gave %q, want b", v)
	}
}
