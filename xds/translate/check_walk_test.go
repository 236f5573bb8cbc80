package translate

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Check finds the Anys in the resources' encodings and validates equal
// ones once; a broken one is still reported at every place it occurs,
// whether the routes share one Any or hold equal copies, with its map key
// in the path.
func TestCheckReportsEqualAnysEverywhere(t *testing.T) {
	for _, shared := range []bool{true, false} {
		res := buildOrFail(t, "testdata/in/ab.yaml", KindEnvoy)
		rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
		routes := rc.GetVirtualHosts()[0].GetRoutes()
		broken := &anypb.Any{TypeUrl: "type.googleapis.com/nope.Nope", Value: []byte{1}}
		n := 0
		for i, r := range routes {
			if r.TypedPerFilterConfig == nil || i > 2 {
				continue
			}
			a := broken
			if !shared {
				a = &anypb.Any{TypeUrl: broken.TypeUrl, Value: []byte{1}}
			}
			r.TypedPerFilterConfig[ObserveFilterName] = a
			n++
		}
		if n < 2 {
			t.Fatalf("only %d routes with per-filter configs", n)
		}
		got := problems(t, res)
		if len(got) != n {
			t.Errorf("shared=%v: %d problems, want %d (one per route):\n%s", shared, len(got), n, strings.Join(got, "\n"))
		}
		for _, p := range got {
			if !strings.Contains(p, ".typed_per_filter_config["+ObserveFilterName+"]: cannot unpack Any type.googleapis.com/nope.Nope") {
				t.Errorf("shared=%v: problem %q does not name the map entry and the Any", shared, p)
			}
		}
	}
}
