// Package cohort decides which variant a user belongs to and keeps that
// decision sticky: explicit target, targeting rules, stored assignment, then a
// salted weighted hash of the user key. Stores: Redis (shared by replicas)
// and in-memory (single replica).
//
// Decision order (Engine.Decide):
//  1. x-modelsplit-target names a variant of an allow_target endpoint → SourceTarget, not stored.
//  2. The first matching rule (header equals / one_of / prefix; user_list
//     from the config, else the Redis set <prefix>list:<name>) → SourceRule.
//  3. The stored assignment (in-process cache, then the store) → SourceStore,
//     while that variant's weight is > 0; a drained variant's users are
//     hashed elsewhere (SourceHash) and their stored value is kept for a rollback.
//  4. The weighted hash of the user key, the same pick as Envoy's fail-open
//     route (hash.go) → SourceHash, stored
//     write-behind (SET NX). No user key: weighted random (SourceRandom), or
//     a minted id cookie. Store down or over budget: the hash, SourceFallback.
//
// Redis layout (prefix = store.key_prefix):
//
//	<prefix>a:<endpoint>:<hex salt hash>:<hex user hash>  string, the variant; TTL sticky.ttl
//	<prefix>list:<name>                                   set of raw user keys (SISMEMBER)
//	<prefix>users:<endpoint>:<variant>                    HyperLogLog of user hashes assigned there
//
// sticky.ttl slides: reads renew it (GETEX), so it forgets users unseen
// for that long and never moves an active user. The in-process cache keeps
// an entry for half the TTL, so an active user's store entry is renewed
// before it could lapse.
package cohort

import "errors"

// Source says how a decision was reached. It is a metric label, so the set
// is closed.
type Source uint8

const (
	SourceTarget   Source = iota // x-modelsplit-target named an allowed variant
	SourceRule                   // a targeting rule matched
	SourceStore                  // a stored assignment (cache or store)
	SourceHash                   // new user: the weighted hash picked, result stored
	SourceRandom                 // no user key: weighted random
	SourceFallback               // store unavailable or over budget: the hash decided
)

var sourceNames = [...]string{"target", "rule", "store", "hash", "random", "fallback"}

func (s Source) String() string {
	if int(s) < len(sourceNames) {
		return sourceNames[s]
	}
	return "unknown"
}

// Headers gives the decision read access to request headers without
// copying them. Names are lower-case; ok is false when absent.
type Headers interface {
	Get(name string) (value string, ok bool)
}

// Decision is the outcome for one request.
type Decision struct {
	Endpoint string
	Variant  string
	// Cluster is config.ClusterName(Endpoint, Variant).
	Cluster string
	Source  Source
	// SetCookie, when not empty, is a Set-Cookie header value carrying a
	// freshly minted user id; it must be added to this request's response.
	SetCookie string
	// Mirror holds the user-sampled mirror shadows this request goes to:
	// the caller sets each one's header to its cluster, and Envoy's mirror
	// policy (cluster_header) tees the request there.
	Mirror ShadowSet
}

// ErrUnknownEndpoint is returned for an endpoint missing from the config.
// Callers pass the request through unchanged and count it.
var ErrUnknownEndpoint = errors.New("unknown endpoint")
