package translate

import (
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
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
			// The copy keeps the primary's Host (no "-shadow" suffix)
			// and names its shadow in x-modelsplit-shadow instead.
			if !m.GetDisableShadowHostSuffixAppend() {
				t.Errorf("route %s: mirror %v appends -shadow to the Host", r.GetName(), m)
			}
			shadow := strings.TrimPrefix(m.GetCluster()+strings.TrimPrefix(m.GetClusterHeader(), config.ShadowHeader+"-"), "ranker/")
			if mut := m.GetRequestHeadersMutations(); len(mut) != 1 || mut[0].GetAppend().GetHeader().GetKey() != config.ShadowHeader ||
				mut[0].GetAppend().GetHeader().GetValue() != shadow ||
				mut[0].GetAppend().GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Errorf("route %s: mirror header mutations %v, want %s: %s", r.GetName(), mut, config.ShadowHeader, shadow)
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
		if rh := cw.GetResponseHeadersToAdd(); len(rh) != 0 {
			t.Errorf("cluster weight %s: response headers %v; the virtual host sets them", cw.GetName(), rh)
		}
	}
	// Every variant, weight 0 included: the weights come from the runtime
	// layer, and a variant going from 0 to above must not change the route.
	var all []string
	for _, v := range e.Variants {
		all = append(all, config.ClusterName(e.Name, v.Name))
	}
	if strings.Join(names, ",") != strings.Join(all, ",") {
		t.Errorf("fallback splits over %v, want every variant %v", names, all)
	}
	if wc.GetRuntimeKeyPrefix() != WeightsRuntimePrefix {
		t.Errorf("runtime_key_prefix %q, want %q", wc.GetRuntimeKeyPrefix(), WeightsRuntimePrefix)
	}
	for _, cw := range wc.GetClusters() {
		if cw.GetWeight().GetValue() != RuntimeDefaultWeight {
			t.Errorf("cluster weight %s: %d in the route, want the placeholder %d", cw.GetName(), cw.GetWeight().GetValue(), RuntimeDefaultWeight)
		}
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

// observeCapture returns a route's observe override: processing mode and
// the capture metadata it passes on.
func observeCapture(t *testing.T, r *routev3.Route) (*extprocv3.ProcessingMode, string) {
	t.Helper()
	var pr extprocv3.ExtProcPerRoute
	if err := r.GetTypedPerFilterConfig()[ObserveFilterName].UnmarshalTo(&pr); err != nil {
		t.Fatalf("route %s: observe per-route config: %v", r.GetName(), err)
	}
	capture := ""
	for _, md := range pr.GetOverrides().GetGrpcInitialMetadata() {
		if md.GetKey() == config.CaptureMetadataKey {
			capture = md.GetValue()
		}
	}
	return pr.GetOverrides().GetProcessingMode(), capture
}

func streamsBodies(m *extprocv3.ProcessingMode) bool {
	return m.GetRequestBodyMode() == extprocv3.ProcessingMode_STREAMED && m.GetResponseBodyMode() == extprocv3.ProcessingMode_STREAMED &&
		m.GetResponseTrailerMode() == extprocv3.ProcessingMode_SEND && m.GetRequestHeaderMode() == extprocv3.ProcessingMode_SEND &&
		m.GetResponseHeaderMode() == extprocv3.ProcessingMode_SEND
}

// compare.yaml: only requests the decision marked for a compare shadow
// stream bodies (and, for gRPC's status, response trailers) to the
// observe filter: each variant gets a route per compare shadow matching
// its mark, ahead of the variant route, which tells the observe filter to
// capture what the marks name; every other route of the endpoint leaves
// the observe filter at headers only. Paused shadows and unobserved
// endpoints get no such route.
func TestEnvoyCompareRoutesStreamBodiesOnlyWhenMarked(t *testing.T) {
	res := buildChecked(t, loadCase(t, "testdata/in/compare.yaml"), KindEnvoy)
	var names []string
	for _, r := range res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes() {
		names = append(names, r.GetName())
		mode, capture := observeCapture(t, r)
		marked := ""
		for _, h := range r.GetMatch().GetHeaders() {
			if strings.HasPrefix(h.GetName(), config.ShadowHeader+"-") {
				if !h.GetPresentMatch() {
					t.Errorf("route %s: %s must be a presence match", r.GetName(), h.GetName())
				}
				marked = h.GetName()
			}
		}
		switch {
		case marked != "":
			if !streamsBodies(mode) || capture != config.CaptureMarked {
				t.Errorf("route %s (marked by %s): observe mode %v, capture %q; want headers, STREAMED bodies, response trailers, capture %q",
					r.GetName(), marked, mode, capture, config.CaptureMarked)
			}
		case mode != nil || capture != "":
			t.Errorf("route %s: observe override %v, capture %q on an unmarked route: its requests would stream bodies", r.GetName(), mode, capture)
		}
	}
	want := []string{
		"classify/v1/compare/v3", "classify/v1", "classify/v2/compare/v3", "classify/v2", "classify/fallback",
		"legacy/only", "legacy/fallback", // longer prefixes first
		"scorer/a/compare/c", "scorer/a", "scorer/b/compare/c", "scorer/b", "scorer/fallback",
		UnmatchedRouteName, // last: the fast 404 for paths no endpoint matches
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("routes\n %v\nwant\n %v", names, want)
	}
}

// An endpoint without the decision (decide: false) has no marks: no
// compare routes; its fallback route, the one its requests take, streams
// bodies and tells the observe filter to sample.
func TestEnvoyCompareWithoutDecision(t *testing.T) {
	res := buildChecked(t, configFromYAML(t, `
endpoints:
  - name: nodecide
    match: {path_prefix: /n}
    decide: false
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
    shadows:
      - {name: c, percent: 10, backends: ["10.0.0.2:80"], compare: {}}
`), KindEnvoy)
	for _, r := range res[resource.RouteType][0].(*routev3.RouteConfiguration).GetVirtualHosts()[0].GetRoutes() {
		mode, capture := observeCapture(t, r)
		switch r.GetName() {
		case "nodecide/fallback":
			if !streamsBodies(mode) || capture != config.CaptureSampled {
				t.Errorf("fallback: observe mode %v, capture %q; want bodies streamed, capture %q", mode, capture, config.CaptureSampled)
			}
		case "nodecide/a":
			if mode != nil || capture != "" {
				t.Errorf("variant route: observe mode %v, capture %q; want none (no decision selects it)", mode, capture)
			}
		case UnmatchedRouteName:
		default:
			t.Errorf("unexpected route %s", r.GetName())
		}
	}
}
