package translate

import (
	"fmt"
	"time"

	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	connmonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	heapmonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Overload manager defaults for `modelsplit bootstrap`: Envoy's edge-proxy
// recommendations (a global downstream connection limit; shrink the heap
// at 95% of a heap budget and stop accepting requests at 98%) with a
// 1 GiB heap budget, to be set to what the Envoy's container may use.
const (
	DefaultMaxDownstreamConnections = 50_000
	DefaultMaxHeapBytes             = 1 << 30
	heapMonitorName                 = "envoy.resource_monitors.fixed_heap"
	connectionMonitorName           = "envoy.resource_monitors.global_downstream_max_connections"
	// Overload actions, as Envoy names them (and its overload.* stats).
	ShrinkHeapAction             = "envoy.overload_actions.shrink_heap"
	StopAcceptingRequestsAction  = "envoy.overload_actions.stop_accepting_requests"
	shrinkHeapThreshold          = 0.95
	stopAcceptingThreshold       = 0.98
	overloadRefreshInterval      = 250 * time.Millisecond
	maxOverloadMaxConnectionsCap = 1 << 40 // far past any file descriptor limit
)

// overloadManager protects the Envoy from running out of connections or
// memory. 0 turns a monitor (and its actions) off; nil when both are off.
func overloadManager(o BootstrapOptions) (*overloadv3.OverloadManager, error) {
	if o.MaxConnections < 0 || o.MaxConnections > maxOverloadMaxConnectionsCap {
		return nil, fmt.Errorf("max connections %d: want 1-%d (0 turns the limit off)", o.MaxConnections, int64(maxOverloadMaxConnectionsCap))
	}
	if o.MaxHeapBytes < 0 {
		return nil, fmt.Errorf("max heap bytes %d: want a positive size (0 turns the heap monitor off)", o.MaxHeapBytes)
	}
	om := &overloadv3.OverloadManager{RefreshInterval: durationpb.New(overloadRefreshInterval)}
	if o.MaxConnections > 0 {
		// A proactive monitor: Envoy checks it when it accepts a
		// connection and closes the ones past the limit
		// (listener.<address>.downstream_global_cx_overflow). The admin
		// listener is exempt (Admin.ignore_global_conn_limit).
		om.ResourceMonitors = append(om.ResourceMonitors, &overloadv3.ResourceMonitor{
			Name: connectionMonitorName,
			ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: mustAny(&connmonv3.DownstreamConnectionsConfig{
				MaxActiveDownstreamConnections: o.MaxConnections,
			})},
		})
	}
	if o.MaxHeapBytes > 0 {
		om.ResourceMonitors = append(om.ResourceMonitors, &overloadv3.ResourceMonitor{
			Name: heapMonitorName,
			ConfigType: &overloadv3.ResourceMonitor_TypedConfig{TypedConfig: mustAny(&heapmonv3.FixedHeapConfig{
				MaxHeapSizeBytes: uint64(o.MaxHeapBytes),
			})},
		})
		for _, a := range []struct {
			name      string
			threshold float64
		}{{ShrinkHeapAction, shrinkHeapThreshold}, {StopAcceptingRequestsAction, stopAcceptingThreshold}} {
			om.Actions = append(om.Actions, &overloadv3.OverloadAction{
				Name: a.name,
				Triggers: []*overloadv3.Trigger{{
					Name:         heapMonitorName,
					TriggerOneof: &overloadv3.Trigger_Threshold{Threshold: &overloadv3.ThresholdTrigger{Value: a.threshold}},
				}},
			})
		}
	}
	if len(om.ResourceMonitors) == 0 {
		return nil, nil
	}
	return om, nil
}
