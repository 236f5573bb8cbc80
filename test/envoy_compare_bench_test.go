package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkEnvoyComparePrimaryLatency: what a compare-mode shadow 500 ms
// slower than the primary costs the primary, through a real Envoy, at 100%
// and 10% sampling. One modelsplit, one Envoy, one warm-up: blocks of
// COMPARE_BLOCK (1,000) requests at 500 req/s (the slow shadow has ~250
// replays in flight at 100%) alternate with the shadow paused (A: nothing
// is marked, no body reaches modelsplit, nothing is replayed) and resumed
// (B), A B A B for COMPARE_PAIRS (8) pairs. Reported: the medians of the
// pairwise p50 and p99 ratios (B/A), the same for consecutive A blocks
// (A/A: the machine's own noise), and the CPU time per request each
// process spent in A and B (the schedstat of all its threads: unlike
// latency, it barely moves on a busy machine).
// Targets: at 100%, p50 ≤ 1.05 and p99 ≤ 1.10; at 10%, within the A/A
// noise. With MODELSPLIT_PROFILE_DIR set, CPU profiles of serve over half
// of an A and a B block are written there.
func BenchmarkEnvoyComparePrimaryLatency(b *testing.B) {
	for _, percent := range []int{100, 10} {
		b.Run(fmt.Sprintf("sampled-%d", percent), func(b *testing.B) {
			primary := startHTTPBackend(b, "a")
			// The slow shadow is a process of its own, as a model server
			// would be, not goroutines of this load generator. It stands
			// for a model server on other machines, so by default it runs
			// at niceness 19 (COMPARE_SHADOW_NICE): its own CPU, reported
			// below, then takes what Envoy, modelsplit and the primary
			// leave instead of competing with them for the two cores as
			// it would not in production. COMPARE_SHADOW_NICE=0 runs it
			// at their priority.
			slowAddr, slowPID := startSlowServerProcess(b, 500*time.Millisecond, benchNiceness(b, "COMPARE_SHADOW_NICE", 19))
			// Info, as in production: the tests' debug level would log
			// every replay, and this process would read each line.
			g := startGatewayArgs(b, []string{"-log-level", "info"}, fmt.Sprintf(`endpoints:
  - name: cmp
    match: {path_prefix: /cmp}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 100, backends: [%q]}
    shadows:
      - {name: s, percent: %d, backends: [%q], compare: {timeout: 5s, max_concurrency: 512}}
`, primary.addr, percent, slowAddr), "", "/cmp/predict", "x-user-id", "probe")
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
			pairs, n := benchInt(b, "COMPARE_PAIRS", 8), benchInt(b, "COMPARE_BLOCK", 1000)
			every := 2 * time.Millisecond
			// CPU per request of each process, per block: Envoy, modelsplit,
			// this process (the load generator and the primary) and the
			// shadow's server.
			pids := []int{g.envoy.pid(), g.serve.current().cmd.Process.Pid, os.Getpid(), slowPID}
			var cpuA, cpuB, sysA, sysB [4][]float64
			block := func(paused bool) []time.Duration {
				setPaused(paused)
				var before [4]time.Duration
				var sysBefore [4]int64
				for i, pid := range pids {
					before[i], sysBefore[i] = procCPU(pid), procSyscalls(pid)
				}
				lat := timedGets(b, g, "/cmp/predict", n, every)
				for i, pid := range pids {
					perReq := float64(cpuDelta(before[i], procCPU(pid))) / float64(n) / float64(time.Microsecond)
					sysPerReq := float64(procSyscalls(pid)-sysBefore[i]) / float64(n)
					if paused {
						cpuA[i], sysA[i] = append(cpuA[i], perReq), append(sysA[i], sysPerReq)
					} else {
						cpuB[i], sysB[i] = append(cpuB[i], perReq), append(sysB[i], sysPerReq)
					}
				}
				return lat
			}
			block(false) // warm up both states
			block(true)
			cpuA, cpuB, sysA, sysB = [4][]float64{}, [4][]float64{}, [4][]float64{}, [4][]float64{}
			b.ResetTimer()
			var r abRatios
			for i := 0; i < b.N; i++ {
				for p := 0; p < pairs; p++ {
					dir := os.Getenv("MODELSPLIT_PROFILE_DIR")
					if p == pairs/2 && dir != "" {
						go profileServe(b, admin, fmt.Sprintf("%s/serve-paused-%d", dir, percent), time.Duration(n)*every)
					}
					a := block(true)
					if p == pairs/2 && dir != "" {
						go profileServe(b, admin, fmt.Sprintf("%s/serve-comparing-%d", dir, percent), time.Duration(n)*every)
					}
					r.add(a, block(false))
				}
			}
			b.StopTimer()
			r.report(b)
			st := shadowStatus(b, admin)
			for i, name := range []string{"envoy", "modelsplit", "client+primary", "shadow-server"} {
				b.ReportMetric(median(cpuB[i])-median(cpuA[i]), "cpu-µs/req-added-"+name)
				b.Logf("sampled %d%%: %s per request: CPU paused %.0f µs, comparing %.0f µs; read+write syscalls paused %.1f, comparing %.1f (medians of blocks)",
					percent, name, median(cpuA[i]), median(cpuB[i]), median(sysA[i]), median(sysB[i]))
			}
			b.Logf("sampled %d%%: %s; shadow %s", percent, &r, st)
		})
	}
}

// abRatios collects an interleaved A B A B comparison: each pair's p50
// and p99 ratios (B/A), and those of consecutive A blocks (A/A, the
// machine's own noise).
type abRatios struct {
	r50, r99, aa50, aa99 []float64
	prevA                []time.Duration
}

func (r *abRatios) add(a, b []time.Duration) {
	r.r50 = append(r.r50, float64(medianDuration(b))/float64(medianDuration(a)))
	r.r99 = append(r.r99, float64(p99(b))/float64(p99(a)))
	if r.prevA != nil {
		r.aa50 = append(r.aa50, float64(medianDuration(a))/float64(medianDuration(r.prevA)))
		r.aa99 = append(r.aa99, float64(p99(a))/float64(p99(r.prevA)))
	}
	r.prevA = a
}

// report gives the benchmark the medians of each kind of ratio.
func (r *abRatios) report(b *testing.B) {
	b.ReportMetric(median(r.r50), "p50-ratio")
	b.ReportMetric(median(r.r99), "p99-ratio")
	b.ReportMetric(median(r.aa50), "p50-ratio-AA")
	b.ReportMetric(median(r.aa99), "p99-ratio-AA")
}

func (r *abRatios) String() string {
	return fmt.Sprintf("p50 ratios %.3f (median %.3f), p99 ratios %.3f (median %.3f); A/A p50 %.3f (median %.3f) p99 %.3f (median %.3f)",
		r.r50, median(r.r50), r.r99, median(r.r99), r.aa50, median(r.aa50), r.aa99, median(r.aa99))
}

// procSyscalls is how many read and write system calls pid has made
// (/proc/<pid>/io syscr + syscw), or -1 without /proc. On a virtual
// machine a system call, and the wake-up it often brings, is the
// costly part of a gRPC message.
func procSyscalls(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	var total int64
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok && (k == "syscr" || k == "syscw") {
			n, _ := strconv.ParseInt(v, 10, 64)
			total += n
		}
	}
	return total
}

// benchNiceness reads a niceness (0 to 19) from the environment.
func benchNiceness(b *testing.B, env string, def int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 19 {
		b.Fatalf("%s=%q: want a niceness from 0 to 19", env, v)
	}
	return n
}

// benchInt reads a positive integer setting from the environment.
func benchInt(b *testing.B, env string, def int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", env, v)
	}
	return n
}

// profileServe writes a CPU profile of modelsplit serve over half of a
// block lasting block (at least 1 s), to prefix.cpu.pprof, and its
// goroutines near the start to prefix.goroutine.txt.
func profileServe(b *testing.B, admin, prefix string, block time.Duration) {
	save := func(url, path string) {
		resp, err := http.Get(url)
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
	}
	time.Sleep(250 * time.Millisecond) // setPaused's 200 ms, then the block's first requests
	go save("http://"+admin+"/debug/pprof/goroutine?debug=1", prefix+".goroutine.txt")
	save(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, max(1, int(block/2/time.Second))), prefix+".cpu.pprof")
	b.Logf("profiles of serve during a block: %s.{cpu.pprof,goroutine.txt}", prefix)
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
