package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// checkRLSDefaultTargets: a plugin's default_target serves every call
// whose lookup fails, so it must be a cluster that exists.
func (c *checker) checkRLSDefaultTargets(rc *routev3.RouteConfiguration, clusters map[string]*clusterv3.Cluster) {
	for _, p := range rc.GetClusterSpecifierPlugins() {
		a := p.GetExtension().GetTypedConfig()
		if a.GetTypeUrl() != ClusterSpecifierTypeURL {
			continue
		}
		m, err := UnmarshalClusterSpecifier(a)
		if err != nil {
			continue // reported where the Any itself is validated
		}
		if t := m.GetRouteLookupConfig().GetDefaultTarget(); t != "" {
			if _, ok := clusters[t]; !ok {
				c.addf("route configuration %s: RLS plugin %s default_target %q does not exist", rc.GetName(), p.GetExtension().GetName(), t)
			}
		}
	}
}
