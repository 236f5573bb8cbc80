// Package xds is modelsplit's control plane:
//
//   - xds/translate: the pure translator (build, check, render, bootstrap,
//     the RLS plugin config), also incrementally, per endpoint;
//   - xds/server: the ADS server (state of the world and delta) with its
//     cache of encoded resources, NACK handling and versions.
//
// This package only re-exports the names its callers used before the
// split, so they keep compiling.
package xds
