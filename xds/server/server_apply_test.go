package server

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds/internal/xdstest"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// Applying what is already served keeps the version and sends nothing to
// connected clients: the same config, a copy of it, or a config whose
// changes do not reach the resources (admin.token_file). A real change
// still gets a new version, and a refused config stays refused however
// often it is applied.
func TestApplyRepeatKeepsVersion(t *testing.T) {
	s := startServer(t, loadCase(t, xdstest.Case("ab.yaml")), nil)
	v1 := s.Version(translate.KindEnvoy)
	stream := openADS(t, s.conn)
	stream.send(t, &discovery.DiscoveryRequest{Node: envoyNode("repeat"), TypeUrl: resource.ClusterType})
	first := stream.next(t)
	stream.send(t, &discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()})

	same := loadCase(t, xdstest.Case("ab.yaml"))
	unrelated := loadCase(t, xdstest.Case("ab.yaml"))
	unrelated.Admin.TokenFile = "/run/secrets/admin-token"
	for _, tc := range []struct {
		name string
		cfg  *config.Config
	}{{"a fresh load", same}, {"the same config again", same}, {"an admin-only edit", unrelated}} {
		if err := s.Apply(tc.cfg); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	if got := s.Version(translate.KindEnvoy); got != v1 {
		t.Fatalf("unchanged resources moved the version from %q to %q", v1, got)
	}
	if got := stream.collect(300 * time.Millisecond); len(got) != 0 {
		t.Fatalf("unchanged resources sent %d responses to a client", len(got))
	}

	bad := loadCase(t, xdstest.Case("ab.yaml"))
	bad.Gateway.ExtProcAddress = "not-an-address"
	for range 2 {
		if err := s.Apply(bad); err == nil {
			t.Fatal("an invalid config was accepted")
		}
	}
	if got := testutil.ToFloat64(s.metrics.XDSSnapshotRefused); got != 2 {
		t.Errorf("xds_snapshot_refused_total = %v after two refusals, want 2", got)
	}

	// A weight change gets a new version; so does editing that applied
	// config in place and applying it again (Apply kept a copy).
	edited := nextWeights(t, 10)
	for i, w := range []int{10, 20} {
		edited.Endpoints[0].Variants[0].Weight = w
		if err := s.Apply(edited); err != nil {
			t.Fatal(err)
		}
		v := s.Version(translate.KindEnvoy)
		if v == v1 || s.Version(translate.KindGRPC) != v {
			t.Fatalf("change %d: versions envoy %q grpc %q (first %q)", i, v, s.Version(translate.KindGRPC), v1)
		}
		resp := stream.next(t)
		if resp.GetVersionInfo() != v {
			t.Fatalf("change %d: client got version %q, want %q", i, resp.GetVersionInfo(), v)
		}
		v1 = v
		stream.send(t, &discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: v, ResponseNonce: resp.GetNonce()})
	}
}

// Resource hashes follow content, not encoding accidents: every test
// case translated again gives the same hashes (Any payloads and map order
// included), and a weight change gives another for some resource.
func TestFingerprintStable(t *testing.T) {
	// The cases name their TLS files relative to the translator's directory.
	t.Chdir(xdstest.Dir())
	cases, err := filepath.Glob(xdstest.Case("*.yaml"))
	if err != nil || len(cases) == 0 {
		t.Fatalf("no test cases: %v", err)
	}
	hashes := func(cfg *config.Config) string {
		t.Helper()
		tr := translate.NewTranslator()
		if _, _, err := tr.Update(cfg); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, kind := range translate.Kinds {
			for typ, byName := range tr.Set(kind) {
				for n, enc := range byName {
					out = append(out, fmt.Sprint(kind, typ, n, enc.Hash))
				}
			}
		}
		sort.Strings(out)
		return strings.Join(out, "\n")
	}
	for _, path := range cases {
		want := hashes(loadCase(t, path))
		for range 20 {
			if hashes(loadCase(t, path)) != want {
				t.Fatalf("%s: the same config translated twice has two sets of hashes", path)
			}
		}
		changed := loadCase(t, path)
		// The last variant's weight: raising it changes the shares in every
		// case (a drained variant starts serving); raising the only serving
		// one would not (weights are scaled to shares).
		vs := changed.Endpoints[0].Variants
		vs[len(vs)-1].Weight++
		if hashes(changed) == want {
			t.Errorf("%s: a weight change kept every hash", path)
		}
	}
}
