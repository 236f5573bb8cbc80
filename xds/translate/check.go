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
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
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
func Check(res Resources) error { return check(res, nil) }

// check is Check, given the resources' deterministic encodings when the
// caller made them already: encoded returns a resource's, or nil. The Anys
// are found in the encoding (what is served), not by reflection over the
// messages.
func check(res Resources, encoded func(types.Resource) []byte) error {
	c := &checker{res: res, unpacked: map[string]map[string]proto.Message{}, path: make([]pathElem, 0, 16)}
	for _, t := range sortedTypes(res) {
		for _, r := range res[t] {
			if r == nil {
				c.addf("%s: nil resource", TypeShort(t))
				continue
			}
			c.path = append(c.path[:0], pathElem{name: TypeShort(t) + " " + resourceName(r), index: -1})
			var b []byte
			if encoded != nil {
				b = encoded(r)
			}
			if b == nil {
				var err error
				if b, err = deterministic.Marshal(r); err != nil {
					c.addf("%s: cannot encode: %v", c.at(), err)
					b = nil
				}
			}
			c.deepValidate(r, b)
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
	// when it could not be), by type URL and value, so the reference
	// checks do not decode it again and equal Anys (several routes hold
	// the same per-filter configs) are decoded and validated once.
	unpacked map[string]map[string]proto.Message
	// failed holds the problems found in an Any, by type URL and value,
	// with the paths relative to it.
	failed map[string]map[string][]string
	// path is where the walk is, rendered only when a problem is found.
	path []pathElem
}

// unpack returns the message inside a, or nil.
func (c *checker) unpack(a *anypb.Any) proto.Message {
	if m, ok := c.unpacked[a.GetTypeUrl()][string(a.GetValue())]; ok {
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

// deepValidate runs PGV on m, then finds every Any in b, m's encoding,
// unpacks it and validates that too (recursively).
func (c *checker) deepValidate(m proto.Message, b []byte) {
	if v, ok := m.(validatorAll); ok {
		if err := v.ValidateAll(); err != nil {
			c.addf("%s: %v", c.at(), flattenPGV(err))
		}
	}
	if b != nil {
		c.walk(b, walkInfoOf(m.ProtoReflect().Descriptor()))
	}
}

// walk reads an encoded message of w's type and descends only into the
// fields from which an Any can be reached: most of a resource (addresses,
// matchers, durations) cannot hold one, and its bytes are skipped. Reading
// the encoding costs a fraction of walking the messages by reflection,
// which was most of Check's time on thousands of routes.
func (c *checker) walk(b []byte, w *walkInfo) {
	if w.fields == nil && w.byNum == nil {
		return
	}
	var small [8]int
	counts := small[:0]
	if w.lists > len(small) {
		counts = make([]int, w.lists)
	} else {
		counts = small[:w.lists]
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			c.addf("%s: %v", c.at(), protowire.ParseError(n))
			return
		}
		b = b[n:]
		f := w.field(num)
		if f == nil || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				c.addf("%s: %v", c.at(), protowire.ParseError(n))
				return
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			c.addf("%s: %v", c.at(), protowire.ParseError(n))
			return
		}
		b = b[n:]
		e := pathElem{name: f.name, index: -1}
		switch {
		case f.mapValue != nil:
			e.key, e.keyType, v = mapEntry(v)
			e.isKey = true
			c.path = append(c.path, e)
			c.visit(v, f.mapValue)
		default:
			if f.list >= 0 {
				e.index = counts[f.list]
				counts[f.list]++
			}
			c.path = append(c.path, e)
			c.visit(v, f.msg)
		}
		c.path = c.path[:len(c.path)-1]
	}
}

// visit checks the encoded message b of w's type: an Any is unpacked and
// validated, anything else walked.
func (c *checker) visit(b []byte, w *walkInfo) {
	if !w.isAny {
		c.walk(b, w)
		return
	}
	rawURL, value := anyFields(b)
	byValue := c.unpacked[string(rawURL)]
	if _, seen := byValue[string(value)]; seen {
		// Validated already: an equal Any elsewhere (routes share their
		// per-filter configs). Its problems, if any, are reported here too.
		for _, p := range c.failed[string(rawURL)][string(value)] {
			c.problems = append(c.problems, c.at()+p)
		}
		return
	}
	url := string(rawURL)
	if byValue == nil {
		byValue = map[string]proto.Message{}
		c.unpacked[url] = byValue
	}
	before := len(c.problems)
	c.unpackAndValidate(url, value, byValue)
	if len(c.problems) > before {
		// Kept relative to this Any, to be reported wherever it recurs.
		at := c.at()
		var rel []string
		for _, p := range c.problems[before:] {
			if strings.HasPrefix(p, at) {
				rel = append(rel, p[len(at):])
			}
		}
		if c.failed == nil {
			c.failed = map[string]map[string][]string{}
		}
		if c.failed[url] == nil {
			c.failed[url] = map[string][]string{}
		}
		c.failed[url][string(value)] = rel
	}
}

func (c *checker) unpackAndValidate(url string, value []byte, byValue map[string]proto.Message) {
	a := &anypb.Any{TypeUrl: url, Value: value}
	if url == ClusterSpecifierTypeURL {
		// grpc-go's RLS config type is not linked into modelsplit (its
		// Go package is internal); the rls package decodes and checks it
		// with grpc-go's own rules.
		byValue[string(value)] = nil
		if err := CheckClusterSpecifier(a); err != nil {
			c.addf("%s: %v", c.at(), err)
		}
		return
	}
	inner, err := a.UnmarshalNew()
	byValue[string(value)] = inner // nil on error: reported below
	if err != nil {
		c.addf("%s: cannot unpack Any %s: %v", c.at(), url, err)
		return
	}
	w := walkInfoOf(inner.ProtoReflect().Descriptor())
	c.path = append(c.path, pathElem{name: w.inAny, index: -1})
	c.deepValidate(inner, value)
	c.path = c.path[:len(c.path)-1]
}

// anyFields reads an encoded Any's type URL and value (the last of each,
// as decoding does).
func anyFields(b []byte) (url, value []byte) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return url, value
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return url, value
			}
			if num == 1 {
				url = v
			} else {
				value = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return url, value
		}
		b = b[n:]
	}
	return url, value
}

// mapEntry reads an encoded map entry: its key (raw, rendered only for a
// problem) and its value.
func mapEntry(b []byte) (key []byte, keyType protowire.Type, value []byte) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			break
		}
		switch num {
		case 1:
			key, keyType = b[:n], typ
		case 2:
			if v, m := protowire.ConsumeBytes(b[:n]); m >= 0 && typ == protowire.BytesType {
				value = v
			}
		}
		b = b[n:]
	}
	return key, keyType, value
}

// pathElem is one step of a field's location: a field, a list element
// (index ≥ 0), a map entry (its encoded key) or an Any's content ("<T>").
type pathElem struct {
	name    string
	index   int
	isKey   bool
	key     []byte
	keyType protowire.Type
}

// at renders the walk's current location.
func (c *checker) at() string {
	var b strings.Builder
	for i, e := range c.path {
		if i > 0 && !strings.HasPrefix(e.name, "<") {
			b.WriteByte('.')
		}
		b.WriteString(e.name)
		switch {
		case e.index >= 0:
			b.WriteString("[" + strconv.Itoa(e.index) + "]")
		case e.isKey:
			b.WriteString("[" + renderKey(e.key, e.keyType) + "]")
		}
	}
	return b.String()
}

// renderKey writes a map key as protoreflect.MapKey.String does for the
// key kinds Envoy's maps use (strings; integers and bools as numbers).
func renderKey(k []byte, typ protowire.Type) string {
	switch typ {
	case protowire.BytesType:
		if v, n := protowire.ConsumeBytes(k); n >= 0 {
			return string(v)
		}
	case protowire.VarintType:
		if v, n := protowire.ConsumeVarint(k); n >= 0 {
			return strconv.FormatUint(v, 10)
		}
	}
	return fmt.Sprintf("%x", k)
}

var anyName = (&anypb.Any{}).ProtoReflect().Descriptor().FullName()

// walkInfo is what walk needs of a message type, computed once per type:
// the message-valued fields from which an Any can be reached, by number.
type walkInfo struct {
	isAny  bool
	inAny  string       // "<Name>": the type's step in a path, inside an Any
	fields []*walkField // by field number, when numbers are small
	byNum  map[protowire.Number]*walkField
	lists  int // repeated fields among them, each counted in its own slot
}

type walkField struct {
	name     string
	list     int // slot counting a repeated field's elements; -1 if not repeated
	msg      *walkInfo
	mapValue *walkInfo // for a map field: its values' type
}

func (w *walkInfo) field(n protowire.Number) *walkField {
	if w.byNum != nil {
		return w.byNum[n]
	}
	if int(n) < len(w.fields) {
		return w.fields[n]
	}
	return nil
}

var walkInfos sync.Map // protoreflect.MessageDescriptor → *walkInfo

func walkInfoOf(md protoreflect.MessageDescriptor) *walkInfo {
	if v, ok := walkInfos.Load(md); ok {
		return v.(*walkInfo)
	}
	walkInfoMu.Lock()
	defer walkInfoMu.Unlock()
	if v, ok := walkInfos.Load(md); ok {
		return v.(*walkInfo)
	}
	// A recursive type reaches itself while being filled: the types are
	// published only once all of them are whole.
	pending := map[protoreflect.MessageDescriptor]*walkInfo{}
	w := fillWalkInfo(md, pending)
	for d, p := range pending {
		walkInfos.Store(d, p)
	}
	return w
}

var walkInfoMu sync.Mutex

// fillWalkInfo makes md's walkInfo, and those of the types below it not
// yet published, into pending.
func fillWalkInfo(md protoreflect.MessageDescriptor, pending map[protoreflect.MessageDescriptor]*walkInfo) *walkInfo {
	if v, ok := walkInfos.Load(md); ok {
		return v.(*walkInfo)
	}
	if w := pending[md]; w != nil {
		return w
	}
	w := &walkInfo{isAny: md.FullName() == anyName, inAny: "<" + string(md.Name()) + ">"}
	pending[md] = w
	if w.isAny {
		return w
	}
	fields := fieldsReachingAny(md)
	maxNum := protowire.Number(0)
	for _, fd := range fields {
		maxNum = max(maxNum, fd.Number())
	}
	if len(fields) > 0 && maxNum < 1024 {
		w.fields = make([]*walkField, maxNum+1)
	} else if len(fields) > 0 {
		w.byNum = make(map[protowire.Number]*walkField, len(fields))
	}
	for _, fd := range fields {
		f := &walkField{name: string(fd.Name()), list: -1}
		switch {
		case fd.IsMap():
			f.mapValue = fillWalkInfo(fd.MapValue().Message(), pending)
		case fd.IsList():
			f.list = w.lists
			w.lists++
			f.msg = fillWalkInfo(fd.Message(), pending)
		default:
			f.msg = fillWalkInfo(fd.Message(), pending)
		}
		if w.byNum != nil {
			w.byNum[fd.Number()] = f
		} else {
			w.fields[fd.Number()] = f
		}
	}
	return w
}

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

// fieldsReachingAny lists the message-valued fields of a type below which
// an Any can occur.
func fieldsReachingAny(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
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
	return out
}

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
