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
// it, locking and compare-and-set are package control's.
package live
