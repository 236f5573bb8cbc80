// Package control serves live control: it lays the live state over the
// config file and applies the result (xDS, decisions, shadows), makes
// each change — a person's through the admin API, or an automated
// actor's (ApplyAutomated) — under one lock, on the newest stored state,
// saving it compare-and-set so replicas never overwrite each other, and
// keeps replicas in sync by polling the stored revision.
//
// The rules of a change (precedence over the file, superseding, rollback
// history, audit, owners) are package live's; the stores are package
// persist's; the HTTP handlers are package httpapi's. This package wires
// them together and keeps the names service uses (New, Options,
// Register, FilePersister …).
//
// # Mutation testing
//
// `make mutate PKGS=./control` mutates this package's own files
// (scripts/mutate.sh). These surviving mutants are equivalent: no input
// can tell them from the code as written.
//
//   - control.go, Audit: `limit > n` as `>=`. At limit == n it sets limit
//     to n, which it already is.
//   - status.go, statusView: `v.eff == nil || file == nil` as `&&`. The
//     file config and the effective one are set together (SetFileConfig;
//     a change or an adopted state needs a file first): both are nil
//     before the first config and neither after.
//   - status.go, status: `total > 0` as `>= 0`. An endpoint in force never
//     has variants of total weight 0 (the config, set-weights, automated
//     changes and stored weights are all validated against it), and with
//     no variants the loop that divides by it does not run.
//   - traffic.go, window: `continue` as `break` for a window that starts
//     before the minute's first boundary. Windows lie within one aligned
//     slot and that boundary is aligned, so of the windows the recorder
//     returns (those that end after it) only the open one, always last,
//     can start before it: stopping there skips the same.
//   - sync.go, sync: `c.stateErr != "" && !c.dirty` as `||`. The case is
//     reached only with the stored revision equal to ours and not (dirty
//     and stored). With the error clear the mutant's stateOK is a no-op
//     (the error and control_state_ok always change together); with it set
//     and dirty, ours would have to be revision 0 while unsaved (nothing
//     stored reads as revision 0), but an unsaved state is always at
//     least revision 1: revisions count up from the stored ones, which
//     modelsplit writes from 1. Only a hand-written stored state with a
//     negative revision could reach it.
package control
