package translate

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

// Each ext_proc filter has its own stat_prefix, so Envoy's stats tell
// the decision's failures from the observer's.
func TestExtProcStatPrefixes(t *testing.T) {
	cfg := loadCase(t, "testdata/in/ab.yaml")
	want := map[string]string{DecideFilterName: DecideStatPrefix, ObserveFilterName: ObserveStatPrefix}
	lis, err := gatewayListener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, hcm := range listenerHCMs(lis) {
		for _, f := range hcm.GetHttpFilters() {
			ep := &extprocv3.ExternalProcessor{}
			if f.GetTypedConfig().UnmarshalTo(ep) != nil {
				continue
			}
			if ep.GetStatPrefix() != want[f.GetName()] {
				t.Errorf("filter %s: stat_prefix %q, want %q", f.GetName(), ep.GetStatPrefix(), want[f.GetName()])
			}
			delete(want, f.GetName())
		}
	}
	if len(want) != 0 {
		t.Errorf("filters not found: %v", want)
	}
}
