package translate

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

// yamlToProto reads one YAML value into m the way Envoy reads YAML config:
// YAML → JSON → proto3 JSON mapping, unknown fields rejected.
func yamlToProto(t *testing.T, v any, m proto.Message) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Fatalf("%T: %v", m, err)
	}
}

// The rendered YAML is what operators read and what a file-based Envoy
// could load: it must carry every field, Anys included, and nothing else.
func TestRenderRoundTrips(t *testing.T) {
	newOf := map[string]func() proto.Message{
		"Listeners":              func() proto.Message { return &listenerv3.Listener{} },
		"RouteConfigurations":    func() proto.Message { return &routev3.RouteConfiguration{} },
		"Clusters":               func() proto.Message { return &clusterv3.Cluster{} },
		"ClusterLoadAssignments": func() proto.Message { return &endpointv3.ClusterLoadAssignment{} },
		"Runtimes":               func() proto.Message { return &runtimev3.Runtime{} },
	}
	typeOf := map[string]resource.Type{
		"Listeners": resource.ListenerType, "RouteConfigurations": resource.RouteType,
		"Clusters": resource.ClusterType, "ClusterLoadAssignments": resource.EndpointType,
		"Runtimes": resource.RuntimeType,
	}
	for _, in := range []string{"three", "multi"} {
		for _, kind := range Kinds {
			res := buildChecked(t, loadCase(t, "testdata/in/"+in+".yaml"), kind)
			out, err := RenderYAML(res)
			if err != nil {
				t.Fatal(err)
			}
			dec := yaml.NewDecoder(bytes.NewReader(out))
			seen := 0
			for {
				var doc map[string][]any
				if err := dec.Decode(&doc); err != nil {
					break
				}
				for section, items := range doc {
					want := res[typeOf[section]]
					if newOf[section] == nil || len(items) != len(want) {
						t.Fatalf("%s/%s: section %q has %d items, built %d", in, kind, section, len(items), len(want))
					}
					for i, item := range items {
						got := newOf[section]()
						yamlToProto(t, item, got)
						if !proto.Equal(got, want[i]) {
							t.Errorf("%s/%s: %s[%d] does not round-trip", in, kind, section, i)
						}
					}
					seen++
				}
			}
			if seen != len(res) {
				t.Errorf("%s/%s: rendered %d sections, built %d types", in, kind, seen, len(res))
			}
		}
	}
}

// envoy/bootstrap.yaml parses as an Envoy bootstrap and passes the same
// recursive validation.
func TestCommittedBootstrapParses(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "envoy", "bootstrap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	b := &bootstrapv3.Bootstrap{}
	yamlToProto(t, v, b)
	if err := Check(Resources{"bootstrap": {b}}); err != nil {
		t.Fatal(err)
	}
	ads := b.GetDynamicResources().GetAdsConfig()
	if !ads.GetSetNodeOnFirstMessageOnly() || ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != xdsClusterName {
		t.Errorf("ADS config %v", ads)
	}
	if b.GetNode().GetMetadata().GetFields()[NodeKindMetadataKey].GetStringValue() != string(KindEnvoy) {
		t.Errorf("node metadata %v lacks %s: envoy", b.GetNode().GetMetadata(), NodeKindMetadataKey)
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() != 9901 {
		t.Errorf("admin %v, want 127.0.0.1:9901", a)
	}
}
