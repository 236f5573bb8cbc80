package rls

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/modelsplit/modelsplit/rls/lookuppb"
	"github.com/modelsplit/modelsplit/xds/translate"
)

func lookupReq(keys map[string]string) *lookuppb.RouteLookupRequest {
	return &lookuppb.RouteLookupRequest{TargetType: "grpc", Reason: lookuppb.RouteLookupRequest_REASON_MISS, KeyMap: keys}
}

func TestRouteLookupOverGRPC(t *testing.T) {
	env := startLookup(t, parseConfig(t, twoVariantYAML))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lookup := func(keys map[string]string) (*lookuppb.RouteLookupResponse, error) {
		return env.client.RouteLookup(ctx, lookupReq(keys))
	}

	t.Run("same user same target", func(t *testing.T) {
		counts := map[string]int{}
		for u := 0; u < 400; u++ {
			keys := map[string]string{translate.EndpointKey: "scorer", "x-user-id": fmt.Sprintf("user-%d", u)}
			first, err := lookup(keys)
			if err != nil {
				t.Fatalf("lookup: %v", err)
			}
			if len(first.GetTargets()) != 2 || first.GetTargets()[1] != translate.WeightedCluster("scorer") {
				t.Fatalf("targets %v: want [alias, %s]", first.GetTargets(), translate.WeightedCluster("scorer"))
			}
			if want := translate.AliasCluster("scorer", first.GetHeaderData()); first.GetTargets()[0] != want {
				t.Fatalf("first target %q does not match header_data variant %q", first.GetTargets()[0], first.GetHeaderData())
			}
			for i := 0; i < 3; i++ {
				again, err := lookup(keys)
				if err != nil {
					t.Fatalf("lookup: %v", err)
				}
				if again.GetTargets()[0] != first.GetTargets()[0] {
					t.Fatalf("user-%d moved from %s to %s", u, first.GetTargets()[0], again.GetTargets()[0])
				}
			}
			counts[first.GetHeaderData()]++
		}
		// 400 users at 70/30: both variants must get users (a stuck answer
		// would put everyone on one).
		if counts["a"] == 0 || counts["b"] == 0 {
			t.Fatalf("users per variant %v: want both variants used", counts)
		}
	})

	t.Run("rule wins over the hash", func(t *testing.T) {
		for u := 0; u < 50; u++ {
			resp, err := lookup(map[string]string{translate.EndpointKey: "scorer", "x-user-id": fmt.Sprintf("eu-%d", u), "x-region": "eu"})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetTargets()[0]; got != translate.AliasCluster("scorer", "b") {
				t.Fatalf("eu user %d got %s, want the rule's variant b", u, got)
			}
		}
	})

	t.Run("explicit target", func(t *testing.T) {
		resp, err := lookup(map[string]string{translate.EndpointKey: "scorer", "x-user-id": "u-1", "x-modelsplit-target": "b"})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetTargets()[0]; got != translate.AliasCluster("scorer", "b") {
			t.Fatalf("target b answered %s", got)
		}
	})

	t.Run("anonymous gets the weighted cluster only", func(t *testing.T) {
		resp, err := lookup(map[string]string{translate.EndpointKey: "scorer"})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetTargets(); len(got) != 1 || got[0] != translate.WeightedCluster("scorer") {
			t.Fatalf("anonymous targets %v, want [%s]", got, translate.WeightedCluster("scorer"))
		}
	})

	errCases := []struct {
		name string
		req  *lookuppb.RouteLookupRequest
		code codes.Code
	}{
		{"unknown endpoint", lookupReq(map[string]string{translate.EndpointKey: "nope", "x-user-id": "u"}), codes.NotFound},
		{"no endpoint key", lookupReq(map[string]string{"x-user-id": "u"}), codes.InvalidArgument},
		{"http target type", &lookuppb.RouteLookupRequest{TargetType: "http", KeyMap: map[string]string{translate.EndpointKey: "scorer"}}, codes.InvalidArgument},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := env.client.RouteLookup(ctx, tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want code %v", err, tc.code)
			}
		})
	}
	if got := testutil.ToFloat64(env.metrics.RLSLookups.WithLabelValues("unknown_endpoint")); got != 1 {
		t.Errorf("rls_lookups_total{result=unknown_endpoint} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(env.metrics.RLSLookups.WithLabelValues("bad_request")); got != 2 {
		t.Errorf("rls_lookups_total{result=bad_request} = %v, want 2", got)
	}
}

// TestStickyAcrossWeightChange: existing users keep their variant when the
// weights move; new users follow the new weights.
func TestStickyAcrossWeightChange(t *testing.T) {
	env := startLookup(t, parseConfig(t, twoVariantYAML))
	ctx := context.Background()
	before := map[string]string{}
	for u := 0; u < 300; u++ {
		id := fmt.Sprintf("old-%d", u)
		resp, err := env.client.RouteLookup(ctx, lookupReq(map[string]string{translate.EndpointKey: "scorer", "x-user-id": id}))
		if err != nil {
			t.Fatal(err)
		}
		before[id] = resp.GetTargets()[0]
	}
	env.engine.SetConfig(parseConfig(t, `
endpoints:
  - name: scorer
    protocol: grpc
    match: {path_prefix: /grpc.testing.TestService/}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 10, backends: ["127.0.0.1:9001"]}
      - {name: b, weight: 90, backends: ["127.0.0.1:9002"]}
`))
	for id, was := range before {
		resp, err := env.client.RouteLookup(ctx, lookupReq(map[string]string{translate.EndpointKey: "scorer", "x-user-id": id}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTargets()[0] != was {
			t.Fatalf("%s moved from %s to %s after the weight change", id, was, resp.GetTargets()[0])
		}
	}
	const newUsers = 1000
	onB := 0
	for u := 0; u < newUsers; u++ {
		resp, err := env.client.RouteLookup(ctx, lookupReq(map[string]string{translate.EndpointKey: "scorer", "x-user-id": fmt.Sprintf("new-%d", u)}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTargets()[0] == translate.AliasCluster("scorer", "b") {
			onB++
		}
	}
	// At 10/90 the share of b among new users is 0.9 ± 0.0095 (1 sd); the
	// old weights (30%) would be about 60 sd away.
	if share := float64(onB) / newUsers; share < 0.86 || share > 0.94 {
		t.Fatalf("new users on b: %.3f, want about 0.90 after the change to 10/90", share)
	}
}
