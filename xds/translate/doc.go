// Package translate turns the config model into Envoy v3 resources for each
// node kind (Envoy gateways, proxyless gRPC clients), checks them the way
// Envoy and grpc-go would, renders them, writes Envoy's bootstrap and the
// RLS cluster-specifier plugin config. It is pure: no I/O, no decision
// engine, no server; the ADS server (xds/server) serves what it builds.
//
// Translator builds incrementally (per endpoint) and encodes before it
// checks: Check validates every resource with Envoy's proto rules and
// finds the Anys to unpack and validate in the deterministic encoding,
// which is what the server sends.
//
// Envoy's weights live outside its route table: the weighted routes carry
// a placeholder weight and runtime_key_prefix, and one Runtime resource
// (WeightsRuntime, served over RTDS; the bootstrap declares the layer)
// holds every variant's scaled weight, so a weight change leaves Envoy's
// route configuration byte for byte the same (build_runtime.go,
// docs/envoy-notes.md §6.4). gRPC nodes' routes carry the weights.
//
// # Mutation testing
//
// `make mutate PKGS='./xds/translate:check ./xds/translate:build'` mutates the check and build
// files (scripts/mutate.sh; size.go and equal.go are in both runs). These surviving mutants are equivalent: no
// input can tell them from the code as written.
//
//   - check.go, unpack: `err == nil` negated. Check's deepValidate decodes
//     every Any found in the resources' encodings into the cache (by type
//     URL and value) before the reference checks call unpack, so unpack's
//     own decoding only ever runs for a nil Any (a listener without
//     api_listener), which fails to decode either way and yields nil in both
//     versions. (A resource that cannot be encoded at all is not walked; it
//     is refused with "cannot encode" in both versions, though the mutant
//     may then list fewer reference problems beside it.)
//   - check.go, reachesAny: the `break` after `found = true` turned into
//     `continue`. The loop condition is `!found`, so the loop ends at once
//     either way.
//   - check.go, typeShort: `i >= 0` as `i > 0`. The keys are type URLs
//     ("type.googleapis.com/envoy..."), which never have their last dot at
//     index 0.
//   - build.go, Resources.sort: `<` as `<=` in the less function. Names are
//     unique within a type (Check reports duplicates), so no two elements
//     compare equal and the order is the same.
//   - build_grpc.go, grpcTarget: `len(addr) > len("unix://")` as `>=`. The
//     two differ only for the bare "unix://", which config validation
//     refuses (a unix socket needs a path).
//   - build_grpc.go, withRLS: `vh.Routes[:n-1:n-1]` as `[:n-1:n+1]`. The
//     capacity only decides whether append copies: the appended values are
//     read before append writes, grpcVariantRoutes reserves two spare slots
//     (so n+1 is in range), and the old slice is not kept anywhere, so the
//     resulting routes are the same.
//   - size.go, OversizedResources and OversizedInSet: `>` as `>=` in the
//     largest-first sort. It only moves entries of equal size, whose order
//     sort.Slice (not stable) leaves unspecified in the code as written too.
//   - build_timeouts.go, withTimeouts: the `continue` for a route without
//     a RouteAction turned into `break`. Its only caller hands it
//     endpointRoutes' routes, which all have one, so the branch never runs.
//   - build_runtime.go, endpointWeights and weightsOrder: `<` as `<=` in
//     their sort functions. The keys are cluster names of one endpoint and
//     endpoint names, unique (validation refuses duplicates), so no two
//     compare equal and the order is the same.
//   - build_health.go, withRetries: `a != nil && p != nil` as `||`. Every
//     route withRetries is given (endpointRoutes: the variant, compare and
//     fallback routes) has a RouteAction, so a is never nil, and with no
//     retry policy (p nil) the mutant only stores nil in a RetryPolicy
//     that nothing set before.
//   - build_tls.go, transportSocket: `u.cert != nil && u.key != nil` as
//     `||`. Both callers set the two together or neither (extProcTLS loads
//     both; the bootstrap refuses one without the other).
//   - build_tls.go, redactPrivateKeys: the `continue` after redacting a
//     private_key turned into `break`, which skips that map's remaining
//     keys. In Envoy's protos a private_key's siblings (certificate_chain,
//     password, ocsp_staple, ...) never hold another private_key, so the
//     rendered output is the same.
package translate
