package translate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"sync"

	"github.com/cespare/xxhash/v2"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/modelsplit/modelsplit/config"
)

// Encoded is one resource as it goes on the wire: its deterministic
// encoding, made once, and a hash of it that serves as the resource's
// version in delta xDS. Never modified once made.
type Encoded struct {
	Name  string
	Bytes []byte
	Hash  string
}

// Set is a node kind's complete resource set, encoded: type URL → name →
// resource.
type Set map[resource.Type]map[string]*Encoded

// Changes names, per node kind and type, the resources an Update added,
// changed or removed. The names are looked up in the Translator's current
// Set: present means added or changed, absent means removed.
type Changes map[NodeKind]map[resource.Type]map[string]struct{}

func (c Changes) add(kind NodeKind, typ resource.Type, name string) {
	if c[kind] == nil {
		c[kind] = map[resource.Type]map[string]struct{}{}
	}
	if c[kind][typ] == nil {
		c[kind][typ] = map[string]struct{}{}
	}
	c[kind][typ][name] = struct{}{}
}

// Merge adds o's names to c.
func (c Changes) Merge(o Changes) {
	for kind, types := range o {
		for typ, names := range types {
			for name := range names {
				c.add(kind, typ, name)
			}
		}
	}
}

// Translator builds resources incrementally: it keeps every endpoint's
// built, checked and encoded resources, and on Update builds again only the
// endpoints whose inputs changed. An endpoint's inputs are the endpoint
// itself (compared by reflect.DeepEqual's rules, sameEndpoint, with the copy
// kept from the last build) and, for gRPC nodes, the ext_proc target; the
// builders it calls take nothing else (envoyEndpoint, gatewayEndpointRoutes,
// grpcEndpoint), so the compiler keeps that list honest. A new target
// builds every endpoint's gRPC resources again and keeps the Envoy ones of
// unchanged endpoints. What depends on the config as a whole (the
// gateway listener, the ext_proc cluster, the order of the gateway's
// routes) is built on every Update, which costs little, and checked again
// when its encoding changes.
//
// Every endpoint's resources are checked with Check on their own, with the
// gateway's route configuration cut down to that endpoint's routes, so the
// recursive validation and the reference checks (routes → clusters,
// clusters → load assignments, RLS default targets, grpc-go's rules) run on
// what changed. They are encoded first, and Check reads those encodings
// (the bytes served) to find the Anys it unpacks and validates. Names are unique across endpoints by construction (cluster
// names are endpoint/variant); an owner index still refuses a clash.
//
// Update is all or nothing: on an error nothing of the new config is kept.
// A Translator is not safe for concurrent use.
type Translator struct {
	units         map[string]*unit // by endpoint name
	extProcTarget string
	global        map[resource.Type]*Encoded // Envoy's listener and ext_proc cluster, by type
	order         []string                   // endpoint names in gateway route order
	weightsOrder  []string                   // endpoint names in runtime key order
	sets          map[NodeKind]Set
	owner         map[NodeKind]map[resource.Type]map[string]string // name → endpoint
	// sizes follows each set's encoded sizes as resources are put and
	// removed, so Oversized need not walk every resource on each Update.
	sizes map[NodeKind]map[resource.Type]*typeSize
}

// typeSize is one type's encoded bytes in a set, and its resources of at
// least bigResource bytes.
type typeSize struct {
	total, count int
	big          map[string]int
}

// bigResource is the smallest resource typeSize names; Oversized answers
// from typeSize for limits at least this large.
const bigResource = 64 << 10

// unit is one endpoint's part of every node kind's resources.
type unit struct {
	src config.Endpoint // a deep copy
	// envoy holds the clusters and load assignments; routes the encoded
	// gateway routes, each already framed as a VirtualHost.routes field.
	envoy  []typed
	routes []byte
	// routesHash digests routes, so the gateway route configuration's hash
	// is made from the endpoints' hashes rather than from its megabytes.
	routesHash uint64
	// weights are the endpoint's entries of Envoy's runtime layer
	// (endpointWeights), spliced into the Runtime resource.
	weights []byte
	grpc    []typed
}

type typed struct {
	typ resource.Type
	enc *Encoded
}

// NewTranslator returns a Translator that has built nothing yet.
func NewTranslator() *Translator {
	t := &Translator{}
	t.Reset()
	return t
}

// Reset forgets everything built: the next Update builds every endpoint
// and reports every resource as changed.
func (t *Translator) Reset() {
	t.units = map[string]*unit{}
	t.global = map[resource.Type]*Encoded{}
	t.order = nil
	t.weightsOrder = nil
	t.extProcTarget = ""
	t.sets = map[NodeKind]Set{}
	t.owner = map[NodeKind]map[resource.Type]map[string]string{}
	t.sizes = map[NodeKind]map[resource.Type]*typeSize{}
	for _, k := range Kinds {
		t.sets[k] = Set{}
		t.owner[k] = map[resource.Type]map[string]string{}
		t.sizes[k] = map[resource.Type]*typeSize{}
	}
}

// Set is a node kind's current resources. The caller must not modify it;
// it changes on the next Update.
func (t *Translator) Set(kind NodeKind) Set { return t.sets[kind] }

// Stats tells what the last Update did.
type Stats struct {
	Endpoints, Rebuilt int
}

// Update brings the resources in line with cfg and returns what changed.
// On error, the Translator is as before the call.
func (t *Translator) Update(cfg *config.Config) (Changes, Stats, error) {
	target := cfg.ExtProcTarget()
	// Every gRPC resource names the target: with a new one, every
	// endpoint's gRPC resources are built again (its Envoy ones only if
	// the endpoint changed too).
	retarget := target != t.extProcTarget
	seen := make(map[string]bool, len(cfg.Endpoints))
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		if seen[e.Name] {
			return nil, Stats{}, fmt.Errorf("endpoint %q is defined twice", e.Name)
		}
		seen[e.Name] = true
	}
	stale, keepEnvoy := t.staleEndpoints(cfg.Endpoints, retarget)
	built, err := buildUnits(cfg.Endpoints, stale, keepEnvoy, target)
	if err != nil {
		return nil, Stats{}, err
	}
	global, err := encodeAll(envoyGlobal(cfg))
	if err != nil {
		return nil, Stats{}, err
	}
	globalChanged := len(global) != len(t.global)
	for typ, enc := range global {
		if old := t.global[typ]; old == nil || old.Hash != enc.Hash || old.Name != enc.Name {
			globalChanged = true
		}
	}
	if globalChanged {
		if err := checkEnvoyGlobal(cfg); err != nil {
			return nil, Stats{}, err
		}
	}

	// Nothing can fail past this point but a name clash or the route
	// configuration's encoding, both found before anything is committed.
	next := make(map[string]*unit, len(cfg.Endpoints))
	gone := 0
	for name, u := range t.units {
		if seen[name] {
			next[name] = u
		} else {
			gone++
		}
	}
	for k, i := range stale {
		next[cfg.Endpoints[i].Name] = built[k]
	}
	order := make([]string, 0, len(cfg.Endpoints))
	for _, i := range gatewayRouteOrder(cfg.Endpoints) {
		order = append(order, cfg.Endpoints[i].Name)
	}
	recompose := len(t.units) != len(next) || !slicesEqual(order, t.order) || t.sets[KindEnvoy][resource.RouteType][GatewayRouteName] == nil
	if !recompose {
		// Since the weights went to Envoy's runtime, a weight change leaves
		// the endpoint's routes byte for byte the same: the route
		// configuration would come out the same, so it is not spliced
		// again (at 1,000 endpoints, copying 5.4 MB and the garbage
		// collection that brings were most of such an Update).
		for _, i := range stale {
			name := cfg.Endpoints[i].Name
			if old := t.units[name]; old == nil || !bytes.Equal(old.routes, next[name].routes) {
				recompose = true
				break
			}
		}
	}
	// The owner checks of each kind and the route configuration only read:
	// on a large update they run side by side.
	big := len(stale)+gone >= parallelCommit
	ownerErrs := make([]ownerErr, len(Kinds))
	var rc *Encoded
	var rcErr error
	tasks := []func(){func() {
		if recompose {
			rc, rcErr = composeGatewayRoutes(order, next)
		}
	}}
	for k, kind := range Kinds {
		tasks = append(tasks, func() { ownerErrs[k] = t.checkOwners(kind, next, stale, cfg.Endpoints, global) })
	}
	runAll(big, tasks)
	if err := firstOwnerErr(ownerErrs); err != nil {
		return nil, Stats{}, err
	}
	if rcErr != nil {
		return nil, Stats{}, rcErr
	}

	// Nothing fails from here. Each kind's set, owners and sizes are its
	// own, so the kinds are brought up to date side by side (at 10,000
	// endpoints, 160,000 resources).
	parts := make([]Changes, len(Kinds))
	tasks = tasks[:0]
	for k, kind := range Kinds {
		tasks = append(tasks, func() {
			ch := Changes{}
			if big {
				t.reserve(kind, stale, cfg.Endpoints, next, ch)
			}
			for _, i := range stale {
				name := cfg.Endpoints[i].Name
				t.replaceUnit(kind, name, t.units[name], next[name], ch)
			}
			for name, old := range t.units {
				if !seen[name] {
					t.replaceUnit(kind, name, old, nil, ch)
				}
			}
			if kind == KindEnvoy {
				if globalChanged {
					for typ, enc := range global {
						t.put(KindEnvoy, typ, enc, "", ch)
					}
					for typ, old := range t.global {
						if now := global[typ]; now == nil || now.Name != old.Name {
							t.remove(KindEnvoy, typ, old.Name, ch)
						}
					}
				}
				if rc != nil {
					t.put(KindEnvoy, resource.RouteType, rc, "", ch)
				}
			}
			for typ, names := range ch[kind] {
				if len(names) == 0 {
					delete(ch[kind], typ) // reserved, not changed
				}
			}
			if len(ch[kind]) == 0 {
				delete(ch, kind)
			}
			parts[k] = ch
		})
	}
	runAll(big, tasks)
	changes := Changes{}
	for _, p := range parts {
		for kind, ch := range p {
			changes[kind] = ch
		}
	}
	if globalChanged {
		t.global = global
	}
	// The runtime layer: a weight change lands here only, as the routes
	// above come out byte for byte the same (put reports no change).
	if len(stale) > 0 || len(t.units) != len(next) || t.sets[KindEnvoy][resource.RuntimeType][WeightsRuntimeName] == nil {
		wo := t.weightsOrder
		if len(t.units) != len(next) || t.sets[KindEnvoy][resource.RuntimeType][WeightsRuntimeName] == nil || anyNew(t.units, cfg.Endpoints, stale) {
			wo = weightsOrder(order)
		}
		t.put(KindEnvoy, resource.RuntimeType, composeWeightsRuntime(wo, func(n string) []byte { return next[n].weights }), "", changes)
		t.weightsOrder = wo
	}
	t.units, t.order, t.extProcTarget = next, order, target
	return changes, Stats{Endpoints: len(cfg.Endpoints), Rebuilt: len(stale)}, nil
}

// anyNew reports whether an endpoint at one of the indexes was not built
// before.
func anyNew(units map[string]*unit, endpoints []config.Endpoint, idx []int) bool {
	for _, i := range idx {
		if units[endpoints[i].Name] == nil {
			return true
		}
	}
	return false
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// staleEndpoints lists the indexes of the endpoints that are new or differ
// from the copy kept when they were built (sameEndpoint: DeepEqual's rules,
// compiled). At 1,000 endpoints they are still a large part of an Update
// that changes one, so they run on every core. With retarget, every
// endpoint is stale, and keepEnvoy holds, for those that are unchanged,
// the unit whose Envoy resources stay.
func (t *Translator) staleEndpoints(endpoints []config.Endpoint, retarget bool) (stale []int, keepEnvoy []*unit) {
	workers := min(runtime.GOMAXPROCS(0), max(1, len(endpoints)/256))
	type part struct {
		stale []int
		keep  []*unit
	}
	parts := make([]part, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lo, hi := w*len(endpoints)/workers, (w+1)*len(endpoints)/workers
			p := &parts[w]
			for i := lo; i < hi; i++ {
				e := &endpoints[i]
				u := t.units[e.Name]
				switch same := u != nil && sameEndpoint(&u.src, e); {
				case !same:
					p.stale, p.keep = append(p.stale, i), append(p.keep, nil)
				case retarget:
					p.stale, p.keep = append(p.stale, i), append(p.keep, u)
				}
			}
		}()
	}
	wg.Wait()
	for _, p := range parts {
		stale = append(stale, p.stale...)
		keepEnvoy = append(keepEnvoy, p.keep...)
	}
	return stale, keepEnvoy
}

// buildUnits builds the endpoints at the given indexes, on every core when
// there are many (a full build of 10,000 endpoints); keepEnvoy[k], when
// set, is a unit whose Envoy resources endpoint idx[k] keeps.
func buildUnits(endpoints []config.Endpoint, idx []int, keepEnvoy []*unit, target string) ([]*unit, error) {
	out := make([]*unit, len(idx))
	errs := make([]error, len(idx))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(idx)/64))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < len(idx); k += workers {
				out[k], errs[k] = buildUnit(&endpoints[idx[k]], target, keepEnvoy[k])
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// buildUnit builds, encodes and checks one endpoint for every node kind.
// Check reads the encodings made here (the bytes that are served) rather
// than encoding the resources again. With keep (the endpoint's unit, built
// from an equal endpoint), its Envoy resources are kept and only the gRPC
// ones built: they alone name the ext_proc target.
func buildUnit(e *config.Endpoint, target string, keep *unit) (*unit, error) {
	if keep != nil {
		return buildGRPCPart(&unit{src: keep.src, envoy: keep.envoy, routes: keep.routes, routesHash: keep.routesHash, weights: keep.weights}, e, target)
	}
	u := &unit{src: cloneEndpoint(e)}
	envoy := envoyEndpoint(e)
	routes := gatewayEndpointRoutes(e)
	encoded := make(map[types.Resource][]byte, 16)
	var encodeErr error
	u.envoy, encodeErr = encodeTyped(envoy, encoded)
	if encodeErr == nil {
		u.routes, encodeErr = appendRoutes(nil, routes)
	}
	// The endpoint's slice of the gateway route configuration, checked with
	// its clusters: every reference it makes is to its own clusters.
	shell := gatewayRouteShell()
	if encodeErr == nil {
		shell.VirtualHosts[0].Routes = nil
		var rs routeShell
		if rs, encodeErr = encodeRouteShell(shell); encodeErr == nil {
			encoded[shell] = rs.compose(len(u.routes), func(yield func([]byte)) { yield(u.routes) })
		}
	}
	shell.VirtualHosts[0].Routes = routes
	checked := Resources{resource.RouteType: {shell}}
	for typ, list := range envoy {
		checked[typ] = list
	}
	// A resource that failed to encode is encoded again by check, which
	// reports it.
	lookup := func(r types.Resource) []byte { return encoded[r] }
	if err := check(checked, lookup); err != nil {
		return nil, fmt.Errorf("resources for %s nodes: endpoint %s: %w", KindEnvoy, e.Name, err)
	}
	if encodeErr != nil {
		return nil, encodeErr
	}
	u.routesHash = xxhash.Sum64(u.routes)
	var err error
	if u.weights, err = endpointWeights(e); err != nil {
		return nil, err
	}
	return buildGRPCPart(u, e, target)
}

// buildGRPCPart builds, encodes and checks the endpoint's resources for
// gRPC nodes into u.
func buildGRPCPart(u *unit, e *config.Endpoint, target string) (*unit, error) {
	grpc, err := grpcEndpoint(e, target)
	if err != nil {
		return nil, fmt.Errorf("resources for %s nodes: %w", KindGRPC, err)
	}
	encoded := make(map[types.Resource][]byte, 16)
	var encodeErr error
	u.grpc, encodeErr = encodeTyped(grpc, encoded)
	if err := check(grpc, func(r types.Resource) []byte { return encoded[r] }); err != nil {
		return nil, fmt.Errorf("resources for %s nodes: endpoint %s: %w", KindGRPC, e.Name, err)
	}
	if encodeErr != nil {
		return nil, encodeErr
	}
	return u, nil
}

// appendRoutes appends routes to b, encoded, each framed as a
// VirtualHost.routes field: sized first, then encoded in place, so each
// is encoded once and copied never.
func appendRoutes(b []byte, routes []*routev3.Route) ([]byte, error) {
	sizes := make([]int, len(routes))
	total := len(b)
	for i, r := range routes {
		sizes[i] = deterministic.Size(r)
		total += protowire.SizeTag(vhRoutesField) + protowire.SizeBytes(sizes[i])
	}
	if b == nil {
		b = make([]byte, 0, total)
	}
	for i, r := range routes {
		b = protowire.AppendTag(b, vhRoutesField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizes[i]))
		n := len(b)
		var err error
		// Size left each message's size cached: encode with it.
		if b, err = cachedSize.MarshalAppend(b, r); err != nil {
			return nil, fmt.Errorf("encode %T: %w", r, err)
		}
		if len(b)-n != sizes[i] {
			return nil, fmt.Errorf("encode %T: %d bytes, sized %d", r, len(b)-n, sizes[i])
		}
	}
	return b, nil
}

var cachedSize = proto.MarshalOptions{Deterministic: true, UseCachedSize: true}

// cloneEndpoint deep-copies an endpoint the way Config.Clone does.
func cloneEndpoint(e *config.Endpoint) config.Endpoint {
	return (&config.Config{Endpoints: []config.Endpoint{*e}}).Clone().Endpoints[0]
}

// checkEnvoyGlobal checks the listener and the ext_proc cluster with the
// gateway route configuration's shell, which the listener refers to.
func checkEnvoyGlobal(cfg *config.Config) error {
	res, err := envoyGlobal(cfg)
	if err != nil {
		return err
	}
	res.add(resource.RouteType, gatewayRouteShell())
	if err := Check(res); err != nil {
		return fmt.Errorf("resources for %s nodes: %w", KindEnvoy, err)
	}
	return nil
}

// parallelCommit is the number of endpoints built or removed from which
// Update checks owners and commits each node kind on its own goroutine.
const parallelCommit = 64

// runAll runs the tasks, side by side when parallel.
func runAll(parallel bool, tasks []func()) {
	if !parallel {
		for _, f := range tasks {
			f()
		}
		return
	}
	var wg sync.WaitGroup
	for _, f := range tasks {
		wg.Go(f)
	}
	wg.Wait()
}

// ownerErr is a kind's first name clash, and where it was found: the
// position in the built endpoints (-1: the gateway's own resources).
type ownerErr struct {
	pos int
	err error
}

// firstOwnerErr is the clash met first by a walk of the gateway's
// resources, then each built endpoint's, kind by kind.
func firstOwnerErr(errs []ownerErr) error {
	var first *ownerErr
	for i := range errs {
		if e := &errs[i]; e.err != nil && (first == nil || e.pos < first.pos) {
			first = e
		}
	}
	if first == nil {
		return nil
	}
	return first.err
}

// checkOwners refuses a resource name of a kind that two endpoints (or an
// endpoint and the gateway's own resources) would both define: a cache
// keyed by name would silently keep one.
func (t *Translator) checkOwners(kind NodeKind, next map[string]*unit, stale []int, endpoints []config.Endpoint, global map[resource.Type]*Encoded) ownerErr {
	type key struct {
		typ  resource.Type
		name string
	}
	n := 0
	for _, i := range stale {
		n += len(next[endpoints[i].Name].of(kind))
	}
	claimed := make(map[key]string, n)
	claim := func(k key, by string) error {
		other, ok := claimed[k]
		if !ok {
			// An owner that keeps its resources unchanged in this update.
			o, held := t.owner[kind][k.typ][k.name]
			ok = held && o != by && (o == "" || next[o] != nil && next[o] == t.units[o])
			other = o
		}
		if ok && other != by {
			return fmt.Errorf("resources for %s nodes: %s %s is defined by both %s and %s", kind, TypeShort(k.typ), k.name, describeOwner(other), describeOwner(by))
		}
		claimed[k] = by
		return nil
	}
	if kind == KindEnvoy {
		for typ, enc := range global {
			if err := claim(key{typ, enc.Name}, ""); err != nil {
				return ownerErr{-1, err}
			}
		}
	}
	for p, i := range stale {
		name := endpoints[i].Name
		for _, r := range next[name].of(kind) {
			if err := claim(key{r.typ, r.enc.Name}, name); err != nil {
				return ownerErr{p, err}
			}
		}
	}
	return ownerErr{}
}

func describeOwner(endpoint string) string {
	if endpoint == "" {
		return "the gateway"
	}
	return "endpoint " + strconv.Quote(endpoint)
}

// replaceUnit swaps an endpoint's resources of one kind (old or now nil
// when it is new or gone): what it still defines is put (a change only if
// its bytes differ), what it no longer defines is removed.
func (t *Translator) replaceUnit(kind NodeKind, name string, old, now *unit, changes Changes) {
	type key struct {
		typ  resource.Type
		name string
	}
	for _, r := range now.of(kind) {
		t.put(kind, r.typ, r.enc, name, changes)
	}
	if old == nil {
		return
	}
	kept := map[key]bool{}
	for _, r := range now.of(kind) {
		kept[key{r.typ, r.enc.Name}] = true
	}
	for _, r := range old.of(kind) {
		if !kept[key{r.typ, r.enc.Name}] && t.owner[kind][r.typ][r.enc.Name] == name {
			t.remove(kind, r.typ, r.enc.Name, changes)
		}
	}
}

// reserve sizes a kind's empty maps (a first build) for the resources the
// stale endpoints bring, so tens of thousands of names are not inserted
// through repeated growth.
func (t *Translator) reserve(kind NodeKind, stale []int, endpoints []config.Endpoint, next map[string]*unit, ch Changes) {
	n := map[resource.Type]int{}
	for _, i := range stale {
		for _, r := range next[endpoints[i].Name].of(kind) {
			n[r.typ]++
		}
	}
	for typ, count := range n {
		if len(t.sets[kind][typ]) == 0 {
			t.sets[kind][typ] = make(map[string]*Encoded, count)
			t.owner[kind][typ] = make(map[string]string, count)
		}
		if ch[kind] == nil {
			ch[kind] = map[resource.Type]map[string]struct{}{}
		}
		ch[kind][typ] = make(map[string]struct{}, count)
	}
}

// of is the unit's resources for a kind; none for a nil unit.
func (u *unit) of(kind NodeKind) []typed {
	switch {
	case u == nil:
		return nil
	case kind == KindEnvoy:
		return u.envoy
	}
	return u.grpc
}

func (t *Translator) remove(kind NodeKind, typ resource.Type, name string, changes Changes) {
	if old := t.sets[kind][typ][name]; old != nil {
		t.sized(kind, typ, name, len(old.Bytes), -1)
	}
	delete(t.sets[kind][typ], name)
	delete(t.owner[kind][typ], name)
	changes.add(kind, typ, name)
}

// put records a resource; it counts as a change only when its bytes do.
func (t *Translator) put(kind NodeKind, typ resource.Type, enc *Encoded, owner string, changes Changes) {
	set := t.sets[kind]
	if set[typ] == nil {
		set[typ] = map[string]*Encoded{}
		t.owner[kind][typ] = map[string]string{}
	}
	old := set[typ][enc.Name]
	if old != nil {
		t.sized(kind, typ, enc.Name, len(old.Bytes), -1)
	}
	t.sized(kind, typ, enc.Name, len(enc.Bytes), +1)
	set[typ][enc.Name] = enc
	t.owner[kind][typ][enc.Name] = owner
	if old == nil || old.Hash != enc.Hash || !bytes.Equal(old.Bytes, enc.Bytes) {
		changes.add(kind, typ, enc.Name)
	}
}

// sized counts a resource of n bytes into (sign +1) or out of (-1) its
// type's sizes.
func (t *Translator) sized(kind NodeKind, typ resource.Type, name string, n, sign int) {
	ts := t.sizes[kind][typ]
	if ts == nil {
		ts = &typeSize{big: map[string]int{}}
		t.sizes[kind][typ] = ts
	}
	ts.total += sign * n
	ts.count += sign
	if n >= bigResource {
		if sign > 0 {
			ts.big[name] = n
		} else {
			delete(ts.big, name)
		}
	}
}

// Oversized is OversizedInSet(t.Set(kind), kind, limit), from the sizes
// kept as resources change rather than from every resource.
func (t *Translator) Oversized(kind NodeKind, limit int) []Oversized {
	if limit < bigResource {
		return OversizedInSet(t.sets[kind], kind, limit)
	}
	var out []Oversized
	for typ, ts := range t.sizes[kind] {
		for name, n := range ts.big {
			if n > limit {
				out = append(out, Oversized{Kind: kind, Type: shortType(typ), Name: name, Bytes: n, Limit: limit})
			}
		}
		if ts.total > limit && ts.count > 1 {
			out = append(out, Oversized{Kind: kind, Type: shortType(typ), Bytes: ts.total, Limit: limit})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bytes > out[j].Bytes })
	return out
}

// Field numbers of the gateway route configuration that
// composeGatewayRoutes splices the endpoints' routes into.
const (
	rcVirtualHostsField protowire.Number = 2 // RouteConfiguration.virtual_hosts
	vhRoutesField       protowire.Number = 3 // VirtualHost.routes
)

// composeGatewayRoutes encodes the gateway route configuration from the
// endpoints' encoded routes, without encoding them again: a message's
// encoding is its fields' encodings in field order, so the configuration is
// its shell's fields before virtual_hosts, the virtual host, then the
// shell's fields after it; the virtual host is likewise its own fields
// before routes, every endpoint's routes in gateway order, the unmatched
// route, then its fields after routes. The result is byte for byte what
// encoding gatewayRouteConfig would give (TestComposedRoutesEqualEncoded).
func composeGatewayRoutes(order []string, units map[string]*unit) (*Encoded, error) {
	rs, err := encodeRouteShell(gatewayRouteShell())
	if err != nil {
		return nil, err
	}
	parts := make([]*unit, len(order))
	n := 0
	for i, name := range order {
		parts[i] = units[name]
		n += len(parts[i].routes)
	}
	// One buffer, written once: at 1,000 endpoints it is megabytes.
	out := rs.compose(n, func(yield func([]byte)) {
		for _, u := range parts {
			yield(u.routes)
		}
	})
	// The hash covers every part by its digest: equal parts in equal order
	// give an equal hash, and any changed route changes its endpoint's
	// digest.
	h := xxhash.New()
	var d [8]byte
	for _, part := range [][]byte{rs.rcBefore, rs.vhBefore, rs.tail, rs.vhAfter, rs.rcAfter} {
		binary.LittleEndian.PutUint64(d[:], xxhash.Sum64(part))
		h.Write(d[:])
	}
	for i, name := range order {
		binary.LittleEndian.PutUint64(d[:], parts[i].routesHash)
		h.Write(d[:])
		h.WriteString(name)
	}
	return &Encoded{Name: GatewayRouteName, Bytes: out, Hash: "r" + strconv.FormatUint(h.Sum64(), 36)}, nil
}

// routeShell is a route configuration of one virtual host, encoded in the
// parts that routes are spliced between: the configuration's fields before
// and after virtual_hosts, the virtual host's before and after routes, and
// the virtual host's own routes (tail), which stay after the spliced ones.
type routeShell struct {
	rcBefore, vhBefore, tail, vhAfter, rcAfter []byte
}

func encodeRouteShell(shell *routev3.RouteConfiguration) (routeShell, error) {
	var rs routeShell
	vhs := shell.VirtualHosts
	vh := vhs[0]
	tail := vh.Routes
	// Encoded without them, then put back.
	vh.Routes, shell.VirtualHosts = nil, nil
	defer func() { vh.Routes, shell.VirtualHosts = tail, vhs }()
	rcBytes, err := marshal(shell)
	if err != nil {
		return rs, err
	}
	vhBytes, err := marshal(vh)
	if err != nil {
		return rs, err
	}
	if rs.tail, err = appendRoutes(nil, tail); err != nil {
		return rs, err
	}
	if rs.vhBefore, rs.vhAfter, err = splitAt(vhBytes, vhRoutesField); err != nil {
		return rs, err
	}
	if rs.rcBefore, rs.rcAfter, err = splitAt(rcBytes, rcVirtualHostsField); err != nil {
		return rs, err
	}
	return rs, nil
}

// compose encodes the configuration with routes (n bytes in all, yielded
// by each, already framed as VirtualHost.routes fields) before the
// virtual host's own.
func (rs routeShell) compose(n int, each func(yield func([]byte))) []byte {
	vhLen := len(rs.vhBefore) + n + len(rs.tail) + len(rs.vhAfter)
	out := make([]byte, 0, len(rs.rcBefore)+len(rs.rcAfter)+vhLen+2*binary.MaxVarintLen64)
	out = append(out, rs.rcBefore...)
	out = protowire.AppendTag(out, rcVirtualHostsField, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(vhLen))
	out = append(out, rs.vhBefore...)
	each(func(b []byte) { out = append(out, b...) })
	out = append(out, rs.tail...)
	out = append(out, rs.vhAfter...)
	out = append(out, rs.rcAfter...)
	return out
}

// splitAt splits an encoded message before its first field numbered above
// n (the message has no field n itself).
func splitAt(b []byte, n protowire.Number) (before, after []byte, err error) {
	for i := 0; i < len(b); {
		num, typ, l := protowire.ConsumeTag(b[i:])
		if l < 0 {
			return nil, nil, protowire.ParseError(l)
		}
		if num > n {
			return b[:i], b[i:], nil
		}
		m := protowire.ConsumeFieldValue(num, typ, b[i+l:])
		if m < 0 {
			return nil, nil, protowire.ParseError(m)
		}
		i += l + m
	}
	return b, nil, nil
}

var deterministic = proto.MarshalOptions{Deterministic: true}

func marshal(m proto.Message) ([]byte, error) {
	b, err := deterministic.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	return b, nil
}

func newEncoded(name string, b []byte) *Encoded {
	return &Encoded{Name: name, Bytes: b, Hash: strconv.FormatUint(xxhash.Sum64(b), 36)}
}

// Encode encodes one resource.
func Encode(r types.Resource) (*Encoded, error) {
	b, err := marshal(r)
	if err != nil {
		return nil, err
	}
	return newEncoded(resourceName(r), b), nil
}

// encodeTyped encodes every resource, in type order, and records each
// one's encoding in encoded.
func encodeTyped(res Resources, encoded map[types.Resource][]byte) ([]typed, error) {
	n := 0
	for _, list := range res {
		n += len(list)
	}
	out := make([]typed, 0, n)
	for _, typ := range sortedTypes(res) {
		for _, r := range res[typ] {
			enc, err := Encode(r)
			if err != nil {
				return nil, err
			}
			encoded[r] = enc.Bytes
			out = append(out, typed{typ, enc})
		}
	}
	return out, nil
}

func encodeAll(res Resources, err error) (map[resource.Type]*Encoded, error) {
	if err != nil {
		return nil, err
	}
	out := map[resource.Type]*Encoded{}
	for typ, list := range res {
		if len(list) != 1 {
			return nil, fmt.Errorf("gateway: %d %s resources, want 1", len(list), TypeShort(typ))
		}
		enc, err := Encode(list[0])
		if err != nil {
			return nil, err
		}
		out[typ] = enc
	}
	return out, nil
}
