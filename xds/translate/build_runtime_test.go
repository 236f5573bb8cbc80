package translate

import (
	"bytes"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelsplit/modelsplit/config"
)

// runtimeWeights flattens Envoy's runtime layer as Envoy does (ProtoLayer:
// nested struct keys joined with dots) into key → number.
func runtimeWeights(t testing.TB, res Resources) map[string]float64 {
	t.Helper()
	list := res[resource.RuntimeType]
	if len(list) != 1 {
		t.Fatalf("%d Runtime resources, want 1", len(list))
	}
	rt := list[0].(*runtimev3.Runtime)
	if rt.GetName() != WeightsRuntimeName {
		t.Fatalf("Runtime %q, want %q", rt.GetName(), WeightsRuntimeName)
	}
	out := map[string]float64{}
	var walk func(prefix string, v *structpb.Value)
	walk = func(prefix string, v *structpb.Value) {
		switch k := v.GetKind().(type) {
		case *structpb.Value_StructValue:
			for name, f := range k.StructValue.GetFields() {
				walk(prefix+"."+name, f)
			}
		case *structpb.Value_NumberValue:
			out[prefix] = k.NumberValue
		default:
			t.Errorf("runtime key %s: %T, want a number", prefix, k)
		}
	}
	for name, f := range rt.GetLayer().GetFields() {
		walk(name, f)
	}
	return out
}

// Every Envoy weighted split reads every one of its clusters from the
// runtime layer, whose keys for it sum to config.WeightScale (Envoy's
// hashed pick and the decision engine then share their intervals), and
// the layer holds no key no route reads.
func TestEnvoyWeightsComeFromTheRuntimeLayer(t *testing.T) {
	for _, in := range []string{"three", "zero", "multi", "ab", "compare"} {
		cfg := loadCase(t, "testdata/in/"+in+".yaml")
		res := buildChecked(t, cfg, KindEnvoy)
		w := runtimeWeights(t, res)
		read := map[string]bool{}
		for _, r := range res[resource.RouteType] {
			for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
				for _, route := range vh.GetRoutes() {
					wc := route.GetRoute().GetWeightedClusters()
					if wc == nil {
						continue
					}
					if wc.GetRuntimeKeyPrefix() != WeightsRuntimePrefix {
						t.Errorf("%s: route %s: runtime_key_prefix %q", in, route.GetName(), wc.GetRuntimeKeyPrefix())
					}
					total := 0.0
					for _, cw := range wc.GetClusters() {
						key := wc.GetRuntimeKeyPrefix() + "." + cw.GetName()
						v, ok := w[key]
						if !ok {
							t.Errorf("%s: route %s: no runtime key %s", in, route.GetName(), key)
						}
						read[key] = true
						total += v
					}
					if total != config.WeightScale {
						t.Errorf("%s: route %s: runtime weights sum to %v, want %d", in, route.GetName(), total, config.WeightScale)
					}
				}
			}
		}
		for key := range w {
			if !read[key] {
				t.Errorf("%s: runtime key %s is read by no route", in, key)
			}
		}
		for i := range cfg.Endpoints {
			e := &cfg.Endpoints[i]
			scaled := config.ScaledWeights(e.Variants)
			for j, v := range e.Variants {
				if got := w[WeightsRuntimePrefix+"."+config.ClusterName(e.Name, v.Name)]; got != float64(scaled[j]) {
					t.Errorf("%s: %s/%s runtime weight %v, want %d", in, e.Name, v.Name, got, scaled[j])
				}
			}
		}
	}
}

// A weight change, a variant going to 0 and back included, leaves Envoy's
// route configuration byte for byte the same (so it is neither re-sent
// nor reloaded) and changes the runtime layer; gRPC nodes' routes carry
// the weights.
func TestWeightChangeChangesOnlyEnvoysRuntime(t *testing.T) {
	cfg := loadCase(t, "testdata/in/three.yaml")
	enc := func(c *config.Config, kind NodeKind, typ resource.Type) [][]byte {
		res := buildChecked(t, c, kind)
		var out [][]byte
		for _, r := range res[typ] {
			e, err := Encode(r)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e.Bytes)
		}
		return out
	}
	same := func(a, b [][]byte) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if !bytes.Equal(a[i], b[i]) {
				return false
			}
		}
		return true
	}
	next := cfg.Clone()
	e := &next.Endpoints[0]
	e.Variants[0].Weight, e.Variants[1].Weight = 0, e.Variants[0].Weight+e.Variants[1].Weight
	for _, typ := range []resource.Type{resource.RouteType, resource.ClusterType, resource.EndpointType, resource.ListenerType} {
		if !same(enc(cfg, KindEnvoy, typ), enc(next, KindEnvoy, typ)) {
			t.Errorf("envoy %s changed with the weights", TypeShort(typ))
		}
	}
	if same(enc(cfg, KindEnvoy, resource.RuntimeType), enc(next, KindEnvoy, resource.RuntimeType)) {
		t.Error("envoy Runtime did not change with the weights")
	}
	if same(enc(cfg, KindGRPC, resource.RouteType), enc(next, KindGRPC, resource.RouteType)) {
		t.Error("grpc routes did not change with the weights")
	}
	if len(buildChecked(t, next, KindGRPC)[resource.RuntimeType]) != 0 {
		t.Error("grpc nodes get a Runtime resource (grpc-go has no runtime)")
	}
}

// The runtime layer spliced from per-endpoint pieces equals its full
// encoding for names whose keys sort otherwise than the names ("a-b/…"
// before "a/…", dots, digits), through additions and removals.
func TestComposedRuntimeEqualsEncoded(t *testing.T) {
	names := []string{"a", "a-b", "a.b", "a0", "b", "ab", "a-b-c"}
	mk := func(ns ...string) *config.Config {
		cfg := &config.Config{}
		for i, n := range ns {
			cfg.Endpoints = append(cfg.Endpoints, config.Endpoint{Name: n, Match: config.Match{PathPrefix: "/" + n},
				Variants: []config.Variant{
					{Name: "z", Weight: 1 + i, Backends: []config.Backend{{Host: "10.0.0.1", Port: 80}}},
					{Name: "a", Weight: 0, Backends: []config.Backend{{Host: "10.0.0.2", Port: 80}}},
					{Name: "m", Weight: 3, Backends: []config.Backend{{Host: "10.0.0.3", Port: 80}}},
				}})
		}
		cfg.ApplyDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	tr := NewTranslator()
	for _, ns := range [][]string{names, names[1:], names[:3], {"a-b", "a"}, {"b"}, names} {
		cfg := mk(ns...)
		if _, _, err := tr.Update(cfg); err != nil {
			t.Fatal(err)
		}
		sameAsFull(t, tr, cfg)
	}
}
