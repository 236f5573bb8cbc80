// Package persist stores the live State (package live): in a local file
// (one replica) or under one Redis key that replicas share.
//
// Every store is compare-and-set on the state's revision: Save succeeds
// only while the stored revision is the one the caller last saw, so a
// replica that changed the state on a stale copy gets ErrConflict and
// redoes its change on top of the newer one instead of overwriting it.
// Revision reads only the first bytes of the stored state, so replicas
// can poll it every second and read the whole state only when it moved.
//
// A store that holds anything but a modelsplit state is never
// overwritten (ErrNotState).//
// # Mutation testing
//
// `make mutate` mutates this package (scripts/mutate.sh). One surviving
// mutant is left without a test: in redis.go, Revision, `err != nil ||
// st == nil` as `&&` after reading the whole state. Load answers a nil
// state without an error only for a missing key, and Revision gets there
// only after GETRANGE found the key, so only a key deleted between the
// two reads tells them apart (the mutant then dereferences nil); no test
// can place a deletion there without hooking the client. The file
// persister's same line is tested (a blank file).
package persist
