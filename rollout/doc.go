// Package rollout drives an endpoint's rollout plan (config rollout:):
// canary steps, a linear shift, blue-green or an A/B experiment. Each
// step puts its weights in force through live control as an automated
// actor (audited, persisted, shared with replicas), holds them for its
// bake time, and checks the plan's gates every interval on the stats
// windows: error ratio and shadow agreement with always-valid sequential
// tests, latency with Mann–Whitney under alpha spending, sample ratio
// mismatch, PromQL. A failing gate rolls back to the weights before the
// rollout; a step advances only when every gate passes on enough data.
// One replica drives (a Redis lease); the others follow the stored
// state.
//
// # Mutation testing
//
// `make mutate` mutates this package in two runs (scripts/mutate.sh).
// These surviving mutants are equivalent: no input can tell them from the
// code as written. (Only part of the package has been measured yet; see
// the README.)
//
//   - gates.go, check: `len(p.Gates)+1` as `-` in make's capacity. A
//     capacity hint: append grows the slice either way.
//   - gates.go, gate: `p < spent` (latency) and `p < threshold` (SRM) as
//     `<=`. A p-value equals its level (alpha·6/(π²k²), or the SRM
//     threshold) only by a coincidence no test can arrange short of
//     searching for it.
package rollout
