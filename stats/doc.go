// Package stats records, per endpoint and per variant, the results of
// recent fixed-length time windows: requests the observe filter saw and
// their status classes and latency, decisions, new users the hash
// assigned, rewards, and per shadow the compared and agreeing answers.
// Rollout gates (and later bandits) read closed windows; the Prometheus
// series modelsplit_variant_requests_total, _responses_total and
// _latency_seconds are exported from the same counts (Collector), so
// there is one place that counts.
//
// # Windows
//
// Windows are aligned to the wall clock (default 10 s: :00, :10, ...) so
// that replicas' windows line up and can be summed. A weight change on an
// endpoint (SetWeights) closes its current window early and the next one
// runs to the same aligned boundary, so every window has exactly one set
// of weights in force (Window.Weights): a sample-ratio-mismatch test can
// compare a window's Assigned counts with them.
//
// A window is opened by the first record after the previous one closed,
// so an endpoint without traffic has no window at all (there are gaps in
// Windows' answer, never empty windows).
//
// # Hot path
//
// Callers resolve a handle once (Recorder.Variant, Recorder.Shadow) and
// keep it with their compiled config; a record is then one atomic pointer
// load and a few atomic adds into the current window, and the same adds
// into the variant's totals since start, no locks, no clock read, no
// allocation (BenchmarkRecord*; the first record of a window allocates
// it, once per endpoint and window). Windows are closed by Rotate (Run
// calls it at each boundary; reads call it for their endpoint), which
// swaps the endpoint's current window pointer: a recorder that loaded the
// pointer just before the swap adds its counts to the window just
// closed. Such a late add is kept (Windows later shows it), but a reader
// that already read that closed window misses it, and so does Redis
// (Publish) if it comes more than a window length late. Without Run,
// records keep going to the last window until a read closes it.
//
// The totals since start (Totals, the Prometheus series) are counted
// apart from the windows, so they stay exact whatever the windows'
// retention and whatever a recorder's delay.
//
// # Memory
//
// Per endpoint and variant, a window holds 28 counters of 8 bytes: 224
// bytes (a Go size class), plus 8 for its pointer; a window itself costs
// about 150 bytes more (bounds, weights pointer, slice headers). Weights
// maps are shared by every window with the same weights. At most
// MaxWindows closed windows are kept per endpoint (default: Retention /
// Window = 90, the last 15 minutes), and closed windows older than
// Retention are dropped even without new traffic. Bound at 1,000
// endpoints × 3 variants, every endpoint with traffic in every window:
// 1,000 × 3 × 91 windows (90 closed + the current) × 232 B ≈ 63 MB, plus
// 1,000 × 91 × ~150 B ≈ 14 MB of window headers: about 77 MB. An
// endpoint without traffic has no window: its header (names, weights,
// a 224-byte total per variant: about 1 KB with 3 variants) is all it
// costs.//
// # Mutation testing
//
// `make mutate` mutates this package in two runs (scripts/mutate.sh).
// These surviving mutants are equivalent: no input can tell them from the
// code as written.
//
//   - recorder.go, New: `opts.Retention < opts.Window` as `<=`. When they
//     are equal, setting Retention to Window changes nothing.
//   - recorder.go, trimLocked: `drop > 0` as `drop >= 0`. Copying and
//     clearing nothing leaves the closed windows as they are.
//   - redis.go, MergedWindows: `j < 0` as `j <= 0`. j is 0 only for a
//     field naming an empty variant or shadow, which no replica writes
//     (config validation refuses empty names).
//
// Not equivalent, but left without a test: in recorder.go, Run,
// `next.Sub(now) + time.Millisecond` as `-`. The timer then fires a
// millisecond before the boundary and the loop spins until it (Rotate
// closing nothing), so a window may be closed by the next round instead,
// up to a window length late. Every read rotates its endpoint itself, so
// Windows, Current and Totals answer the same; only publishing to Redis
// can lag one more window, which a test could tell from a slow machine
// only with a timing ceiling.
package stats
