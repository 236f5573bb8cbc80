package test

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// Past extproc.max_streams modelsplit refuses a stream with
// RESOURCE_EXHAUSTED; Envoy's decide filter then fails open to the
// weighted route, so the request is still answered. With a cap of 1 and
// 16 callers most streams are refused, and no request fails.
func TestEnvoyRefusedStreamsFailOpen(t *testing.T) {
	a, b := startHTTPBackend(t, "a"), startHTTPBackend(t, "b")
	g := startGateway(t, fmt.Sprintf(`extproc: {max_streams: 1}
endpoints:
  - name: model
    match: {path_prefix: /model}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 50, backends: [%q]}
      - {name: b, weight: 50, backends: [%q]}
`, a.addr, b.addr), "extproc_timeout: 2s", "/model/predict", "x-user-id", "probe")
	var failed, served atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				r, err := g.client.get("/model/predict", "x-user-id", fmt.Sprintf("u%d-%d", w, i))
				if err != nil || r.status != http.StatusOK {
					failed.Add(1)
					continue
				}
				served.Add(1)
			}
		}()
	}
	wg.Wait()
	refused, _ := g.serve.current().metric(`modelsplit_extproc_streams_total{client="envoy",result="refused"}`)
	failOpen := g.envoy.stat("http.modelsplit.ext_proc.decide.failure_mode_allowed")
	t.Logf("%d answered, %d failed; modelsplit refused %v streams, Envoy failed open %d times", served.Load(), failed.Load(), refused, failOpen)
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed; a refused stream must fail open", failed.Load(), served.Load()+failed.Load())
	}
	if refused == 0 || failOpen == 0 {
		t.Errorf("the cap of 1 refused %v streams and Envoy failed open %d times; the test did not exercise refusals", refused, failOpen)
	}
}
