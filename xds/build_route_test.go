package xds

import (
	"path/filepath"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
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
	routes := res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes()
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
	routes := res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes()
	if len(routes) != len(e.Variants)+1 {
		t.Fatalf("%d routes, want %d", len(routes), len(e.Variants)+1)
	}
	for i, v := range e.Variants {
		r := routes[i]
		h := r.GetMatch().GetHeaders()
		if r.GetMatch().GetPrefix() != e.Match.PathPrefix || len(h) != 1 || h[0].GetName() != config.VariantHeader ||
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
// Every config in testdata: Envoy strips the client's routing header, the
// shadow header and the header of every shadow the config names (per-shadow
// mirror headers are read by cluster_header, so a client copy would pick a
// mirror), before any filter or route sees them.
func TestEnvoyStripsClientRoutingHeaders(t *testing.T) {
	cases, err := filepath.Glob("testdata/in/*.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	shadowsSeen := 0
	for _, path := range cases {
		cfg := loadCase(t, path)
		res := buildChecked(t, cfg, KindEnvoy)
		hcm := listenerHCMs(res[resource.ListenerType][0].(*listenerv3.Listener))[0]
		removed := map[string]bool{}
		for _, ext := range hcm.GetEarlyHeaderMutationExtensions() {
			hm := &earlyv3.HeaderMutation{}
			if err := ext.GetTypedConfig().UnmarshalTo(hm); err != nil {
				t.Fatalf("%s: early header mutation %s: %v", path, ext.GetName(), err)
			}
			for _, m := range hm.GetMutations() {
				removed[m.GetRemove()] = true
			}
		}
		want := []string{config.VariantHeader, config.ShadowHeader}
		for _, e := range cfg.Endpoints {
			for _, s := range e.Shadows {
				want = append(want, config.ShadowHeaderFor(s.Name))
				shadowsSeen++
			}
		}
		for _, h := range want {
			if !removed[h] {
				t.Errorf("%s: client-sent %s is not stripped by an early header mutation", path, h)
			}
		}
		if hcm.GetRds().GetRouteConfigName() != GatewayRouteName || hcm.GetRds().GetConfigSource().GetAds() == nil {
			t.Errorf("%s: HCM routes come from %v, want RDS %s over ADS", path, hcm.GetRds(), GatewayRouteName)
		}
	}
	if shadowsSeen == 0 {
		t.Fatal("no testdata config has a shadow: the per-shadow check proved nothing")
	}
}
