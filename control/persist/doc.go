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
// overwritten (ErrNotState).
package persist
