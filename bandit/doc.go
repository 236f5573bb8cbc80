// Package bandit runs multi-armed bandits over an endpoint's variants
// (config bandit:): each arm's rewards — a 2xx within a latency budget,
// a number in a response header, or rewards posted to the rewards API
// and joined to the user's or request's variant — are counted in the
// stats windows, and on every interval the replica holding the lease
// turns them into each arm's posterior probability of being best
// (Thompson sampling, seeded so replicas agree) and puts weights in
// proportion to it in force through live control, with a floor per arm
// and an optional control arm at a fixed share.
//
// # Mutation testing
//
// `make mutate` mutates this package (scripts/mutate.sh). These surviving
// mutants are equivalent: no input can tell them from the code as written.
//
//   - manager.go, load: `!ok || len(raw) == 0` as `&&`. Live control
//     answers ok only with a stored state, which is valid JSON and so
//     never empty, and a nil state with !ok: both forms agree.
//   - manager.go, apply: `updates == 0 && action == "bandit_start"` as
//     `||`. A start always has 0 updates and every other action at least
//     1, so the two conditions are true together or not at all.
//   - rewards.go, fifo: `time.Since(e.at) < f.ttl` (putIfAbsent) as `<=`,
//     and `>= f.ttl` (get) as `>`. They differ only when the clock reads
//     exactly the TTL since the entry was put, to the nanosecond.
//   - thompson.go, ProbBest: `v > bv` as `>=`. Only a tie between two
//     arms' draws tells them apart, and the draws are continuous (Beta,
//     or Normal with a variance of at least 1e-12): a tie has
//     probability 0.
//   - thompson.go, Allocate: `rest < 0` as `<=`. At rest = 0 the floors
//     fill the share exactly, and the mutant sets floor to share/len,
//     the same value (at most its last bit differs, which Basis's
//     rounding to basis points never shows).
package bandit
