package extproc_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/shadow"
)

// shadowCall is what a recording gRPC shadow received.
type shadowCall struct {
	method    string
	tenant    []string
	requestID []string
}

// startRecordingShadow is a gRPC shadow that answers every call with its
// request and keeps the method and metadata of each.
func startRecordingShadow(t *testing.T) (string, func() []shadowCall) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls []shadowCall
	s := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		md, _ := metadata.FromIncomingContext(stream.Context())
		mu.Lock()
		calls = append(calls, shadowCall{method: method, tenant: md.Get("x-tenant"), requestID: md.Get(config.RequestIDHeader)})
		mu.Unlock()
		var req []byte
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		return stream.SendMsg(req)
	}))
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), func() []shadowCall {
		mu.Lock()
		defer mu.Unlock()
		return append([]shadowCall(nil), calls...)
	}
}

// A proxyless gRPC call (grpc-go's ext_proc filter: headers in value, not
// raw_value; no pseudo-headers, the method path as a request attribute;
// messages unframed) is sampled by the server for a compare shadow and
// replayed to it on the method path, with the call's own headers and a
// request id of its own (the call has none; never another header's
// value).
func TestObserveProxylessCallIsReplayed(t *testing.T) {
	addr, calls := startRecordingShadow(t)
	h := startObserve(t, addr)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(),
		config.ClientMetadataKey, "grpc", config.EndpointMetadataKey, "m", config.ServedVariantMetadataKey, "a"), 10*time.Second)
	defer cancel()
	stream, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := structpb.NewStruct(map[string]any{"request.path": "/pkg.Svc/Predict", "request.host": "gw"})
	if err != nil {
		t.Fatal(err)
	}
	value := func(kv ...string) *extprocv3.HttpHeaders {
		hm := &corev3.HeaderMap{}
		for i := 0; i+1 < len(kv); i += 2 {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], Value: kv[i+1]})
		}
		return &extprocv3.HttpHeaders{Headers: hm}
	}
	msgs := []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: value("content-type", "application/grpc", "x-user-id", "u1", "x-tenant", "t1")},
			Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": attrs}},
		body(false, []byte("q"), false),
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: value("content-type", "application/grpc")}},
		body(true, []byte("q"), false),
	}
	for _, m := range msgs {
		m.ObservabilityMode = true
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	_ = stream.CloseSend()
	_, _ = stream.Recv()
	st := waitShadowStats(t, h.shadows, func(s shadow.Stats) bool { return s.Compared+s.Dropped+s.Errors >= 1 })
	if st.Compared != 1 || st.Agreed != 1 || st.Dropped != 0 || st.Errors != 0 {
		t.Fatalf("shadow stats %+v, want one call compared and agreed", st)
	}
	got := calls()
	if len(got) != 1 {
		t.Fatalf("shadow got %d calls, want 1", len(got))
	}
	c := got[0]
	if c.method != "/pkg.Svc/Predict" {
		t.Errorf("replayed on %q, want /pkg.Svc/Predict (the request.path attribute)", c.method)
	}
	if len(c.tenant) != 1 || c.tenant[0] != "t1" {
		t.Errorf("replayed x-tenant %q, want [t1]", c.tenant)
	}
	if len(c.requestID) != 1 || c.requestID[0] == "" || c.requestID[0] == "t1" || c.requestID[0] == "u1" {
		t.Errorf("replayed x-request-id %q, want one new id", c.requestID)
	}
}
