package translate

// Rendering a gRPC route configuration resolves the RLS plugin's Any by
// its public name, grpc.lookup.v1.RouteLookupClusterSpecifier, which only
// grpc-go's RLS balancer registers (rls/lookuppb uses a renamed proto
// package). The golden files render it, so the tests link the balancer,
// as the package's tests did before the split.
import _ "google.golang.org/grpc/balancer/rls"
