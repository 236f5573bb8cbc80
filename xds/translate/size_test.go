package translate_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds"
)

// scaleConfig is n typical endpoints: an HTTP path prefix, a sticky
// header, two variants of one backend each, one mirror shadow, one rule.
func scaleConfig(t testing.TB, n int) *config.Config {
	t.Helper()
	var b strings.Builder
	b.WriteString("endpoints:\n")
	for i := range n {
		fmt.Fprintf(&b, `  - name: model-%05d
    match: {path_prefix: /model-%05d}
    sticky: {header: x-user-id}
    variants:
      - {name: stable, weight: 90, backends: ["10.0.%d.%d:8080"]}
      - {name: canary, weight: 10, backends: ["10.1.%d.%d:8080"]}
    shadows:
      - {name: next, percent: 5, backends: ["10.2.%d.%d:8080"]}
    rules:
      - {header: x-region, equals: eu, variant: canary}
`, i, i, i/250, i%250+1, i/250, i%250+1, i/250, i%250+1)
	}
	cfg, err := config.Parse("scale.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The route configuration grows with the endpoints; past the 4 MiB a
// grpc-go client takes by default, OversizedResources names it with its
// size and the limit (validate and serve print that as a warning). The
// test logs how many typical endpoints fit (the README's supported scale).
func TestOversizedRouteConfigurationIsReported(t *testing.T) {
	size := func(n int) (int, []xds.Oversized) {
		res, err := xds.Build(scaleConfig(t, n), xds.KindEnvoy)
		if err != nil {
			t.Fatal(err)
		}
		over := xds.OversizedResources(res, xds.KindEnvoy, xds.GRPCDefaultReceiveLimit)
		for _, o := range over {
			if o.Type == "route configuration" && o.Name != "" {
				return o.Bytes, over
			}
		}
		return 0, over
	}
	if n, over := size(100); n != 0 || len(over) != 0 {
		t.Fatalf("100 endpoints reported oversized: %v", over)
	}
	// Find the largest endpoint count under the limit (route size is
	// close to linear: bisect).
	lo, hi := 100, 20000
	if n, _ := size(hi); n == 0 {
		t.Fatalf("%d endpoints still fit in 4 MiB", hi)
	}
	for hi-lo > 50 {
		mid := (lo + hi) / 2
		if n, _ := size(mid); n == 0 {
			lo = mid
		} else {
			hi = mid
		}
	}
	t.Logf("about %d typical endpoints fit in one route configuration under 4 MiB (%d do not)", lo, hi)
	bytes, over := size(hi)
	msg := over[0].String()
	for _, want := range []string{"route configuration", fmt.Sprint(bytes), "4194304", "grpc.MaxCallRecvMsgSize", "envoy nodes"} {
		if !strings.Contains(msg, want) {
			t.Errorf("warning %q lacks %q", msg, want)
		}
	}
}
