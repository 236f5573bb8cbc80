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
//     a minted id cookie. Store down or over budget: the hash, SourceFallback,
//     cached like a new user's pick and written back (SET NX, kept while
//     the store is down), so the user keeps it however slow the store is.
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
//
// # Mutation testing
//
// `make mutate PKGS='./cohort:compile ./cohort:engine ./cohort:redis ./cohort:parts'`
// mutates this package (scripts/mutate.sh). These surviving mutants are
// equivalent: no input can tell them from the code as written.
//
//   - compile.go, Engine.space: `len(e.spaces) + 1` as `- 1`. A space is a
//     cache namespace that only has to differ from the others for the
//     Engine's life; `- 1` numbers them MaxUint32, 0, 1, ... — still
//     distinct, and no number has a meaning of its own.
//   - compile.go, compileEndpoint: in `hasMirror = hasMirror ||
//     (!compare && !perRequest && !paused)` either `&&` as `||`, and in
//     `hasCompare = hasCompare || (compare && !paused)` the `&&` as `||`.
//     Both flags only gate a call to endpoint.sample, which applies the
//     same conditions to each shadow itself: a flag set wrongly makes a
//     call that samples nothing.
//   - engine.go, cachedAssignment, and rules.go, cachedList: `now >=
//     expires` as `now > expires`. The two differ at one nanosecond of an
//     entry's life, on a clock Decide reads itself; no caller can choose it.
//   - engine.go, random: `r < c` as `r <= c`, and `weights[i] > 0` as
//     `>= 0`. A variant of weight 0 has an empty interval (its cumulative
//     weight equals the previous one), so r lands in it only if r equals a
//     boundary exactly (a float draw, probability about 2^-53), and the
//     weight check still refuses it. The final `return len(ep.cum) - 1`
//     (as `+ 1`, or its -1 negated) is reached only when rounding makes
//     r equal the total, about 2^-53 per request as well.
//   - hash.go, pickInterval: `return len(cum) - 1` (as `+ 1`, or its -1
//     negated) is unreachable: sel = h % cum[last] is below cum[last], so
//     the loop returns first.
//   - rules.go, prefetch: `cached && j > from` as `j >= from`. The caller
//     runs prefetch only after finding rule from's answer uncached at the
//     same instant, so for j == from cached is false either way.
//   - rules.go, cachedList and cacheList: `listTTL <= 0` as `< 0` and
//     `listTTL > 0` as `>= 0`. NewEngine replaces a zero ListCacheTTL by
//     DefaultListCacheTTL, so listTTL is never 0.
//   - redis.go, readHealth.record: `x.slot > slot-healthBuckets` as `>=`.
//     The only bucket whose slot can equal slot-healthBuckets is the one at
//     index slot%healthBuckets, which is the current bucket: it was just
//     given slot, so it is counted either way.
//   - redis.go, readFailed: in `errors.Is(err, context.DeadlineExceeded) ||
//     errors.Is(ctx.Err(), context.DeadlineExceeded) || (net timeout)` the
//     first `||` as `&&`. The two differ for an error that is neither a
//     deadline nor a net timeout returned after the caller's deadline
//     passed (a refused connection racing the deadline), or a deadline
//     error while the caller's context is live, which go-redis does not
//     return: its deadline errors are the caller's context's or net
//     timeouts (TestReadTimeoutsCountedAsTimeouts has both). No caller can
//     choose the instant of the race.
//   - redis.go, warnRefused: `now-last < int64(refusedLogEvery)` as `<=`.
//     They differ when a refused write comes exactly one minute, to the
//     nanosecond, after the last warning, on a clock warnRefused reads
//     itself.
//   - shadows.go, sample: `draw < threshold` as `<=`. The two differ for a
//     user whose 32-bit draw equals the threshold exactly: one user in 2^32
//     per shadow, which no test can find short of searching that space.
//   - userkey.go, cookieFor: `len(ep.cookie) + len(id) + 64` as
//     `len(ep.cookie) - len(id) + 64` in b.Grow. A capacity hint: a minted
//     id is 32 characters, so the hint stays positive and the cookie is the
//     same.
//
// One surviving mutant is not equivalent, and no test here kills it:
// redis.go, Close: `closeBudget/2` as `closeBudget*2` for the flush's
// share of Close's budget. It changes how Close's 5 s are split between
// flushing the queue and writing back what was kept: with the mutant the
// flush may use all 5 s. Telling the two apart needs a Redis that hangs
// for between 2.5 and 5 s during Close and then answers, and a test would
// be a race against those instants; the outcome it would check (writes
// lost or not) is counted by modelsplit_store_writes_lost_total either way.
package cohort
