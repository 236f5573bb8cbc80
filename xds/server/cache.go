package server

import (
	"context"
	"errors"
	"sort"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/modelsplit/modelsplit/xds/translate"
)

// encodedCache is one node kind's resources, each encoded once (by the
// translator) and wrapped once here, for every stream of that kind. It
// implements go-control-plane's cache interface, so the library's state of
// the world and delta servers keep the protocol (nonces, subscriptions,
// ADS), while what they send is bytes made once per resource version:
// a response only points at shared Anys, and gRPC copies those bytes onto
// each stream.
//
// State of the world keeps the snapshot cache's rules (a watch is answered
// when the kind's version differs from the version the request names, or
// when it subscribes to a resource not yet returned), so versions, ACKs and
// the NACK guard behave as before. Delta answers with the resources whose
// content hash differs from what the stream holds, and the removals.
type encodedCache struct {
	mu      sync.Mutex
	version string
	res     map[resource.Type]map[string]*entry
	// all is each type's full list of Anys for wildcard state-of-the-world
	// responses, made once per version of the type (nil when stale).
	all   map[resource.Type][]*anypb.Any
	sotw  map[int64]*sotwWatch
	delta map[int64]*deltaWatch
	next  int64
}

// entry is one resource wrapped for both protocols.
type entry struct {
	hash  string
	any   *anypb.Any
	delta *discovery.Resource
}

type sotwWatch struct {
	req *discovery.DiscoveryRequest
	sub cachev3.Subscription
	out chan cachev3.Response
}

type deltaWatch struct {
	req *discovery.DeltaDiscoveryRequest
	sub cachev3.Subscription
	out chan cachev3.DeltaResponse
}

func newEncodedCache() *encodedCache {
	return &encodedCache{
		res:  map[resource.Type]map[string]*entry{},
		all:  map[resource.Type][]*anypb.Any{},
		sotw: map[int64]*sotwWatch{}, delta: map[int64]*deltaWatch{},
	}
}

// pending is one node kind's next state: resources to put (by type and
// name) and names to remove.
type pending struct {
	put    map[resource.Type]map[string]*translate.Encoded
	remove map[resource.Type]map[string]bool
}

// differs reports whether applying p would change anything served.
func (c *encodedCache) differs(p pending) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for typ, names := range p.remove {
		for n := range names {
			if c.res[typ][n] != nil {
				return true
			}
		}
	}
	for typ, puts := range p.put {
		for n, enc := range puts {
			if old := c.res[typ][n]; old == nil || old.hash != enc.Hash {
				return true
			}
		}
	}
	return false
}

// set applies p under a new version and answers the watches it concerns.
// Envoy applies types in the order it receives them, so responses go out
// the runtime layer of weights first (its keys exist before a route that
// reads them), then clusters, load assignments, listeners and routes.
func (c *encodedCache) set(version string, p pending) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for typ, names := range p.remove {
		for n := range names {
			if c.res[typ][n] != nil {
				delete(c.res[typ], n)
				delete(c.all, typ)
			}
		}
	}
	for typ, puts := range p.put {
		if c.res[typ] == nil {
			c.res[typ] = map[string]*entry{}
		}
		for n, enc := range puts {
			if old := c.res[typ][n]; old != nil && old.hash == enc.Hash {
				continue
			}
			a := &anypb.Any{TypeUrl: typ, Value: enc.Bytes}
			c.res[typ][n] = &entry{hash: enc.Hash, any: a, delta: &discovery.Resource{Name: n, Version: enc.Hash, Resource: a}}
			delete(c.all, typ)
		}
	}
	c.version = version
	for _, id := range c.ordered(func(id int64) string { return c.sotw[id].req.GetTypeUrl() }, len(c.sotw), func(yield func(int64)) {
		for id := range c.sotw {
			yield(id)
		}
	}) {
		w := c.sotw[id]
		if w.req.GetVersionInfo() != version {
			delete(c.sotw, id)
			w.out <- c.sotwResponse(w.req, w.sub)
		}
	}
	for _, id := range c.ordered(func(id int64) string { return c.delta[id].req.GetTypeUrl() }, len(c.delta), func(yield func(int64)) {
		for id := range c.delta {
			yield(id)
		}
	}) {
		w := c.delta[id]
		if resp := c.deltaResponse(w.req, w.sub, false); resp != nil {
			delete(c.delta, id)
			w.out <- resp
		}
	}
}

// typeOrder is the order Envoy wants updates in (make before break).
var typeOrder = map[string]int{
	resource.RuntimeType: 0, resource.ClusterType: 1, resource.EndpointType: 2, resource.ListenerType: 3, resource.RouteType: 4,
}

func (c *encodedCache) ordered(typeOf func(int64) string, n int, ids func(func(int64))) []int64 {
	out := make([]int64, 0, n)
	ids(func(id int64) { out = append(out, id) })
	sort.Slice(out, func(i, j int) bool {
		ti, tj := typeOrder[typeOf(out[i])], typeOrder[typeOf(out[j])]
		if ti != tj {
			return ti < tj
		}
		return out[i] < out[j]
	})
	return out
}

// CreateWatch answers at once when the client is behind (or newly
// subscribed to a resource it was not sent), else parks the watch until the
// next version.
func (c *encodedCache) CreateWatch(req *discovery.DiscoveryRequest, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != "" && (req.GetVersionInfo() != c.version || c.unsent(req.GetTypeUrl(), sub)) {
		out <- c.sotwResponse(req, sub)
		return func() {}, nil
	}
	c.next++
	id := c.next
	c.sotw[id] = &sotwWatch{req: req, sub: sub, out: out}
	return func() { c.mu.Lock(); delete(c.sotw, id); c.mu.Unlock() }, nil
}

// unsent reports whether the subscription names (or, wildcard, the type
// holds) a resource the stream was not sent.
func (c *encodedCache) unsent(typ string, sub cachev3.Subscription) bool {
	known := sub.ReturnedResources()
	if sub.IsWildcard() {
		for n := range c.res[typ] {
			if _, ok := known[n]; !ok {
				return true
			}
		}
		return false
	}
	for n := range sub.SubscribedResources() {
		if _, ok := known[n]; !ok && c.res[typ][n] != nil {
			return true
		}
	}
	return false
}

// sotwResponse is every resource of the type the request asks for (all of
// them for a wildcard request). Callers hold c.mu.
func (c *encodedCache) sotwResponse(req *discovery.DiscoveryRequest, sub cachev3.Subscription) cachev3.Response {
	typ := req.GetTypeUrl()
	byName := c.res[typ]
	var anys []*anypb.Any
	returned := map[string]string{}
	if names := req.GetResourceNames(); len(names) > 0 && !sub.IsWildcard() {
		for _, n := range names {
			if e := byName[n]; e != nil {
				anys = append(anys, e.any)
				returned[n] = c.version
			}
		}
	} else {
		anys = c.all[typ]
		if anys == nil {
			names := make([]string, 0, len(byName))
			for n := range byName {
				names = append(names, n)
			}
			sort.Strings(names)
			anys = make([]*anypb.Any, 0, len(names))
			for _, n := range names {
				anys = append(anys, byName[n].any)
			}
			c.all[typ] = anys
		}
		for n := range byName {
			returned[n] = c.version
		}
	}
	return &sotwResponse{req: req, returned: returned,
		resp: &discovery.DiscoveryResponse{VersionInfo: c.version, TypeUrl: typ, Resources: anys}}
}

// CreateDeltaWatch answers at once with what the stream lacks, else parks
// the watch until something it subscribes to changes.
func (c *encodedCache) CreateDeltaWatch(req *discovery.DeltaDiscoveryRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != "" {
		if resp := c.deltaResponse(req, sub, true); resp != nil {
			out <- resp
			return func() {}, nil
		}
	}
	c.next++
	id := c.next
	c.delta[id] = &deltaWatch{req: req, sub: sub, out: out}
	return func() { c.mu.Lock(); delete(c.delta, id); c.mu.Unlock() }, nil
}

// deltaResponse is what changed for the stream: resources whose hash
// differs from what it holds, and removals; nil when nothing did (a first
// wildcard request is answered even when empty, so that Envoy finishes
// initializing). Callers hold c.mu.
func (c *encodedCache) deltaResponse(req *discovery.DeltaDiscoveryRequest, sub cachev3.Subscription, first bool) cachev3.DeltaResponse {
	typ := req.GetTypeUrl()
	byName := c.res[typ]
	held := sub.ReturnedResources()
	var changed []*discovery.Resource
	var removed []string
	var next map[string]string
	if sub.IsWildcard() {
		next = make(map[string]string, len(byName))
		for n, e := range byName {
			next[n] = e.hash
			if held[n] != e.hash {
				changed = append(changed, e.delta)
			}
		}
		for n := range held {
			if byName[n] == nil {
				removed = append(removed, n)
			}
		}
	} else {
		next = make(map[string]string, len(sub.SubscribedResources()))
		for n := range sub.SubscribedResources() {
			e := byName[n]
			_, had := held[n]
			switch {
			case e != nil:
				next[n] = e.hash
				if held[n] != e.hash {
					changed = append(changed, e.delta)
				}
			case had:
				removed = append(removed, n)
			}
		}
	}
	if len(changed) == 0 && len(removed) == 0 && !(first && sub.IsWildcard() && req.GetResponseNonce() == "") {
		return nil
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i].GetName() < changed[j].GetName() })
	sort.Strings(removed)
	return &deltaResponse{req: req, returned: next, resp: &discovery.DeltaDiscoveryResponse{
		SystemVersionInfo: c.version, TypeUrl: typ, Resources: changed, RemovedResources: removed}}
}

// Fetch serves REST polling: the request's resources when its version is
// behind.
func (c *encodedCache) Fetch(_ context.Context, req *discovery.DiscoveryRequest) (cachev3.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version == "" {
		return nil, errors.New("no resources yet")
	}
	if req.GetVersionInfo() == c.version {
		return nil, &types.SkipFetchError{}
	}
	return c.sotwResponse(req, fetchSubscription{req}), nil
}

// fetchSubscription is a REST request's view of what it asks for.
type fetchSubscription struct{ req *discovery.DiscoveryRequest }

func (fetchSubscription) ReturnedResources() map[string]string { return nil }
func (f fetchSubscription) SubscribedResources() map[string]struct{} {
	out := map[string]struct{}{}
	for _, n := range f.req.GetResourceNames() {
		out[n] = struct{}{}
	}
	return out
}
func (f fetchSubscription) IsWildcard() bool { return len(f.req.GetResourceNames()) == 0 }

// sotwResponse wraps a response built from shared Anys. The server sets
// the nonce on the DiscoveryResponse it gets, so each response has its
// own (small) envelope; the resources inside are shared.
type sotwResponse struct {
	req      *discovery.DiscoveryRequest
	resp     *discovery.DiscoveryResponse
	returned map[string]string
}

func (r *sotwResponse) GetDiscoveryResponse() (*discovery.DiscoveryResponse, error) {
	return r.resp, nil
}
func (r *sotwResponse) GetRequest() *discovery.DiscoveryRequest { return r.req }
func (r *sotwResponse) GetVersion() (string, error)             { return r.resp.GetVersionInfo(), nil }
func (r *sotwResponse) GetResponseVersion() string              { return r.resp.GetVersionInfo() }
func (r *sotwResponse) GetReturnedResources() map[string]string { return r.returned }
func (r *sotwResponse) GetContext() context.Context             { return context.Background() }

type deltaResponse struct {
	req      *discovery.DeltaDiscoveryRequest
	resp     *discovery.DeltaDiscoveryResponse
	returned map[string]string
}

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discovery.DeltaDiscoveryResponse, error) {
	return r.resp, nil
}
func (r *deltaResponse) GetDeltaRequest() *discovery.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                 { return r.resp.GetSystemVersionInfo(), nil }
func (r *deltaResponse) GetResponseVersion() string                        { return r.resp.GetSystemVersionInfo() }
func (r *deltaResponse) GetNextVersionMap() map[string]string              { return r.returned }
func (r *deltaResponse) GetReturnedResources() map[string]string           { return r.returned }
func (r *deltaResponse) GetContext() context.Context                       { return context.Background() }
