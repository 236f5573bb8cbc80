package test

import (
	"fmt"
	"testing"
)

// TestEnvoyDecideFalse: an endpoint with decide: false (the bench-envoy
// baseline) is routed by Envoy alone — no ext_proc stream, the weighted
// fallback route hashed on the sticky header, the variant named in the
// answer — while the other endpoint in the same Envoy still asks
// modelsplit for every request.
func TestEnvoyDecideFalse(t *testing.T) {
	a, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
	g := startGateway(t, fmt.Sprintf(`endpoints:
  - name: alone
    match: {path_prefix: /alone}
    sticky: {header: x-user-id}
    observe: false
    decide: false
    variants:
      - {name: a, weight: 50, backends: [%[1]q]}
      - {name: b, weight: 50, backends: [%[2]q]}
  - name: decided
    match: {path_prefix: /decided}
    sticky: {header: x-user-id}
    observe: false
    variants:
      - {name: a, weight: 50, backends: [%[1]q]}
      - {name: b, weight: 50, backends: [%[2]q]}
`, a.addr, b.addr), "", "/decided/predict", "x-user-id", "probe")
	// Each ext_proc filter has its own stat_prefix (docs/envoy-notes.md §1.6).
	const streams = "http.modelsplit.ext_proc.decide.streams_started"
	const observed = "http.modelsplit.ext_proc.observe.streams_started"

	before, beforeObserved := g.envoy.stat(streams), g.envoy.stat(observed)
	seen := map[string]string{}
	for i := 0; i < 300; i++ {
		u := fmt.Sprintf("user-%d", i%100)
		r, err := g.client.get("/alone/predict", "x-user-id", u)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != 200 || r.variant != r.body || (r.body != "a" && r.body != "b") {
			t.Fatalf("user %s: status %d body %q variant header %q", u, r.status, r.body, r.variant)
		}
		if prev, ok := seen[u]; ok && prev != r.body {
			t.Errorf("user %s moved from %s to %s: the weighted route is not hashed on x-user-id", u, prev, r.body)
		}
		seen[u] = r.body
	}
	if n := g.envoy.stat(streams) - before + g.envoy.stat(observed) - beforeObserved; n != 0 {
		t.Errorf("decide: false endpoint opened %d ext_proc streams, want 0", n)
	}
	onA := 0
	for _, v := range seen {
		if v == "a" {
			onA++
		}
	}
	if onA == 0 || onA == len(seen) {
		t.Errorf("%d of %d users on a: the weights did not split", onA, len(seen))
	}

	before = g.envoy.stat(streams)
	for i := 0; i < 50; i++ {
		if r, err := g.client.get("/decided/predict", "x-user-id", fmt.Sprintf("user-%d", i)); err != nil || r.status != 200 {
			t.Fatalf("decided endpoint: %v %+v", err, r)
		}
	}
	if n := g.envoy.stat(streams) - before; n < 50 {
		t.Errorf("decided endpoint: %d ext_proc streams for 50 requests", n)
	}
	g.envoy.assertNoRejections()
}
