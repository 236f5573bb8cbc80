package extproc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
)

const fuzzConfig = `
user_lists: {vip: [alice]}
endpoints:
  - name: face
    match: {path_prefix: /face}
    sticky: {cookie: uid, mint_cookie: true}
    allow_target: true
    variants:
      - {name: a, weight: 3, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 1, backends: ["10.0.0.2:80"]}
    rules:
      - {header: x-region, prefix: e, variant: b}
      - {user_list: vip, variant: a}
`

// FuzzRequestHeaders drives the per-stream message handling with arbitrary
// headers, metadata and message sequences (encoded as a kind byte each).
// Every message gets exactly one well-formed reply, none (observability
// mode), or a clean malformed error — never a panic.
func FuzzRequestHeaders(f *testing.F) {
	cfg, err := config.Parse("fuzz.yaml", []byte(fuzzConfig))
	if err != nil {
		f.Fatal(err)
	}
	m := metrics.New()
	engine := cohort.NewEngine(cohort.NewMemoryStore(1000), cohort.Options{Metrics: m})
	engine.SetConfig(cfg)
	srv := NewServer(engine, Options{Metrics: m})

	f.Add("face", "envoy", "cookie", "uid=alice", "x-region", "eu", []byte{0, 1})
	f.Add("face", "grpc", "x-modelsplit-target", "b", "", "", []byte{0})
	f.Add("", "", ":path", "/x", "cookie", "", []byte{1, 0, 0})
	f.Add("face", "envoy", "cookie", ";;=;uid", "x-region", "\x00\xff", []byte{0, 2, 3, 4, 5, 6, 7})
	f.Fuzz(func(t *testing.T, endpoint, client, k1, v1, k2, v2 string, kinds []byte) {
		st := streamState{server: srv, ctx: context.Background(), endpoint: endpoint}
		if client == "grpc" {
			st.client = clientGRPC
		}
		hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: k1, RawValue: []byte(v1)}, {Key: k2, Value: v2},
		}}
		for i, k := range kinds {
			if i > 16 {
				break
			}
			req := &extprocv3.ProcessingRequest{ObservabilityMode: k&0x80 != 0}
			switch k & 0x7 {
			case 0:
				req.Request = &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}}
			case 1:
				req.Request = &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: hm}}
			case 2:
				req.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(v1)}}
			case 3:
				req.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{}}
			case 4:
				req.Request = &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}
			case 5:
				req.Request = &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}
			default: // no request at all
			}
			resp, err := st.handle(req)
			if err != nil {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return // the stream ends here
			}
			if req.ObservabilityMode {
				if resp != nil {
					t.Fatalf("replied in observability mode: %v", resp)
				}
				continue
			}
			if resp == nil || resp.GetResponse() == nil {
				t.Fatalf("message %d (%T) got no reply", i, req.GetRequest())
			}
			checkReply(t, req, resp, st.client)
		}
	})
}

func checkReply(t *testing.T, req *extprocv3.ProcessingRequest, resp *extprocv3.ProcessingResponse, client clientKind) {
	t.Helper()
	// The reply must be for the same phase, as Envoy requires.
	if got, want := phase(resp.GetResponse()), phase(req.GetRequest()); got != want {
		t.Fatalf("reply for phase %s to a %s message", got, want)
	}
	if _, err := proto.Marshal(resp); err != nil {
		t.Fatalf("reply does not marshal: %v", err)
	}
	var common *extprocv3.CommonResponse
	switch r := resp.GetResponse().(type) {
	case *extprocv3.ProcessingResponse_RequestHeaders:
		common = r.RequestHeaders.GetResponse()
	case *extprocv3.ProcessingResponse_ResponseHeaders:
		common = r.ResponseHeaders.GetResponse()
	}
	for _, o := range common.GetHeaderMutation().GetSetHeaders() {
		h := o.GetHeader()
		if h.GetValue() != "" && len(h.GetRawValue()) > 0 {
			t.Fatalf("mutation sets both value and raw_value (Envoy rejects it): %v", h)
		}
		if client == clientGRPC && len(h.GetRawValue()) > 0 || client == clientEnvoy && h.GetValue() != "" {
			t.Fatalf("mutation uses the wrong field for client %s: %v", client, h)
		}
		if h.GetKey() != config.VariantHeader && h.GetKey() != "set-cookie" {
			t.Fatalf("mutation of a header we never set: %q", h.GetKey())
		}
	}
	if common.GetClearRouteCache() && common.GetHeaderMutation() == nil {
		t.Fatal("route cache cleared without a header mutation")
	}
}

// phase is the oneof case name, e.g. "RequestHeaders", of a request or
// a response.
func phase(v any) string {
	name := fmt.Sprintf("%T", v)
	return name[strings.LastIndex(name, "_")+1:]
}
