package translate

import (
	"strings"
	"testing"

	connmonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	heapmonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
)

// The default bootstrap carries Envoy's edge overload settings: a global
// downstream connection limit, and heap-based shrink (95%) and
// stop-accepting (98%) actions; the admin API is exempt from the limit.
func TestBootstrapOverloadManager(t *testing.T) {
	b, err := Bootstrap(DefaultBootstrapOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(Resources{"bootstrap": {b}}); err != nil {
		t.Fatal(err)
	}
	if !b.GetAdmin().GetIgnoreGlobalConnLimit() {
		t.Error("admin API counts against the connection limit")
	}
	om := b.GetOverloadManager()
	monitors := map[string]bool{}
	for _, m := range om.GetResourceMonitors() {
		monitors[m.GetName()] = true
		switch m.GetName() {
		case connectionMonitorName:
			c := &connmonv3.DownstreamConnectionsConfig{}
			if m.GetTypedConfig().UnmarshalTo(c) != nil || c.GetMaxActiveDownstreamConnections() != DefaultMaxDownstreamConnections {
				t.Errorf("connection monitor %v", m)
			}
		case heapMonitorName:
			h := &heapmonv3.FixedHeapConfig{}
			if m.GetTypedConfig().UnmarshalTo(h) != nil || h.GetMaxHeapSizeBytes() != DefaultMaxHeapBytes {
				t.Errorf("heap monitor %v", m)
			}
		}
	}
	if !monitors[connectionMonitorName] || !monitors[heapMonitorName] {
		t.Fatalf("resource monitors %v", monitors)
	}
	actions := map[string]float64{}
	for _, a := range om.GetActions() {
		if len(a.GetTriggers()) != 1 || a.GetTriggers()[0].GetName() != heapMonitorName {
			t.Errorf("action %s: triggers %v", a.GetName(), a.GetTriggers())
			continue
		}
		actions[a.GetName()] = a.GetTriggers()[0].GetThreshold().GetValue()
	}
	if actions[ShrinkHeapAction] != 0.95 || actions[StopAcceptingRequestsAction] != 0.98 {
		t.Errorf("actions %v", actions)
	}

	o := DefaultBootstrapOptions()
	o.MaxConnections, o.MaxHeapBytes = 0, 0
	if b, err := Bootstrap(o); err != nil || b.GetOverloadManager() != nil {
		t.Errorf("both limits off: overload manager %v, err %v", b.GetOverloadManager(), err)
	}
	o.MaxConnections = 10
	if b, err := Bootstrap(o); err != nil || len(b.GetOverloadManager().GetResourceMonitors()) != 1 || len(b.GetOverloadManager().GetActions()) != 0 {
		t.Errorf("connections only: %v, err %v", b.GetOverloadManager(), err)
	}
	for _, tc := range []struct {
		conns, heap int64
		want        string
	}{{-1, 0, "max connections -1"}, {0, -5, "max heap bytes -5"}} {
		o.MaxConnections, o.MaxHeapBytes = tc.conns, tc.heap
		if _, err := Bootstrap(o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("conns %d heap %d: err %v, want %q", tc.conns, tc.heap, err, tc.want)
		}
	}
}
