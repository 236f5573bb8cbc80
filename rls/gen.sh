#!/bin/sh
# Regenerates lookuppb/*.pb.go from gRPC's public RLS protos
# (github.com/grpc/grpc-proto, grpc/lookup/v1/rls.proto and rls_config.proto).
#
# The protos are renamed on the way — proto package grpc.lookup.v1 becomes
# modelsplit.lookup.v1, file paths move under modelsplit/lookup/v1/ — because
# grpc-go registers the original full names in the global protobuf registry
# whenever google.golang.org/grpc/balancer/rls is linked in (every RLS client,
# including our tests), and a second registration of the same name panics.
# Field numbers and types are untouched, so the wire bytes are identical; the
# service name on the wire is set by hand in rls/service.go.
#
# Usage: GRPC_PROTO=/path/to/grpc-proto-checkout ./gen.sh
# Tools: protoc (3.21+), protoc-gen-go v1.36.12 (the google.golang.org/protobuf
# version in go.mod): go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
set -eu
: "${GRPC_PROTO:?set GRPC_PROTO to a checkout of https://github.com/grpc/grpc-proto}"
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/in/modelsplit/lookup/v1" "$tmp/out"
for f in rls.proto rls_config.proto; do
	sed -e 's/^package grpc\.lookup\.v1;/package modelsplit.lookup.v1;/' \
		-e 's#^option go_package = .*#option go_package = "github.com/modelsplit/modelsplit/rls/lookuppb";#' \
		"$GRPC_PROTO/grpc/lookup/v1/$f" >"$tmp/in/modelsplit/lookup/v1/$f"
	grep -q '^package modelsplit\.lookup\.v1;' "$tmp/in/modelsplit/lookup/v1/$f" ||
		{ echo "gen.sh: $f: package line not rewritten" >&2; exit 1; }
done
protoc -I "$tmp/in" --go_out="$tmp/out" --go_opt=paths=source_relative \
	modelsplit/lookup/v1/rls.proto modelsplit/lookup/v1/rls_config.proto
cp "$tmp/out/modelsplit/lookup/v1/rls.pb.go" "$tmp/out/modelsplit/lookup/v1/rls_config.pb.go" "$here/lookuppb/"
