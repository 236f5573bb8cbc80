package translate

import (
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// checkForGRPC applies, to resource sets holding api_listeners, the rules
// grpc-go 1.85 enforces on top of the proto rules (docs/envoy-notes.md §4.2,
// §4.3): each violation would NACK a whole listener or cluster on the client.
func (c *checker) checkForGRPC() {
	grpcNode := false
	for _, r := range c.res[resource.ListenerType] {
		l, ok := r.(*listenerv3.Listener)
		if !ok || l.GetApiListener() == nil {
			continue
		}
		grpcNode = true
		for _, hcm := range c.hcmsOf(l) {
			c.checkGRPCExtProc(l.GetName(), hcm)
		}
	}
	if !grpcNode {
		return
	}
	for _, r := range c.res[resource.EndpointType] {
		cla, ok := r.(*endpointv3.ClusterLoadAssignment)
		if !ok {
			continue
		}
		for i, lle := range cla.GetEndpoints() {
			if lle.GetLocality() == nil {
				c.addf("load assignment %s: endpoints[%d] has no locality (grpc-go rejects it)", cla.GetClusterName(), i)
			}
		}
	}
}

func (c *checker) checkGRPCExtProc(listener string, hcm *hcmv3.HttpConnectionManager) {
	for _, f := range hcm.GetHttpFilters() {
		ep, ok := c.unpack(f.GetTypedConfig()).(*extprocv3.ExternalProcessor)
		if !ok {
			continue
		}
		if ep.GetGrpcService().GetGoogleGrpc().GetTargetUri() == "" {
			c.addf("listener %s: ext_proc filter %s needs google_grpc with a target_uri (grpc-go rejects envoy_grpc)", listener, f.GetName())
		}
		pm := ep.GetProcessingMode()
		if pm == nil {
			c.addf("listener %s: ext_proc filter %s has no processing_mode (grpc-go requires one)", listener, f.GetName())
			continue
		}
		for _, body := range []struct {
			field string
			mode  extprocv3.ProcessingMode_BodySendMode
		}{{"request_body_mode", pm.GetRequestBodyMode()}, {"response_body_mode", pm.GetResponseBodyMode()}} {
			if body.mode != extprocv3.ProcessingMode_NONE && body.mode != extprocv3.ProcessingMode_GRPC {
				c.addf("listener %s: ext_proc filter %s %s %s: grpc-go accepts NONE or GRPC only", listener, f.GetName(), body.field, body.mode)
			}
		}
		if pm.GetResponseBodyMode() == extprocv3.ProcessingMode_GRPC && pm.GetResponseTrailerMode() != extprocv3.ProcessingMode_SEND {
			c.addf("listener %s: ext_proc filter %s: response_body_mode GRPC needs response_trailer_mode SEND in grpc-go", listener, f.GetName())
		}
	}
}

func hasSpecifierPlugin(rc *routev3.RouteConfiguration, name string) bool {
	for _, p := range rc.GetClusterSpecifierPlugins() {
		if p.GetExtension().GetName() == name {
			return true
		}
	}
	return false
}
