// Package server serves the translator's resources over ADS (state of the
// world and delta) and the per-type discovery services to Envoy and
// proxyless gRPC clients, with NACK handling, versions that never repeat
// across restarts, and one resource set per node kind.
//
// # What a change costs
//
// Apply hands the config to an incremental translate.Translator, which
// builds, checks and encodes again only the endpoints whose inputs changed
// and reports the resources whose bytes changed. Those, and only those,
// go to the caches, under one new version for every node kind (all or
// nothing: a refused config changes nothing). The warning for resources
// over grpc-go's default receive limit reads the per-type sizes the
// translator keeps (Translator.Oversized), not every resource. With a
// debounce (ServerOptions.Debounce, DefaultDebounce in modelsplit serve)
// the changes applied within it are served as one version.
//
// # The cache, and why not go-control-plane's
//
// encodedCache is the project's own implementation of go-control-plane's
// cache interface; the library's state-of-the-world and delta servers still
// run the protocol (streams, nonces, subscriptions, ADS ordering of
// requests). It holds each resource as the bytes the translator encoded,
// wrapped once in an Any (and once in a delta Resource); every response to
// every client points at those same values, so a resource is marshalled
// once per version and gRPC only copies its bytes onto each stream.
//
// go-control-plane v0.14's caches do not allow that:
//   - the snapshot cache makes a new cachedResource per response
//     (createResponse, createDeltaResponse), so each resource is marshalled
//     again for every client, and delta hashes every resource of a
//     snapshot on its first delta watch (ConstructVersionMap);
//   - the linear cache marshals once per resource, but versions each type
//     on its own, so one change cannot carry one version across types and
//     node kinds, which the ACK reporting, the NACK guard and the tests of
//     version semantics rely on.
//
// State of the world keeps the snapshot cache's rules: a watch is answered
// when the kind's version differs from the one the request names, or when
// it subscribes to a resource it was not sent; so every subscribed type
// follows each version, and the nackGuard parks a NACKing client as
// before. Delta answers with the resources whose content hash differs from
// what the stream holds, and the removals: a weight change on one endpoint
// sends that endpoint's resources only.
//
// # Envoy's one route configuration, and the weights beside it
//
// Envoy nodes get every endpoint's routes in one RouteConfiguration, so a
// change to one endpoint's routes re-sends all of it (about 5.4 KB per
// endpoint). modelsplit routes by path prefix under one domain, which
// Envoy's ways of splitting a route table do not fit: VHDS fetches virtual
// hosts by Host/authority, and scoped routes (SRDS) pick a scope by exact
// key from header fragments, not by longest path prefix. The translator
// splices the configuration from per-endpoint encoded routes (no
// re-encoding).
//
// Weight changes, the frequent kind (set-weights, rollout steps, bandits),
// do not touch it: Envoy's weighted routes read the weights from the
// runtime (runtime_key_prefix), and the weights are one Runtime resource,
// translate.WeightsRuntimeName, which the bootstrap names as an RTDS layer
// over ADS. The cache serves that type like the others, to Envoy nodes
// only (grpc-go has no runtime; gRPC nodes' routes carry the weights), and
// sends it first in a version, so a new variant's key is there before a
// route reads it. Over delta a weight change sends that resource alone
// (~110 KB at 1,000 endpoints × 4 variants); over state of the world every
// subscribed type still follows each version, as above, and Envoy skips
// the unchanged ones. An Envoy asking for listeners without the layer (a
// bootstrap from before it) is warned about: its routes read no weights.
package server
