package cohort

import (
	"context"
	"strings"
	"time"
)

// ruleMatches reports whether rule i matches; ok is false when a Redis
// user list could not be read (the rule is then treated as not matching).
func (e *Engine) ruleMatches(ctx context.Context, c *compiled, ep *endpoint, i int, h Headers, key string, hasKey bool, now time.Time, pf *prefetched) (match, ok bool) {
	r := &ep.rules[i]
	if r.list != "" {
		if !hasKey {
			return false, true
		}
		if r.inConfig != nil {
			_, in := r.inConfig[key]
			return in, true
		}
		return e.inRedisList(ctx, c, ep, i, key, now, pf)
	}
	v, found := h.Get(r.header)
	if !found {
		return false, true
	}
	switch {
	case r.oneOf != nil:
		_, in := r.oneOf[v]
		return in, true
	case r.prefix != "":
		return strings.HasPrefix(v, r.prefix), true
	default:
		return v == r.equals, true
	}
}

// prefetched is what one pipelined Lookup answered for a decision: the
// Redis user lists of the rules from the first one that needed Redis on,
// and the user's assignment when the cache did not have it. A new user
// then costs one round trip, whatever the number of list rules.
type prefetched struct {
	l     *Lookup // nil until fetched
	rules []int   // rules[k] is the rule whose list is l.Lists[k]
}

func (pf *prefetched) list(rule int) (in, ok, asked bool) {
	if pf.l == nil {
		return false, false, false
	}
	for k, r := range pf.rules {
		if r == rule {
			return pf.l.In[k], pf.l.ListErr == nil, true
		}
	}
	return false, false, false
}

// inRedisList answers SISMEMBER <prefix>list:<name> <raw key>, from the
// list cache (for listTTL) or Redis, within the store budget.
func (e *Engine) inRedisList(ctx context.Context, c *compiled, ep *endpoint, i int, key string, now time.Time, pf *prefetched) (bool, bool) {
	r := &ep.rules[i]
	if in, ok := e.cachedList(ep, r, key, now); ok {
		return in, true
	}
	if pf.l == nil {
		e.prefetch(ctx, c, ep, i, key, now, pf)
	}
	if in, ok, asked := pf.list(i); asked {
		return in, ok
	}
	// Cached when the prefetch ran, expired since: ask for this one alone.
	l := &Lookup{Member: key, Lists: []string{r.listKey}}
	e.lookup(ctx, c, l)
	if l.ListErr != nil {
		return false, false
	}
	e.cacheList(ep, r, key, l.In[0], now)
	return l.In[0], true
}

// prefetch reads, in one Lookup, every Redis list still unanswered from
// rule `from` on and, unless cached, the user's assignment: if no rule
// matches the assignment is needed next, and asking now saves a round trip.
func (e *Engine) prefetch(ctx context.Context, c *compiled, ep *endpoint, from int, key string, now time.Time, pf *prefetched) {
	l := &Lookup{Member: key}
	for j := from; j < len(ep.rules); j++ {
		r := &ep.rules[j]
		if r.list == "" || r.inConfig != nil {
			continue
		}
		if _, cached := e.cachedList(ep, r, key, now); cached && j > from {
			continue
		}
		pf.rules = append(pf.rules, j)
		l.Lists = append(l.Lists, r.listKey)
	}
	kh := keyHash(ep.saltHash, key)
	if _, ok := e.cachedAssignment(cacheKey{space: ep.space, user: kh}, now); !ok {
		l.Key, l.TTL = ep.storeKey(kh), ep.ttl
	}
	e.lookup(ctx, c, l)
	pf.l = l
	if l.ListErr == nil {
		for k, j := range pf.rules {
			e.cacheList(ep, &ep.rules[j], key, l.In[k], now)
		}
	}
}

func (e *Engine) lookup(ctx context.Context, c *compiled, l *Lookup) {
	sctx, cancel := context.WithTimeout(ctx, c.timeout)
	e.store.Lookup(sctx, l)
	cancel()
}

func listCacheKey(ep *endpoint, r *rule, key string) cacheKey {
	return cacheKey{space: r.listID, user: keyHash(ep.saltHash, key)}
}

func (e *Engine) cachedList(ep *endpoint, r *rule, key string, now time.Time) (in, ok bool) {
	if e.listTTL <= 0 {
		return false, false
	}
	a, ok := e.lists.get(listCacheKey(ep, r, key))
	if !ok || now.UnixNano() >= a.expires {
		return false, false
	}
	return a.in, true
}

func (e *Engine) cacheList(ep *endpoint, r *rule, key string, in bool, now time.Time) {
	if e.listTTL > 0 {
		e.lists.put(listCacheKey(ep, r, key), listAnswer{in: in, expires: now.Add(e.listTTL).UnixNano()})
	}
}
