package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// BenchmarkEnvoyComparePrimaryLatency: what a compare-mode shadow 500 ms
// slower than the primary costs the primary, through a real Envoy, at 100%
// and 10% sampling. One modelsplit, one Envoy, one warm-up: blocks of 500
// requests at 500 req/s (the slow shadow has ~250 replays in flight at
// 100%) alternate with the shadow paused (A: nothing is marked, no body
// reaches modelsplit, nothing is replayed) and resumed (B), A B A B for 6
// pairs. Reported: the medians of the pairwise p50 and p99 ratios (B/A),
// and the same for consecutive A blocks (A/A: the machine's own noise).
// Targets: at 100%, p50 ≤ 1.05 and p99 ≤ 1.10; at 10%, within the A/A
// noise. With MODELSPLIT_PROFILE_DIR set, a 5 s CPU profile of serve is
// written there during a B block.
func BenchmarkEnvoyComparePrimaryLatency(b *testing.B) {
	for _, percent := range []int{100, 10} {
		b.Run(fmt.Sprintf("sampled-%d", percent), func(b *testing.B) {
			primary := startHTTPBackend(b, "a")
			slow := startHTTPBackend(b, "slow")
			slow.setHandler(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				select {
				case <-time.After(500 * time.Millisecond):
				case <-r.Context().Done():
				}
				_, _ = w.Write([]byte("a"))
			})
			g := startGateway(b, fmt.Sprintf(`endpoints:
  - name: cmp
    match: {path_prefix: /cmp}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 100, backends: [%q]}
    shadows:
      - {name: s, percent: %d, backends: [%q], compare: {timeout: 5s, max_concurrency: 512}}
`, primary.addr, percent, slow.addr), "", "/cmp/predict", "x-user-id", "probe")
			admin := g.admin()
			setPaused := func(paused bool) {
				action := "resume"
				if paused {
					action = "pause"
				}
				req, _ := http.NewRequest(http.MethodPost, "http://"+admin+"/v1/endpoints/cmp/shadows/s/"+action, nil)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("%s the shadow: %v %v", action, err, resp)
				}
				resp.Body.Close()
				time.Sleep(200 * time.Millisecond) // the change reaches the decision engine at once; let replays of the last block drain a little
			}
			const pairs, n = 6, 500
			every := 2 * time.Millisecond
			block := func(paused bool) []time.Duration {
				setPaused(paused)
				return timedGets(b, g, "/cmp/predict", n, every)
			}
			block(false) // warm up both states
			block(true)
			b.ResetTimer()
			var r50, r99, aa50, aa99 []float64
			var prevA []time.Duration
			for i := 0; i < b.N; i++ {
				for p := 0; p < pairs; p++ {
					a := block(true)
					if p == pairs/2 && os.Getenv("MODELSPLIT_PROFILE_DIR") != "" {
						go profileServe(b, admin, fmt.Sprintf("%s/serve-compare-%d.pprof", os.Getenv("MODELSPLIT_PROFILE_DIR"), percent))
					}
					s := block(false)
					r50 = append(r50, float64(medianDuration(s))/float64(medianDuration(a)))
					r99 = append(r99, float64(p99(s))/float64(p99(a)))
					if prevA != nil {
						aa50 = append(aa50, float64(medianDuration(a))/float64(medianDuration(prevA)))
						aa99 = append(aa99, float64(p99(a))/float64(p99(prevA)))
					}
					prevA = a
				}
			}
			b.StopTimer()
			b.ReportMetric(median(r50), "p50-ratio")
			b.ReportMetric(median(r99), "p99-ratio")
			b.ReportMetric(median(aa50), "p50-ratio-AA")
			b.ReportMetric(median(aa99), "p99-ratio-AA")
			st := shadowStatus(b, admin)
			b.Logf("sampled %d%%: p50 ratios %.3f (median %.3f), p99 ratios %.3f (median %.3f); A/A p50 %.3f p99 %.3f; shadow %s",
				percent, r50, median(r50), r99, median(r99), median(aa50), median(aa99), st)
		})
	}
}

// profileServe takes a 5 s CPU profile of modelsplit serve into path.
func profileServe(b *testing.B, admin, path string) {
	resp, err := http.Get("http://" + admin + "/debug/pprof/profile?seconds=5")
	if err != nil {
		b.Logf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Logf("profile: %v", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
	b.Logf("CPU profile of serve during a shadow block: %s", path)
}

func shadowStatus(b *testing.B, admin string) string {
	_, body := httpGet("http://" + admin + "/metrics")
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "modelsplit_shadow_comparisons_total") || strings.HasPrefix(l, "modelsplit_shadow_dropped_total") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}
