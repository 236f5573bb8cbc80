package translate

import (
	"errors"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// problems returns Check's problem lines, failing the test when Check
// accepts the set.
func problems(t *testing.T, res Resources) []string {
	t.Helper()
	var ce *CheckError
	if err := Check(res); !errors.As(err, &ce) {
		t.Fatalf("Check = %v, want a *CheckError", err)
	}
	return ce.Problems
}

// A nil resource is reported and the resources after it in the same list
// are still checked.
func TestCheckGoesOnAfterANilResource(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	bad := &clusterv3.Cluster{
		Name:                 "after-nil",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LbPolicy:             clusterv3.Cluster_LbPolicy(99), // not a defined enum value
	}
	res[resource.ClusterType] = append(res[resource.ClusterType], nil, bad)
	var nilSeen, badSeen bool
	for _, p := range problems(t, res) {
		nilSeen = nilSeen || p == "Cluster: nil resource"
		badSeen = badSeen || (strings.HasPrefix(p, "Cluster after-nil: ") && strings.Contains(p, "LbPolicy"))
	}
	if !nilSeen || !badSeen {
		t.Fatalf("nil resource reported: %v, the invalid cluster after it reported: %v; problems:\n%s",
			nilSeen, badSeen, strings.Join(problems(t, res), "\n"))
	}
}

// A problem inside a map-valued Any (typed_per_filter_config) names the
// map key in its path, and every path starts with the resource itself.
func TestCheckNamesMapKeysInPaths(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	vh := rc.GetVirtualHosts()[0]
	if vh.TypedPerFilterConfig == nil {
		vh.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	// ExtProcPerRoute requires one of its overrides: an empty one is invalid.
	vh.TypedPerFilterConfig["test.bad-override"] = mustAny(&extprocv3.ExtProcPerRoute{})
	want := "RouteConfiguration " + rc.GetName() + ".virtual_hosts[0].typed_per_filter_config[test.bad-override]<ExtProcPerRoute>: "
	got := problems(t, res)
	for _, p := range got {
		if strings.HasPrefix(p, want) {
			return
		}
	}
	t.Fatalf("no problem starts with %q:\n%s", want, strings.Join(got, "\n"))
}

// Every problem found inside a resource starts with the resource's type and
// name, never with a separator.
func TestCheckProblemPathsStartWithTheResource(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	editFirstExtProc(t, res, func(ep *extprocv3.ExternalProcessor) {
		ep.GrpcService.GetEnvoyGrpc().ClusterName = ""
	})
	got := problems(t, res)
	const want = "Listener modelsplit_gateway.filter_chains[0].filters[0].typed_config<HttpConnectionManager>.http_filters[0].typed_config<ExternalProcessor>: "
	for _, p := range got {
		if strings.HasPrefix(p, want) {
			return
		}
	}
	t.Fatalf("no problem starts with %q:\n%s", want, strings.Join(got, "\n"))
}

// fieldsReachingAny must list every field below which an Any can occur:
// checked against a plain recursive walk of the type graph, for every
// message type reachable from the four resource types Check sees.
func TestFieldsReachingAnyMatchesTheTypeGraph(t *testing.T) {
	// Every message type reachable from the resource types.
	var all []protoreflect.MessageDescriptor
	seen := map[protoreflect.FullName]bool{}
	var stack []protoreflect.MessageDescriptor
	for _, url := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		stack = append(stack, mt.Descriptor())
	}
	sub := func(fd protoreflect.FieldDescriptor) protoreflect.MessageDescriptor {
		if fd.IsMap() {
			return fd.MapValue().Message()
		}
		return fd.Message()
	}
	for len(stack) > 0 {
		md := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[md.FullName()] {
			continue
		}
		seen[md.FullName()] = true
		all = append(all, md)
		for i := 0; i < md.Fields().Len(); i++ {
			if m := sub(md.Fields().Get(i)); m != nil {
				stack = append(stack, m)
			}
		}
	}
	if len(all) < 100 {
		t.Fatalf("only %d message types reachable from the resource types; the walk went wrong", len(all))
	}

	// The types that reach an Any, as a fixpoint: Any does, and so does a
	// type with a field of a type that does.
	reaches := map[protoreflect.FullName]bool{"google.protobuf.Any": true}
	for changed := true; changed; {
		changed = false
		for _, md := range all {
			if reaches[md.FullName()] {
				continue
			}
			for i := 0; i < md.Fields().Len(); i++ {
				if m := sub(md.Fields().Get(i)); m != nil && reaches[m.FullName()] {
					reaches[md.FullName()] = true
					changed = true
					break
				}
			}
		}
	}

	for _, md := range all {
		want := map[protoreflect.Name]bool{}
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			if m := sub(fd); m != nil && reaches[m.FullName()] {
				want[fd.Name()] = true
			}
		}
		got := map[protoreflect.Name]bool{}
		for _, fd := range fieldsReachingAny(md) {
			got[fd.Name()] = true
		}
		for name := range want {
			if !got[name] {
				t.Errorf("%s: field %s reaches an Any but fieldsReachingAny leaves it out", md.FullName(), name)
			}
		}
		for name := range got {
			if !want[name] {
				t.Errorf("%s: fieldsReachingAny lists %s, which reaches no Any", md.FullName(), name)
			}
		}
	}
}

// A resource of the wrong type in any list is reported, and the resources
// after it are still checked: a duplicate of one of them is found too.
func TestCheckForeignResourceDoesNotHideTheRest(t *testing.T) {
	for _, typ := range []resource.Type{resource.ClusterType, resource.RouteType, resource.EndpointType, resource.ListenerType} {
		res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
		var foreign types.Resource = &routev3.RouteConfiguration{Name: "foreign"}
		if typ == resource.RouteType {
			foreign = &clusterv3.Cluster{Name: "foreign"}
		}
		res[typ] = append(append([]types.Resource{foreign}, res[typ]...), res[typ][0])
		got := problems(t, res)
		if len(got) != 2 || !strings.Contains(strings.Join(got, "\n"), " list holds a *") || !strings.Contains(strings.Join(got, "\n"), ": defined twice") {
			t.Errorf("%s list led by a foreign resource, with a duplicate: problems\n%s\nwant the foreign resource and the duplicate reported, nothing else", TypeShort(typ), strings.Join(got, "\n"))
		}
	}
}

// Proxyless gRPC rules apply to every api_listener and every ext_proc
// filter, whatever stands before them.
func TestCheckGRPCRulesSeePastOtherResources(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindGRPC)
	editFirstExtProc(t, res, func(ep *extprocv3.ExternalProcessor) {
		ep.GrpcService.TargetSpecifier = &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ExtProcClusterName}}
	})
	l := res[resource.ListenerType][0].(*listenerv3.Listener)
	hcm := listenerHCMs(l)[0]
	var router *hcmv3.HttpFilter
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == routerFilterName {
			router = f
		}
	}
	if router == nil {
		t.Fatal("precondition: no router filter")
	}
	// A non-ext_proc filter before the ext_proc one, and a listener without
	// an api_listener (a foreign resource) before the api_listener.
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "first", ConfigType: router.ConfigType}}, hcm.HttpFilters...)
	l.GetApiListener().ApiListener = mustAny(hcm)
	res[resource.ListenerType] = append([]types.Resource{&routev3.RouteConfiguration{Name: "foreign"}}, res[resource.ListenerType]...)
	want := "needs google_grpc with a target_uri (grpc-go rejects envoy_grpc)"
	for _, p := range problems(t, res) {
		if strings.Contains(p, want) {
			return
		}
	}
	t.Fatalf("no problem mentions %q:\n%s", want, strings.Join(problems(t, res), "\n"))
}

// A load assignment needs an EDS cluster of its name: a cluster of that
// name with another discovery type does not count.
func TestCheckLoadAssignmentNeedsAnEDSCluster(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	res[resource.ClusterType] = append(res[resource.ClusterType], &clusterv3.Cluster{
		Name:                 "static-one",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
	})
	res[resource.EndpointType] = append(res[resource.EndpointType], &endpointv3.ClusterLoadAssignment{ClusterName: "static-one"})
	want := "load assignment static-one: no EDS cluster of that name"
	for _, p := range problems(t, res) {
		if p == want {
			return
		}
	}
	t.Fatalf("no problem %q:\n%s", want, strings.Join(problems(t, res), "\n"))
}

// The ext_proc filters of a connection manager are checked wherever they
// stand among its HTTP filters.
func TestCheckExtProcAfterAnotherFilter(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	l := res[resource.ListenerType][0].(*listenerv3.Listener)
	hcms := listenerHCMs(l)
	if len(hcms) != 1 {
		t.Fatalf("listener %s: %d connection managers, want 1", l.GetName(), len(hcms))
	}
	hcm := hcms[0]
	var router *hcmv3.HttpFilter
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == routerFilterName {
			router = f
		}
		ep := &extprocv3.ExternalProcessor{}
		if f.GetTypedConfig().UnmarshalTo(ep) != nil {
			continue
		}
		ep.GrpcService.GetEnvoyGrpc().ClusterName = "no-such-cluster"
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(ep)}
	}
	if router == nil {
		t.Fatal("precondition: no router filter")
	}
	// Another (non-ext_proc) filter first.
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "first", ConfigType: router.ConfigType}}, hcm.HttpFilters...)
	l.GetFilterChains()[0].GetFilters()[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
	want := `ext_proc cluster "no-such-cluster" does not exist`
	for _, p := range problems(t, res) {
		if strings.Contains(p, want) {
			return
		}
	}
	t.Fatalf("no problem mentions %q:\n%s", want, strings.Join(problems(t, res), "\n"))
}

// A route without a cluster action (a redirect) does not end the walk over
// its virtual host: the routes after it are still held to existing clusters.
func TestCheckRoutesAfterARedirect(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	vh := rc.GetVirtualHosts()[0]
	redirect := &routev3.Route{
		Name:   "redirect",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/old"}},
		Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}}},
	}
	missing := &routev3.Route{
		Name:   "missing",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/m"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "no-such-cluster"}}},
	}
	vh.Routes = append([]*routev3.Route{redirect, missing}, vh.Routes...)
	want := `route ` + rc.GetName() + `/missing: cluster "no-such-cluster" does not exist`
	for _, p := range problems(t, res) {
		if p == want {
			return
		}
	}
	t.Fatalf("no problem %q:\n%s", want, strings.Join(problems(t, res), "\n"))
}

// grpc-go's rules reach every load assignment and every ext_proc filter of
// a gRPC set, past a foreign resource or a filter with its own problem.
func TestCheckGRPCRulesSeeEveryAssignmentAndFilter(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindGRPC)
	var cla *endpointv3.ClusterLoadAssignment
	for _, r := range res[resource.EndpointType] {
		cla = r.(*endpointv3.ClusterLoadAssignment)
	}
	cla.GetEndpoints()[0].Locality = nil
	res[resource.EndpointType] = append([]types.Resource{&routev3.RouteConfiguration{Name: "foreign"}}, res[resource.EndpointType]...)

	l := res[resource.ListenerType][0].(*listenerv3.Listener)
	hcm := listenerHCMs(l)[0]
	var withoutMode *hcmv3.HttpFilter
	for _, f := range hcm.GetHttpFilters() {
		ep := &extprocv3.ExternalProcessor{}
		if f.GetTypedConfig().UnmarshalTo(ep) != nil {
			continue
		}
		// A copy without processing_mode goes first; the original streams
		// its request body, which grpc-go refuses.
		bare := proto.Clone(ep).(*extprocv3.ExternalProcessor)
		bare.ProcessingMode = nil
		withoutMode = &hcmv3.HttpFilter{Name: "bare", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(bare)}}
		ep.ProcessingMode.RequestBodyMode = extprocv3.ProcessingMode_STREAMED
		f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(ep)}
		break
	}
	if withoutMode == nil {
		t.Fatal("precondition: no ext_proc filter")
	}
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{withoutMode}, hcm.HttpFilters...)
	l.GetApiListener().ApiListener = mustAny(hcm)

	got := strings.Join(problems(t, res), "\n")
	for _, want := range []string{
		"load assignment " + cla.GetClusterName() + ": endpoints[0] has no locality",
		"ext_proc filter bare has no processing_mode",
		"request_body_mode STREAMED: grpc-go accepts NONE or GRPC only",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("no problem mentions %q:\n%s", want, got)
		}
	}
}

// An RLS plugin's default_target is checked whatever plugins come before
// it in the route configuration: another kind of plugin, or an RLS plugin
// that cannot be decoded (reported on its own).
func TestCheckRLSDefaultTargetAfterOtherPlugins(t *testing.T) {
	res := buildOrFail(t, "testdata/in/grpc.yaml", KindGRPC)
	target := WeightedCluster("triton")
	var kept []types.Resource
	for _, r := range res[resource.ClusterType] {
		if r.(*clusterv3.Cluster).GetName() != target {
			kept = append(kept, r)
		}
	}
	res[resource.ClusterType] = kept
	var rc *routev3.RouteConfiguration
	for _, r := range res[resource.RouteType] {
		if len(r.(*routev3.RouteConfiguration).GetClusterSpecifierPlugins()) > 0 {
			rc = r.(*routev3.RouteConfiguration)
		}
	}
	if rc == nil {
		t.Fatal("precondition: grpc.yaml has no RLS plugin")
	}
	other := &routev3.ClusterSpecifierPlugin{Extension: &corev3.TypedExtensionConfig{
		Name: "other", TypedConfig: mustAny(wrapperspb.String("not RLS")),
	}}
	broken := &routev3.ClusterSpecifierPlugin{Extension: &corev3.TypedExtensionConfig{
		Name: "broken", TypedConfig: &anypb.Any{TypeUrl: ClusterSpecifierTypeURL, Value: []byte{0xff, 0xff, 0xff}},
	}}
	rc.ClusterSpecifierPlugins = append([]*routev3.ClusterSpecifierPlugin{other, broken}, rc.ClusterSpecifierPlugins...)
	wantProblem(t, Check(res), `default_target "`+target+`" does not exist`)
}
