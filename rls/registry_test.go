package rls

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	_ "google.golang.org/grpc/balancer/rls" // grpc-go's own copy of grpc.lookup.v1 (registers the public names)
	_ "google.golang.org/grpc/xds"          // cds_experimental, the RLS child policy in xDS

	"github.com/modelsplit/modelsplit/rls/lookuppb"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// TestNoRegistryClash: this test binary links grpc-go's RLS balancer, which
// registers grpc.lookup.v1.* in the global registry, and our generated
// package. Getting here at all means neither init panicked; the test also
// checks that both sets of names are registered and distinct.
func TestNoRegistryClash(t *testing.T) {
	theirs, err := protoregistry.GlobalTypes.FindMessageByName("grpc.lookup.v1.RouteLookupClusterSpecifier")
	if err != nil {
		t.Fatalf("grpc-go's RouteLookupClusterSpecifier not registered: %v", err)
	}
	ours := (&lookuppb.RouteLookupClusterSpecifier{}).ProtoReflect().Descriptor()
	if ours.FullName() == theirs.Descriptor().FullName() {
		t.Fatalf("our message has grpc-go's name %s: the registries would clash", ours.FullName())
	}
	if got, err := protoregistry.GlobalTypes.FindMessageByName(ours.FullName()); err != nil || got.Descriptor() != ours {
		t.Fatalf("our %s not registered: %v", ours.FullName(), err)
	}
	// Same wire shape: every field of grpc-go's messages exists in ours
	// with the same number and kind.
	sameFields(t, theirs.Descriptor(), ours)
}

func sameFields(t *testing.T, theirs, ours protoreflect.MessageDescriptor) {
	t.Helper()
	for i := 0; i < theirs.Fields().Len(); i++ {
		f := theirs.Fields().Get(i)
		g := ours.Fields().ByNumber(f.Number())
		if g == nil || g.Name() != f.Name() || g.Kind() != f.Kind() || g.Cardinality() != f.Cardinality() {
			t.Fatalf("%s field %d (%s): ours is %v", theirs.FullName(), f.Number(), f.Name(), g)
		}
		if f.Kind() == protoreflect.MessageKind && f.Message().FullName() != "google.protobuf.Duration" && !f.IsMap() {
			sameFields(t, f.Message(), g.Message())
		}
	}
}

// TestGrpcGoAcceptsPlugin decodes the plugin's Any with grpc-go's own
// message type (what its xDS client does) and feeds it to grpc-go's RLS
// balancer config parser, the same path as its cluster-specifier plugin.
func TestGrpcGoAcceptsPlugin(t *testing.T) {
	cfg := parseConfig(t, twoVariantYAML)
	e := &cfg.Endpoints[0]
	p, err := translate.ClusterSpecifierPlugin(e, translate.PluginOptions{LookupService: "dns:///127.0.0.1:18001"})
	if err != nil {
		t.Fatal(err)
	}
	if err := translate.CheckClusterSpecifier(p.GetExtension().GetTypedConfig()); err != nil {
		t.Fatalf("our own check refuses our plugin: %v", err)
	}
	msg, err := p.GetExtension().GetTypedConfig().UnmarshalNew()
	if err != nil {
		t.Fatalf("grpc-go's type cannot decode our Any: %v", err)
	}
	if got := msg.ProtoReflect().Descriptor().FullName(); got != "grpc.lookup.v1.RouteLookupClusterSpecifier" {
		t.Fatalf("Any decoded into %s", got)
	}
	rlc := msg.ProtoReflect().Get(msg.ProtoReflect().Descriptor().Fields().ByName("route_lookup_config")).Message().Interface()
	rlcJSON, err := protojson.Marshal(rlc)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"x-user-id"`, `"x-region"`, `"x-modelsplit-target"`, `"grpc.testing.TestService"`, `"scorer/_weighted/rls"`} {
		if !json.Valid(rlcJSON) || !strings.Contains(string(rlcJSON), want) {
			t.Errorf("route lookup config as grpc-go reads it lacks %s: %s", want, rlcJSON)
		}
	}
	lbJSON, err := json.Marshal(map[string]any{
		"routeLookupConfig":                json.RawMessage(rlcJSON),
		"childPolicy":                      []map[string]any{{"cds_experimental": map[string]any{"isDynamic": true}}},
		"childPolicyConfigTargetFieldName": "cluster",
	})
	if err != nil {
		t.Fatal(err)
	}
	b := balancer.Get("rls_experimental")
	if b == nil {
		t.Fatal("grpc-go's RLS balancer is not registered")
	}
	if _, err := b.(balancer.ConfigParser).ParseConfig(lbJSON); err != nil {
		t.Fatalf("grpc-go rejects the config: %v", err)
	}

	// And a config grpc-go must reject is rejected by both.
	bad := &lookuppb.RouteLookupClusterSpecifier{RouteLookupConfig: &lookuppb.RouteLookupConfig{LookupService: "dns:///x:1"}}
	b2, err := proto.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	a := &anypb.Any{TypeUrl: translate.ClusterSpecifierTypeURL, Value: b2}
	if err := translate.CheckClusterSpecifier(a); err == nil {
		t.Fatal("CheckClusterSpecifier accepted a config without key builders or cache size")
	}
}
