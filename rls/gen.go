package rls

// The RLS messages in lookuppb are generated from gRPC's public protos under
// a renamed proto package (gen.sh says why and which tool versions). Last
// generated from grpc/grpc-proto commit 99135b19189588fcc787acb84cff27991787473d:
//
//	GRPC_PROTO=/path/to/grpc-proto go generate ./rls
//
//go:generate sh ./gen.sh
