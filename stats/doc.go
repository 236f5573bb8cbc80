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
// load and a few atomic adds, no locks, no clock read, no allocation
// (BenchmarkRecord*). Windows are closed by Rotate (Run calls it at each
// boundary; reads also call it), which swaps the endpoint's current
// window pointer: a recorder that loaded the pointer just before the
// swap adds its counts to the window just closed. Such a late add is
// kept (it is never lost), but a reader that already read that closed
// window misses it. Cumulative totals (Prometheus, Totals) fold a closed
// window only once it has been closed for a whole window length, so they
// stay exact unless a recorder stalls that long between its load and its
// add.
//
// # Memory
//
// Per endpoint and variant, a window holds 28 counters of 8 bytes: 224
// bytes (a Go size class), plus 8 for its pointer; a window itself costs
// about 120 bytes more (bounds, weights pointer, slices). Weights maps are
// shared by every window with the same weights. At most MaxWindows closed
// windows are kept per endpoint (default: Retention / Window = 90, the
// last 15 minutes), and closed windows older than Retention are dropped
// even without new traffic. Bound: 1,000 endpoints × 3 variants × 91
// windows (90 closed + the current) × 232 B ≈ 63 MB, plus 1,000 × 91 ×
// ~120 B ≈ 11 MB of window headers: about 75 MB when every endpoint has
// traffic in every window; an endpoint that had no traffic for
// Retention costs only its header (names, weights, cumulative totals:
// about 0.5 KB with 3 variants).
package stats
