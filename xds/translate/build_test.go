package translate

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds/internal/xdstest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/out")

var loadCase = xdstest.LoadCase

// TestGolden pins what every testdata/in config produces for both node
// kinds; `go test ./xds/translate -run Golden -update` rewrites the files (and drops
// stale ones), and the diff is what a reviewer reads.
func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/in/*.yaml")
	if len(inputs) < 4 {
		t.Fatalf("expected at least 4 golden inputs, found %d", len(inputs))
	}
	want := map[string]bool{}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		cfg := loadCase(t, in)
		for _, kind := range Kinds {
			out := filepath.Join("testdata", "out", name+"."+string(kind)+".yaml")
			want[out] = true
			t.Run(name+"/"+string(kind), func(t *testing.T) {
				res, err := Build(cfg, kind)
				if err != nil {
					t.Fatal(err)
				}
				if err := Check(res); err != nil {
					t.Fatalf("built resources fail validation: %v", err)
				}
				got, err := RenderYAML(res)
				if err != nil {
					t.Fatal(err)
				}
				if *update {
					if err := os.WriteFile(out, got, 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				golden, err := os.ReadFile(out)
				if err != nil {
					t.Fatalf("%v (run with -update to create)", err)
				}
				if !bytes.Equal(golden, got) {
					t.Errorf("%s differs from the build; run `go test ./xds/translate -run Golden -update` and review the diff", out)
				}
			})
		}
	}
	outs, _ := filepath.Glob("testdata/out/*.yaml")
	for _, o := range outs {
		if !want[o] {
			if *update {
				_ = os.Remove(o)
			} else {
				t.Errorf("stale golden file %s (no input); run with -update", o)
			}
		}
	}
}

func buildOrFail(t *testing.T, path string, kind NodeKind) Resources {
	t.Helper()
	res, err := Build(loadCase(t, path), kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(res); err != nil {
		t.Fatalf("precondition: clean build fails Check: %v", err)
	}
	return res
}

func wantProblem(t *testing.T, err error, substr string) {
	t.Helper()
	var ce *CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("Check returned %v, want a *CheckError mentioning %q", err, substr)
	}
	if !strings.Contains(ce.Error(), substr) {
		t.Fatalf("Check error does not mention %q:\n%v", substr, ce)
	}
}

func TestCheckRejectsRouteToMissingCluster(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	var kept []types.Resource
	for _, r := range res[resource.ClusterType] {
		if r.(*clusterv3.Cluster).GetName() != "face-recognition/b" {
			kept = append(kept, r)
		}
	}
	res[resource.ClusterType] = kept
	wantProblem(t, Check(res), `cluster "face-recognition/b" does not exist`)
}

func TestCheckRejectsAllZeroWeights(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindGRPC)
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		if wc := r.GetRoute().GetWeightedClusters(); wc != nil {
			for _, cw := range wc.GetClusters() {
				cw.Weight = wrapperspb.UInt32(0)
			}
		}
	}
	wantProblem(t, Check(res), "weighted clusters sum to zero")
}

// An invalid connection manager hidden inside the listener's Any passes
// ValidateAll on the listener; the recursive check must catch it.
func TestCheckFindsInvalidHCMInsideAny(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	l := res[resource.ListenerType][0].(*listenerv3.Listener)
	f := l.GetFilterChains()[0].GetFilters()[0]
	hcm := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	hcm.StatPrefix = ""                     // PGV: min_len 1
	hcm.RequestTimeout = durationpb.New(-1) // PGV: gte 0
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
	if err := l.ValidateAll(); err != nil {
		t.Fatalf("precondition: the listener's own ValidateAll should not see inside the Any, got %v", err)
	}
	wantProblem(t, Check(res), "StatPrefix")
}

func TestCheckRejectsBadMirror(t *testing.T) {
	res := buildOrFail(t, "testdata/in/three.yaml", KindEnvoy)
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	m := rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetRequestMirrorPolicies()[0]
	m.Cluster, m.ClusterHeader = "ranker/candidate", config.ShadowHeader
	wantProblem(t, Check(res), "exactly one of cluster and cluster_header")
}

func TestCheckRejectsUnknownAny(t *testing.T) {
	res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
	l := res[resource.ListenerType][0].(*listenerv3.Listener)
	l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().TypeUrl = "type.googleapis.com/not.a.Type"
	wantProblem(t, Check(res), "cannot unpack Any")
}

// Build is pure: the same config gives byte-identical resources.
func TestBuildDeterministic(t *testing.T) {
	cfg := loadCase(t, "testdata/in/three.yaml")
	for _, kind := range Kinds {
		a, _ := Build(cfg, kind)
		b, _ := Build(cfg, kind)
		for typ := range a {
			for i := range a[typ] {
				if !proto.Equal(a[typ][i], b[typ][i]) {
					t.Fatalf("%s %s differs between two builds", typ, resourceName(a[typ][i]))
				}
			}
		}
	}
}

// The zero-weight variant keeps its cluster (and, for gRPC, a route that
// references it) but is not in gRPC nodes' weighted split; Envoy's split
// names it and its runtime weight is 0.
func TestZeroWeightVariant(t *testing.T) {
	for _, kind := range Kinds {
		res := buildOrFail(t, "testdata/in/zero.yaml", kind)
		haveCluster := false
		for _, r := range res[resource.ClusterType] {
			haveCluster = haveCluster || r.(*clusterv3.Cluster).GetName() == "sentiment/green"
		}
		if !haveCluster {
			t.Errorf("%s: no cluster for the weight-0 variant", kind)
		}
		if kind == KindEnvoy {
			if w, ok := runtimeWeights(t, res)["modelsplit.weights.sentiment/green"]; !ok || w != 0 {
				t.Errorf("envoy: runtime weight of the weight-0 variant %v (present %v), want 0", w, ok)
			}
		}
		for _, r := range res[resource.RouteType] {
			for _, rt := range r.(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes() {
				for _, cw := range rt.GetRoute().GetWeightedClusters().GetClusters() {
					if cw.GetName() == "sentiment/green" && kind == KindGRPC {
						t.Errorf("%s: weight-0 variant is in the weighted split", kind)
					}
				}
			}
		}
	}
}

func TestBootstrapValidates(t *testing.T) {
	for _, delta := range []bool{false, true} {
		b, err := Bootstrap(BootstrapOptions{NodeID: "edge-1", NodeCluster: "gw", XDSAddress: "modelsplit.svc:18000", Delta: delta, AdminPort: 9901})
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(Resources{"bootstrap": {b}}); err != nil {
			t.Fatalf("delta=%v: %v", delta, err)
		}
	}
	if _, err := Bootstrap(BootstrapOptions{NodeID: "x", XDSAddress: "nope"}); err == nil {
		t.Error("bad xDS address accepted")
	}
}

// envoy/bootstrap.yaml is generated; it must match what the code produces.
func TestCommittedBootstrapUpToDate(t *testing.T) {
	b, err := Bootstrap(DefaultBootstrapOptions())
	if err != nil {
		t.Fatal(err)
	}
	got, err := RenderBootstrapYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "envoy", "bootstrap.yaml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(have, got) {
		t.Fatalf("%s is missing or stale (err %v); run `go test ./xds/translate -run Bootstrap -update`", path, err)
	}
}

var benchConfig = xdstest.BenchConfig

func BenchmarkBuildAndCheck1000x4(b *testing.B) {
	for _, tc := range []struct {
		name        string
		kind        NodeKind
		routeLookup bool
	}{{"envoy", KindEnvoy, false}, {"grpc", KindGRPC, false}, {"grpc-rls", KindGRPC, true}} {
		cfg := benchConfig(b, 1000, tc.routeLookup)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res, err := Build(cfg, tc.kind)
				if err != nil {
					b.Fatal(err)
				}
				if err := Check(res); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
