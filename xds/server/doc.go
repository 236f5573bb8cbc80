// Package server serves the translator's resources over ADS (state of the
// world and delta) and the per-type discovery services to Envoy and
// proxyless gRPC clients, with NACK handling, versions that never repeat
// across restarts, and one resource set per node kind.
package server
