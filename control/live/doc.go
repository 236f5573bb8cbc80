// Package live holds the rules of live control, with no I/O: the State
// that live changes build (weight overrides, shadow pause overrides,
// rollback history, the audit, an automated actor's owner, ramp and
// state), how it is laid over the config file, and the changes people
// and automated actors make to it.
//
// Precedence: a live change wins over the config file until the file
// changes that same setting. Each override records the file's value it
// was made against (its base); when a reload brings a different file
// value, the file wins, the override is dropped and the drop is audited
// as "superseded". Editing an unrelated part of the file keeps every
// override in force.
//
// Changes are refused with an *Error whose Code says why (ErrInvalid,
// ErrUnknownEndpoint, ErrOwned …), never with a transport status: the
// admin API (package httpapi) maps codes to HTTP statuses.
//
// Storing the State (a file, Redis) is package persist's job; applying
// it, locking and compare-and-set are package control's.//
// # Mutation testing
//
// `make mutate` mutates this package (scripts/mutate.sh). These surviving
// mutants are equivalent: no input can tell them from the code as written.
//
//   - state.go, Encode: `256 + len(s.Audit)*320` as `/ 320` in b.Grow. A
//     capacity hint: the buffer grows as needed either way.
//   - Trims that are no-ops at zero: `n > 0` as `n >= 0` in state.go's
//     pushHistory and Bound (history and audit) and audit.go's Record:
//     slicing from 0 keeps everything.
//   - audit.go, boundWeights: `len(w) <= maxWeights` and `len(k) <=
//     maxName` as `<`. At exactly the bound the slow path keeps all the
//     names, in full: the same map.
//   - audit.go, Record: `e.Count < 1` as `<= 1` (sets 1 to 1), and
//     `err == nil && cached` as `||`: encoding an entry never fails, and
//     with the cache out of step (cached false) appending to it leaves it
//     out of step, so Encode encodes afresh either way.
package live
