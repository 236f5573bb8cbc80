package translate

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/modelsplit/modelsplit/config"
)

// sameAsFull fails unless the translator's sets are, resource for resource
// and byte for byte, the encoding of what Build makes from cfg.
func sameAsFull(t *testing.T, tr *Translator, cfg *config.Config) {
	t.Helper()
	for _, kind := range Kinds {
		full, err := Build(cfg, kind)
		if err != nil {
			t.Fatal(err)
		}
		set := tr.Set(kind)
		for typ, list := range full {
			if len(set[typ]) != len(list) {
				t.Errorf("%s %s: %d resources, Build makes %d", kind, TypeShort(typ), len(set[typ]), len(list))
			}
			for _, r := range list {
				want, err := Encode(r)
				if err != nil {
					t.Fatal(err)
				}
				got := set[typ][want.Name]
				if got == nil {
					t.Errorf("%s %s %s missing", kind, TypeShort(typ), want.Name)
					continue
				}
				// The gateway route configuration's hash is made of its
				// endpoints' hashes, not of its bytes.
				if !bytes.Equal(got.Bytes, want.Bytes) || (got.Hash != want.Hash && want.Name != GatewayRouteName) {
					t.Errorf("%s %s %s: %d bytes differ from Build's %d", kind, TypeShort(typ), want.Name, len(got.Bytes), len(want.Bytes))
				}
			}
		}
		for typ, m := range set {
			if len(m) > 0 && len(full[typ]) == 0 {
				t.Errorf("%s: %d %s resources Build does not make", kind, len(m), TypeShort(typ))
			}
		}
	}
}

// TestComposedRoutesEqualEncoded: every golden config, translated
// incrementally, gives exactly the bytes of the full build, the gateway
// route configuration spliced from per-endpoint pieces included.
func TestComposedRoutesEqualEncoded(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/in/*.yaml")
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			cfg := loadCase(t, in)
			tr := NewTranslator()
			if _, _, err := tr.Update(cfg); err != nil {
				t.Fatal(err)
			}
			sameAsFull(t, tr, cfg)
		})
	}
}

// TestUpdateRebuildsOnlyWhatChanged walks a config through edits and checks,
// after each, that the sets equal a full build, how many endpoints were
// built again and which resources are reported changed.
func TestUpdateRebuildsOnlyWhatChanged(t *testing.T) {
	cfg := benchConfig(t, 50, false)
	tr := NewTranslator()
	ch, st, err := tr.Update(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rebuilt != 50 || len(ch[KindEnvoy][resource.ClusterType]) != 50*4+1 {
		t.Fatalf("first update: rebuilt %d, %d Envoy clusters changed", st.Rebuilt, len(ch[KindEnvoy][resource.ClusterType]))
	}
	sameAsFull(t, tr, cfg)

	step := func(what string, edit func(c *config.Config), rebuilt int, want map[NodeKind]map[string][]string) {
		t.Helper()
		next := cfg.Clone()
		edit(next)
		ch, st, err := tr.Update(next)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if st.Rebuilt != rebuilt {
			t.Errorf("%s: rebuilt %d endpoints, want %d", what, st.Rebuilt, rebuilt)
		}
		got := map[NodeKind]map[string][]string{}
		for kind, types := range ch {
			for typ, names := range types {
				for n := range names {
					if got[kind] == nil {
						got[kind] = map[string][]string{}
					}
					got[kind][TypeShort(typ)] = append(got[kind][TypeShort(typ)], n)
				}
			}
		}
		if fmt.Sprint(sortedNames(got)) != fmt.Sprint(sortedNames(want)) {
			t.Errorf("%s: changed %v, want %v", what, sortedNames(got), sortedNames(want))
		}
		sameAsFull(t, tr, next)
		cfg = next
	}
	step("nothing", func(*config.Config) {}, 0, nil)
	step("weights of one endpoint", func(c *config.Config) {
		c.Endpoints[7].Variants[0].Weight, c.Endpoints[7].Variants[1].Weight = 40, 10
	}, 1, map[NodeKind]map[string][]string{
		// Envoy's route configuration stays byte for byte the same: the
		// weights are in the runtime layer.
		KindEnvoy: {"Runtime": {WeightsRuntimeName}},
		KindGRPC:  {"RouteConfiguration": {"model-7"}},
	})
	// Envoy's load assignments hold the other variants as failover
	// priorities, so all four change.
	step("a backend of one variant", func(c *config.Config) {
		c.Endpoints[3].Variants[2].Backends[0].Port = 9999
	}, 1, map[NodeKind]map[string][]string{
		KindEnvoy: {"ClusterLoadAssignment": {"model-3/v0", "model-3/v1", "model-3/v2", "model-3/v3"}},
		KindGRPC:  {"ClusterLoadAssignment": {"model-3/v2"}},
	})
	step("a field the build ignores", func(c *config.Config) {
		c.Endpoints[4].Ramp = &config.Ramp{Canary: "v1", Base: map[string]int{"v0": 100}}
	}, 1, nil)
	step("an endpoint removed", func(c *config.Config) {
		c.Endpoints = append(c.Endpoints[:10], c.Endpoints[11:]...)
	}, 0, map[NodeKind]map[string][]string{
		KindEnvoy: {
			"Cluster":               {"model-10/v0", "model-10/v1", "model-10/v2", "model-10/v3"},
			"ClusterLoadAssignment": {"model-10/v0", "model-10/v1", "model-10/v2", "model-10/v3"},
			"RouteConfiguration":    {GatewayRouteName},
			"Runtime":               {WeightsRuntimeName},
		},
		KindGRPC: {
			"Cluster":               {"model-10/v0", "model-10/v1", "model-10/v2", "model-10/v3"},
			"ClusterLoadAssignment": {"model-10/v0", "model-10/v1", "model-10/v2", "model-10/v3"},
			"Listener":              {"model-10"},
			"RouteConfiguration":    {"model-10"},
		},
	})
	step("a longer prefix moves an endpoint's routes first", func(c *config.Config) {
		c.Endpoints[20].Match.PathPrefix = "/a-much-longer-prefix"
	}, 1, map[NodeKind]map[string][]string{
		KindEnvoy: {"RouteConfiguration": {GatewayRouteName}},
	})
	step("two endpoints of equal prefix length swapped in the config", func(c *config.Config) {
		c.Endpoints[30], c.Endpoints[31] = c.Endpoints[31], c.Endpoints[30]
	}, 0, map[NodeKind]map[string][]string{
		KindEnvoy: {"RouteConfiguration": {GatewayRouteName}},
	})
	step("the ext_proc target: every gRPC resource names it", func(c *config.Config) {
		c.Listen.ExtProc = "127.0.0.1:19999"
	}, 49, map[NodeKind]map[string][]string{
		KindEnvoy: {"Cluster": {ExtProcClusterName}},
		KindGRPC:  {"Listener": names("model-", 49, 10), "RouteConfiguration": names("model-", 49, 10)},
	})
}

// names is prefix0 … prefix(n), skipping the index skip.
func names(prefix string, n, skip int) []string {
	var out []string
	for i := 0; i <= n; i++ {
		if i != skip {
			out = append(out, fmt.Sprint(prefix, i))
		}
	}
	return out
}

func sortedNames(m map[NodeKind]map[string][]string) string {
	var lines []string
	for kind, types := range m {
		for typ, ns := range types {
			s := append([]string(nil), ns...)
			sortStrings(s)
			lines = append(lines, fmt.Sprintf("%s/%s=%v", kind, typ, s))
		}
	}
	sortStrings(lines)
	return strings.Join(lines, " ")
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestUpdateRefusesAndKeepsState: a config one endpoint of which fails the
// checks is refused whole, and the translator still holds the last good
// resources.
func TestUpdateRefusesAndKeepsState(t *testing.T) {
	cfg := benchConfig(t, 5, false)
	tr := NewTranslator()
	if _, _, err := tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	bad := cfg.Clone()
	bad.Endpoints[2].Variants[0].Weight = 10
	for i := range bad.Endpoints[3].Variants {
		bad.Endpoints[3].Variants[i].Weight = 0 // Check: weighted clusters sum to zero
	}
	if _, _, err := tr.Update(bad); err == nil || !strings.Contains(err.Error(), "model-3") {
		t.Fatalf("Update of an invalid endpoint: %v, want an error naming model-3", err)
	}
	sameAsFull(t, tr, cfg)
	if _, st, err := tr.Update(cfg); err != nil || st.Rebuilt != 0 {
		t.Fatalf("after the refusal, the last good config rebuilt %d endpoints (%v)", st.Rebuilt, err)
	}
}

// BenchmarkTranslatorFull is a full build and check, both node kinds,
// encoded: the worst case of an Update (a first config or a changed
// ext_proc target).
func BenchmarkTranslatorFull(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		cfg := benchConfig(b, n, false)
		b.Run(fmt.Sprint("endpoints=", n), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := NewTranslator().Update(cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestOversizedFollowsSet: the sizes the Translator keeps as resources
// change name the same oversized resources and type totals as a walk over
// its set, after a full build, a change and a removal; the set is Build's
// each time (the first and the last commit each kind on its own goroutine).
func TestOversizedFollowsSet(t *testing.T) {
	cfg := benchConfig(t, 1000, false)
	tr := NewTranslator()
	same := func(when string) {
		t.Helper()
		sameAsFull(t, tr, cfg)
		for _, kind := range Kinds {
			for _, limit := range []int{GRPCDefaultReceiveLimit, 1 << 20, bigResource, bigResource + 1, 10 << 10, 1} {
				got, want := tr.Oversized(kind, limit), OversizedInSet(tr.Set(kind), kind, limit)
				if g, w := oversizedKey(got), oversizedKey(want); g != w {
					t.Errorf("%s, %s, limit %d: Oversized = %s, want %s", when, kind, limit, g, w)
				}
			}
		}
	}
	if _, _, err := tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if len(tr.Oversized(KindEnvoy, 1<<20)) == 0 {
		t.Fatal("1,000 endpoints' route configuration is not over 1 MiB")
	}
	same("full build")
	cfg.Endpoints[3].Variants[0].Weight++
	if _, _, err := tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	same("one change")
	cfg.Endpoints = cfg.Endpoints[:600]
	if _, _, err := tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	same("400 endpoints removed")
}

func oversizedKey(os []Oversized) string {
	var lines []string
	for _, o := range os {
		lines = append(lines, fmt.Sprintf("%s/%s/%s=%d", o.Kind, o.Type, o.Name, o.Bytes))
	}
	slices.Sort(lines)
	return strings.Join(lines, " ")
}

// TestUpdateRefusesNameClashOnLargeUpdates: a cluster name two endpoints
// would both define is refused, and nothing kept, also when so many
// endpoints are built that the owner checks and the commit run per kind
// on their own goroutines (parallelCommit).
func TestUpdateRefusesNameClashOnLargeUpdates(t *testing.T) {
	good := benchConfig(t, 2*parallelCommit, false)
	bad := good.Clone()
	// "m/a" + "b" and "m" + "a/b" both make the cluster m/a/b.
	bad.Endpoints[10].Name, bad.Endpoints[10].Variants[0].Name = "m/a", "b"
	bad.Endpoints[parallelCommit+5].Name, bad.Endpoints[parallelCommit+5].Variants[0].Name = "m", "a/b"
	for i := range bad.Endpoints {
		bad.Endpoints[i].Variants[1].Weight++ // every endpoint is built again
	}
	if _, _, err := NewTranslator().Update(bad); err == nil || !strings.Contains(err.Error(), "m/a/b is defined by both") {
		t.Fatalf("full build with a clash: %v, want the clash on m/a/b", err)
	}
	tr := NewTranslator()
	if _, _, err := tr.Update(good); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.Update(bad); err == nil || !strings.Contains(err.Error(), "m/a/b is defined by both") {
		t.Fatalf("update with a clash: %v, want the clash on m/a/b", err)
	}
	sameAsFull(t, tr, good)
	if _, st, err := tr.Update(good); err != nil || st.Rebuilt != 0 {
		t.Fatalf("after the refusal, the last good config rebuilt %d endpoints (%v)", st.Rebuilt, err)
	}
}

// TestRetargetKeepsEnvoyResources: a new ext_proc target builds every
// endpoint's gRPC resources again and keeps the Envoy ones of the
// endpoints that did not change (the same encodings, not rebuilt), while
// a changed endpoint gets both built.
func TestRetargetKeepsEnvoyResources(t *testing.T) {
	cfg := benchConfig(t, 2*parallelCommit, false)
	tr := NewTranslator()
	if _, _, err := tr.Update(cfg); err != nil {
		t.Fatal(err)
	}
	before := map[string]*Encoded{}
	for name, enc := range tr.Set(KindEnvoy)[resource.ClusterType] {
		before[name] = enc
	}
	cfg.Listen.ExtProc = "127.0.0.1:19999"
	cfg.Endpoints[7].Variants[0].Weight++
	cfg.Endpoints[7].Variants[0].Backends[0].Port++
	if _, st, err := tr.Update(cfg); err != nil || st.Rebuilt != len(cfg.Endpoints) {
		t.Fatalf("retarget rebuilt %d of %d endpoints (%v)", st.Rebuilt, len(cfg.Endpoints), err)
	}
	sameAsFull(t, tr, cfg)
	for name, enc := range tr.Set(KindEnvoy)[resource.ClusterType] {
		if name == ExtProcClusterName {
			continue
		}
		rebuilt := strings.HasPrefix(name, cfg.Endpoints[7].Name+"/")
		if kept := before[name] == enc; kept == rebuilt {
			t.Errorf("cluster %s: kept %v", name, kept)
		}
	}
}

// BenchmarkTranslatorRetarget is an Update whose only change is the
// ext_proc target: every endpoint's gRPC resources built, checked and
// encoded again, the Envoy ones kept.
func BenchmarkTranslatorRetarget(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		cfg := benchConfig(b, n, false)
		b.Run(fmt.Sprint("endpoints=", n), func(b *testing.B) {
			tr := NewTranslator()
			if _, _, err := tr.Update(cfg); err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				i++
				cfg.Listen.ExtProc = fmt.Sprintf("127.0.0.1:%d", 20000+i%2)
				if _, _, err := tr.Update(cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
