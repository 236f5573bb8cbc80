package rls

import (
	"context"

	"google.golang.org/grpc"

	"github.com/modelsplit/modelsplit/rls/lookuppb"
)

// ServiceName and LookupMethod are what gRPC clients put on the wire. Our
// generated messages live under a renamed proto package (see gen.sh), so
// the service descriptor is written here by hand with the public name:
// gRPC routes by this string, never by the proto registry.
const (
	ServiceName  = "grpc.lookup.v1.RouteLookupService"
	LookupMethod = "/" + ServiceName + "/RouteLookup"
)

// LookupServer is the RouteLookupService API.
type LookupServer interface {
	RouteLookup(context.Context, *lookuppb.RouteLookupRequest) (*lookuppb.RouteLookupResponse, error)
}

// serviceDesc mirrors what protoc-gen-go-grpc would emit for rls.proto.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*LookupServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "RouteLookup", Handler: routeLookupHandler}},
	Streams:     []grpc.StreamDesc{},
	Metadata:    "grpc/lookup/v1/rls.proto",
}

func routeLookupHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(lookuppb.RouteLookupRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(LookupServer).RouteLookup(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: LookupMethod}
	handler := func(ctx context.Context, req any) (any, error) {
		return srv.(LookupServer).RouteLookup(ctx, req.(*lookuppb.RouteLookupRequest))
	}
	return interceptor(ctx, in, info, handler)
}

// RegisterLookupServer registers srv on s under the public service name.
func RegisterLookupServer(s grpc.ServiceRegistrar, srv LookupServer) {
	s.RegisterService(&serviceDesc, srv)
}

// LookupClient calls a RouteLookupService; tests and benchmarks use it in
// place of grpc-go's internal client.
type LookupClient struct{ cc grpc.ClientConnInterface }

// NewLookupClient returns a client over cc.
func NewLookupClient(cc grpc.ClientConnInterface) *LookupClient { return &LookupClient{cc: cc} }

// RouteLookup performs one lookup.
func (c *LookupClient) RouteLookup(ctx context.Context, in *lookuppb.RouteLookupRequest, opts ...grpc.CallOption) (*lookuppb.RouteLookupResponse, error) {
	out := new(lookuppb.RouteLookupResponse)
	if err := c.cc.Invoke(ctx, LookupMethod, in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}
