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
// `make mutate` mutates this package in two runs (scripts/mutate.sh):
// rollout:gates (gates.go, http.go, lease.go, promql.go) and
// rollout:manager (manager.go, plan.go, results.go, statglue.go).
// These surviving mutants are equivalent: no input can tell them from the
// code as written (for results.go's loop, no input the Results contract
// allows).
//
//   - gates.go, check: `len(p.Gates)+1` as `-` in make's capacity. A
//     capacity hint: append grows the slice either way.
//   - gates.go, gate: `p < spent` (latency) and `p < threshold` (SRM) as
//     `<=`. A p-value equals its level (alpha·6/(π²k²), or the SRM
//     threshold) only by a coincidence no test can arrange short of
//     searching for it.
//   - manager.go, apply's compare-and-set check: `len(current) > 0` as
//     `>= 0`. For an empty current state the mutant unmarshals it, which
//     always fails ("unexpected end of JSON input"), and a state that does
//     not unmarshal is treated as none: cur is nil either way.
//   - plan.go, stepWeights: `before[v.Name] > 0` as `>=`, which also puts
//     the variants without weight before among the shares. Their
//     remainder is 0, so they sort after every positive one, and they are
//     never reached: the points left over after the floors are the sum of
//     the remainders over total, each remainder under total, so there are
//     fewer of them than positive remainders.
//   - results.go, evidence.add: `len(t.Latency) < len(c.Latency)` as
//     `<=`. At equal lengths the mutant appends an empty slice.
//   - results.go, collect: `continue` as `break` after the open window.
//     Results.Windows returns the closed windows, then the open one (the
//     service's adapter appends stats' Current window after its closed
//     Windows): the open window is the last, so leaving the loop after it
//     is the same as going on.
package rollout
