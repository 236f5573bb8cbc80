package translate

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// CheckError lists every problem found in a resource set.
type CheckError struct{ Problems []string }

func (e *CheckError) Error() string {
	return fmt.Sprintf("%d invalid xDS resource(s):\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// Check validates every resource recursively with Envoy's own proto rules —
// including the messages inside every Any, which ValidateAll alone skips —
// and checks the references between resources that Snapshot.Consistent
// does not (routes → clusters, api_listeners → routes, mirrors, weights).
// It returns a *CheckError listing every problem, or nil.
func Check(res Resources) error {
	c := &checker{res: res, unpacked: map[*anypb.Any]proto.Message{}}
	for _, t := range sortedTypes(res) {
		for _, r := range res[t] {
			if r == nil {
				c.addf("%s: nil resource", TypeShort(t))
				continue
			}
			c.deepValidate(r, &fieldPath{name: TypeShort(t) + " " + resourceName(r), index: -1})
		}
	}
	c.references()
	if len(c.problems) == 0 {
		return nil
	}
	// The reference checks walk maps; sorted, the same mistakes always
	// read the same (in logs, tests and `modelsplit validate`).
	sort.Strings(c.problems)
	return &CheckError{Problems: c.problems}
}

type checker struct {
	res      Resources
	problems []string
	// unpacked holds each Any's message as deepValidate decoded it (nil
	// when it could not be), so the reference checks do not decode it
	// again and an Any shared by several routes is validated once.
	unpacked map[*anypb.Any]proto.Message
}

// unpack returns the message inside a, or nil.
func (c *checker) unpack(a *anypb.Any) proto.Message {
	if m, ok := c.unpacked[a]; ok {
		return m
	}
	if m, err := a.UnmarshalNew(); err == nil {
		return m
	}
	return nil
}

// hcmsOf is listenerHCMs through the decoded-Any cache.
func (c *checker) hcmsOf(l *listenerv3.Listener) []*hcmv3.HttpConnectionManager {
	var out []*hcmv3.HttpConnectionManager
	if h, ok := c.unpack(l.GetApiListener().GetApiListener()).(*hcmv3.HttpConnectionManager); ok {
		out = append(out, h)
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if h, ok := c.unpack(f.GetTypedConfig()).(*hcmv3.HttpConnectionManager); ok {
				out = append(out, h)
			}
		}
	}
	return out
}

func (c *checker) addf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

type validatorAll interface{ ValidateAll() error }

// deepValidate runs PGV on m, then finds every Any below it, unpacks it and
// validates that too (recursively).
func (c *checker) deepValidate(m proto.Message, at *fieldPath) {
	if v, ok := m.(validatorAll); ok {
		if err := v.ValidateAll(); err != nil {
			c.addf("%s: %v", at, flattenPGV(err))
		}
	}
	c.walkAnys(m.ProtoReflect(), at)
}

// walkAnys descends only through the fields from which an Any can be
// reached: most of a resource (addresses, matchers, durations) cannot hold
// one, and skipping it keeps Check cheap on thousands of routes.
func (c *checker) walkAnys(m protoreflect.Message, at *fieldPath) {
	for _, fd := range fieldsReachingAny(m.Descriptor()) {
		if !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				c.visit(l.Get(i).Message(), &fieldPath{parent: at, name: string(fd.Name()), index: i})
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				c.visit(mv.Message(), &fieldPath{parent: at, name: string(fd.Name()), key: k.String(), index: -1})
				return true
			})
		default:
			c.visit(v.Message(), &fieldPath{parent: at, name: string(fd.Name()), index: -1})
		}
	}
}

func (c *checker) visit(m protoreflect.Message, at *fieldPath) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		if _, seen := c.unpacked[a]; seen {
			return
		}
		if a.GetTypeUrl() == ClusterSpecifierTypeURL {
			// grpc-go's RLS config type is not linked into modelsplit (its
			// Go package is internal); the rls package decodes and checks it
			// with grpc-go's own rules.
			c.unpacked[a] = nil
			if err := CheckClusterSpecifier(a); err != nil {
				c.addf("%s: %v", at, err)
			}
			return
		}
		inner, err := a.UnmarshalNew()
		c.unpacked[a] = inner // nil on error: reported once, below
		if err != nil {
			c.addf("%s: cannot unpack Any %s: %v", at, a.GetTypeUrl(), err)
			return
		}
		c.deepValidate(inner, &fieldPath{parent: at, name: "<" + string(inner.ProtoReflect().Descriptor().Name()) + ">", index: -1})
		return
	}
	c.walkAnys(m, at)
}

// fieldPath is a field's location, rendered only when a problem is found
// (building strings for every field visited dominated Check's cost).
type fieldPath struct {
	parent *fieldPath
	name   string
	key    string
	index  int // -1 when not a list element
}

func (p *fieldPath) String() string {
	if p == nil {
		return ""
	}
	var parts []string
	for q := p; q != nil; q = q.parent {
		s := q.name
		switch {
		case q.index >= 0:
			s += "[" + strconv.Itoa(q.index) + "]"
		case q.key != "":
			s += "[" + q.key + "]"
		}
		parts = append(parts, s)
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		if b.Len() > 0 && !strings.HasPrefix(parts[i], "<") {
			b.WriteByte('.')
		}
		b.WriteString(parts[i])
	}
	return b.String()
}

var anyName = (&anypb.Any{}).ProtoReflect().Descriptor().FullName()

// reachesAny reports whether an Any can occur anywhere below a message
// type; computed once per type by a walk over the type graph.
func reachesAny(md protoreflect.MessageDescriptor) bool {
	if v, ok := reachesAnyCache.Load(md.FullName()); ok {
		return v.(bool)
	}
	seen := map[protoreflect.FullName]bool{}
	stack := []protoreflect.MessageDescriptor{md}
	found := false
	for len(stack) > 0 && !found {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if cur.FullName() == anyName {
			found = true
			break
		}
		if seen[cur.FullName()] {
			continue
		}
		seen[cur.FullName()] = true
		fields := cur.Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			if fd.IsMap() {
				fd = fd.MapValue()
			}
			if fd.Message() != nil {
				stack = append(stack, fd.Message())
			}
		}
	}
	reachesAnyCache.Store(md.FullName(), found)
	return found
}

var reachesAnyCache sync.Map // protoreflect.FullName → bool

// fieldsReachingAny lists, once per message type, the message-valued
// fields below which an Any can occur.
func fieldsReachingAny(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	if v, ok := anyFieldsCache.Load(md.FullName()); ok {
		return v.([]protoreflect.FieldDescriptor)
	}
	var out []protoreflect.FieldDescriptor
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub != nil && reachesAny(sub) {
			out = append(out, fd)
		}
	}
	anyFieldsCache.Store(md.FullName(), out)
	return out
}

var anyFieldsCache sync.Map // protoreflect.FullName → []protoreflect.FieldDescriptor

// flattenPGV turns PGV's multi-error into one line.
func flattenPGV(err error) string {
	var multi interface{ AllErrors() []error }
	if errors.As(err, &multi) {
		parts := make([]string, 0, len(multi.AllErrors()))
		for _, e := range multi.AllErrors() {
			parts = append(parts, e.Error())
		}
		return strings.Join(parts, "; ")
	}
	return err.Error()
}

// references checks the links between resources.
func (c *checker) references() {
	clusters := map[string]*clusterv3.Cluster{}
	for _, r := range c.res[resource.ClusterType] {
		cl, ok := r.(*clusterv3.Cluster)
		if !ok {
			c.addf("cluster list holds a %T", r)
			continue
		}
		if _, dup := clusters[cl.GetName()]; dup {
			c.addf("cluster %s: defined twice", cl.GetName())
		}
		clusters[cl.GetName()] = cl
	}
	routes := map[string]*routev3.RouteConfiguration{}
	for _, r := range c.res[resource.RouteType] {
		rc, ok := r.(*routev3.RouteConfiguration)
		if !ok {
			c.addf("route list holds a %T", r)
			continue
		}
		if _, dup := routes[rc.GetName()]; dup {
			c.addf("route configuration %s: defined twice", rc.GetName())
		}
		routes[rc.GetName()] = rc
	}
	assignments := map[string]bool{}
	for _, r := range c.res[resource.EndpointType] {
		cla, ok := r.(*endpointv3.ClusterLoadAssignment)
		if !ok {
			c.addf("endpoint list holds a %T", r)
			continue
		}
		if assignments[cla.GetClusterName()] {
			c.addf("load assignment %s: defined twice", cla.GetClusterName())
		}
		assignments[cla.GetClusterName()] = true
		if cl, ok := clusters[cla.GetClusterName()]; !ok || cl.GetType() != clusterv3.Cluster_EDS {
			c.addf("load assignment %s: no EDS cluster of that name", cla.GetClusterName())
		}
	}
	for name, cl := range clusters {
		if cl.GetType() == clusterv3.Cluster_EDS && !assignments[name] {
			c.addf("cluster %s: EDS cluster without a load assignment", name)
		}
	}
	listeners := map[string]bool{}
	for _, r := range c.res[resource.ListenerType] {
		l, ok := r.(*listenerv3.Listener)
		if !ok {
			c.addf("listener list holds a %T", r)
			continue
		}
		// A snapshot keys resources by name: a second one would silently
		// replace the first.
		if listeners[l.GetName()] {
			c.addf("listener %s: defined twice", l.GetName())
		}
		listeners[l.GetName()] = true
		for _, hcm := range c.hcmsOf(l) {
			c.checkHCM(l.GetName(), hcm, routes, clusters)
		}
	}
	// A set with api_listeners is for proxyless gRPC clients: check what
	// grpc-go rejects but Envoy's proto rules allow.
	c.checkForGRPC()
	for _, rc := range routes {
		c.checkRouteConfig(rc, clusters)
		c.checkRLSDefaultTargets(rc, clusters)
	}
}

// listenerHCMs finds the connection managers of a listener, in filter
// chains (Envoy) or the api_listener (gRPC) — the latter is what
// Snapshot.Consistent misses.
func listenerHCMs(l *listenerv3.Listener) []*hcmv3.HttpConnectionManager {
	var out []*hcmv3.HttpConnectionManager
	unpack := func(a *anypb.Any) {
		h := &hcmv3.HttpConnectionManager{}
		if a != nil && a.UnmarshalTo(h) == nil {
			out = append(out, h)
		}
	}
	if l.GetApiListener() != nil {
		unpack(l.GetApiListener().GetApiListener())
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			unpack(f.GetTypedConfig())
		}
	}
	return out
}

func (c *checker) checkHCM(listener string, hcm *hcmv3.HttpConnectionManager, routes map[string]*routev3.RouteConfiguration, clusters map[string]*clusterv3.Cluster) {
	if rds := hcm.GetRds(); rds != nil {
		if _, ok := routes[rds.GetRouteConfigName()]; !ok {
			c.addf("listener %s: route configuration %q does not exist", listener, rds.GetRouteConfigName())
		}
	}
	// An inline route table (a hand-written or file-based set) references
	// clusters just like an RDS one.
	if rc := hcm.GetRouteConfig(); rc != nil {
		c.checkRouteConfig(rc, clusters)
	}
	for _, f := range hcm.GetHttpFilters() {
		ep, ok := c.unpack(f.GetTypedConfig()).(*extprocv3.ExternalProcessor)
		if !ok {
			continue
		}
		gs := ep.GetGrpcService()
		switch {
		case gs == nil:
			c.addf("listener %s: ext_proc filter %s has no grpc_service (modelsplit decides over gRPC)", listener, f.GetName())
		case gs.GetEnvoyGrpc() != nil:
			if _, ok := clusters[gs.GetEnvoyGrpc().GetClusterName()]; !ok {
				c.addf("listener %s: ext_proc cluster %q does not exist", listener, gs.GetEnvoyGrpc().GetClusterName())
			}
		}
	}
}

func (c *checker) checkRouteConfig(rc *routev3.RouteConfiguration, clusters map[string]*clusterv3.Cluster) {
	need := func(where, name string) {
		if _, ok := clusters[name]; !ok {
			c.addf("route %s: cluster %q does not exist", where, name)
		}
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			where := rc.GetName() + "/" + r.GetName()
			a := r.GetRoute()
			if a == nil {
				continue
			}
			switch {
			case a.GetCluster() != "":
				need(where, a.GetCluster())
			case a.GetClusterSpecifierPlugin() != "":
				if !hasSpecifierPlugin(rc, a.GetClusterSpecifierPlugin()) {
					c.addf("route %s: cluster_specifier_plugin %q is not defined in the route configuration", where, a.GetClusterSpecifierPlugin())
				}
			case a.GetWeightedClusters() != nil:
				total := uint64(0)
				for _, cw := range a.GetWeightedClusters().GetClusters() {
					need(where, cw.GetName())
					total += uint64(cw.GetWeight().GetValue())
				}
				if total == 0 {
					c.addf("route %s: weighted clusters sum to zero (Envoy and grpc-go reject it)", where)
				}
			}
			for i, m := range a.GetRequestMirrorPolicies() {
				switch {
				case (m.GetCluster() == "") == (m.GetClusterHeader() == ""):
					c.addf("route %s: mirror policy %d needs exactly one of cluster and cluster_header", where, i)
				case m.GetCluster() != "":
					need(where, m.GetCluster())
				}
			}
		}
	}
}

func sortedTypes(res Resources) []resource.Type {
	ts := make([]resource.Type, 0, len(res))
	for t := range res {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// TypeShort is the last part of a type URL ("Cluster", "RouteConfiguration").
func TypeShort(t resource.Type) string {
	if i := strings.LastIndex(t, "."); i >= 0 {
		return t[i+1:]
	}
	return t
}
