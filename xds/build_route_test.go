package xds

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	earlyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/modelsplit/modelsplit/config"
)

func TestPercent(t *testing.T) {
	hundred, million := typev3.FractionalPercent_HUNDRED, typev3.FractionalPercent_MILLION
	for _, tc := range []struct {
		in    float64
		num   uint32
		denom typev3.FractionalPercent_DenominatorType
	}{
		{10, 10, hundred},
		{100, 100, hundred},
		{0.5, 5_000, million},
		{2.5, 25_000, million},
		{0.0001, 1, million},
		{33.3333, 333_333, million},
	} {
		got := percent(tc.in)
		if got.GetNumerator() != tc.num || got.GetDenominator() != tc.denom {
			t.Errorf("percent(%v) = %d/%v, want %d/%v", tc.in, got.GetNumerator(), got.GetDenominator(), tc.num, tc.denom)
		}
	}
}

// three.yaml has a user-sampled shadow (the decision names it in
// x-modelsplit-shadow) and a 0.5% per-request one: every route of the
// endpoint mirrors both ways, so a decided request is shadowed like a
// fallback one.
func TestEnvoyShadowMirrors(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/three.yaml"), KindEnvoy)
	routes := endpointRoutesOf(res)
	if len(routes) != 4 {
		t.Fatalf("%d routes, want 3 variant routes + fallback", len(routes))
	}
	for _, r := range routes {
		var perRequest, byHeader int
		for _, m := range r.GetRoute().GetRequestMirrorPolicies() {
			switch {
			case m.GetCluster() == "ranker/sampler":
				perRequest++
				f := m.GetRuntimeFraction().GetDefaultValue()
				if f.GetNumerator() != 5_000 || f.GetDenominator() != typev3.FractionalPercent_MILLION {
					t.Errorf("route %s: sampler mirrors %d/%v, want 5000/MILLION (0.5%%)", r.GetName(), f.GetNumerator(), f.GetDenominator())
				}
			case m.GetClusterHeader() == config.ShadowHeaderFor("candidate"):
				byHeader++
				if m.GetRuntimeFraction() != nil {
					t.Errorf("route %s: the user-sampled mirror must not sample again per request", r.GetName())
				}
			default:
				t.Errorf("route %s: unexpected mirror policy %v", r.GetName(), m)
			}
		}
		if perRequest != 1 || byHeader != 1 {
			t.Errorf("route %s: %d per-request and %d header mirrors, want 1 and 1", r.GetName(), perRequest, byHeader)
		}
	}
}

// Per endpoint: a header-match route per variant first (what the decision
// selects once the route cache is cleared), then the prefix-only fallback
// that splits by weight, hashed on the sticky key so ext_proc being down
// still keeps users in place.
func TestEnvoyVariantRoutesThenStickyFallback(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/zero.yaml"), KindEnvoy)
	cfg := loadCase(t, "testdata/in/zero.yaml")
	e := cfg.Endpoints[0]
	routes := endpointRoutesOf(res)
	if len(routes) != len(e.Variants)+1 {
		t.Fatalf("%d routes, want %d", len(routes), len(e.Variants)+1)
	}
	for i, v := range e.Variants {
		r := routes[i]
		h := r.GetMatch().GetHeaders()
		if r.GetMatch().GetPathSeparatedPrefix() != e.Match.PathPrefix || len(h) != 1 || h[0].GetName() != config.VariantHeader ||
			h[0].GetStringMatch().GetExact() != v.Name {
			t.Errorf("route %d: match %v, want prefix %s and %s: %s", i, r.GetMatch(), e.Match.PathPrefix, config.VariantHeader, v.Name)
		}
		if r.GetRoute().GetCluster() != config.ClusterName(e.Name, v.Name) {
			t.Errorf("route %d goes to %q", i, r.GetRoute().GetCluster())
		}
	}
	fb := routes[len(routes)-1]
	if len(fb.GetMatch().GetHeaders()) != 0 {
		t.Errorf("fallback route matches headers: %v", fb.GetMatch().GetHeaders())
	}
	wc := fb.GetRoute().GetWeightedClusters()
	var names []string
	for _, cw := range wc.GetClusters() {
		names = append(names, cw.GetName())
		rh := cw.GetResponseHeadersToAdd()
		if len(rh) != 1 || rh[0].GetHeader().GetKey() != config.VariantHeader || !strings.HasSuffix(cw.GetName(), "/"+rh[0].GetHeader().GetValue()) {
			t.Errorf("cluster weight %s: response headers %v", cw.GetName(), rh)
		}
	}
	var positive []string
	for _, v := range e.Variants {
		if v.Weight > 0 {
			positive = append(positive, config.ClusterName(e.Name, v.Name))
		}
	}
	if strings.Join(names, ",") != strings.Join(positive, ",") {
		t.Errorf("fallback splits over %v, want the positive-weight variants %v", names, positive)
	}
	if !wc.GetUseHashPolicy().GetValue() {
		t.Error("fallback split is not hashed on the sticky key (use_hash_policy)")
	}
	hp := fb.GetRoute().GetHashPolicy()
	if len(hp) != 1 || hp[0].GetHeader().GetHeaderName() != e.Sticky.Header {
		t.Errorf("hash policy %v, want header %s", hp, e.Sticky.Header)
	}
}

// Clients must not choose their variant or shadow: both headers are
// removed before any filter or route sees the request.
func TestEnvoyStripsClientRoutingHeaders(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/ab.yaml"), KindEnvoy)
	hcm := listenerHCMs(res[resource.ListenerType][0].(*listenerv3.Listener))[0]
	removed := map[string]bool{}
	for _, ext := range hcm.GetEarlyHeaderMutationExtensions() {
		hm := &earlyv3.HeaderMutation{}
		if err := ext.GetTypedConfig().UnmarshalTo(hm); err != nil {
			t.Fatalf("early header mutation %s: %v", ext.GetName(), err)
		}
		for _, m := range hm.GetMutations() {
			removed[m.GetRemove()] = true
		}
	}
	for _, h := range []string{config.VariantHeader, config.ShadowHeader} {
		if !removed[h] {
			t.Errorf("client-sent %s is not stripped by an early header mutation", h)
		}
	}
	if hcm.GetRds().GetRouteConfigName() != GatewayRouteName || hcm.GetRds().GetConfigSource().GetAds() == nil {
		t.Errorf("HCM routes come from %v, want RDS %s over ADS", hcm.GetRds(), GatewayRouteName)
	}
}
