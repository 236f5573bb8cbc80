// Package extproctest is an ext_proc client that behaves as Envoy's ext_proc
// filter does (docs/envoy-notes.md §1.1–§1.4), for tests where no Envoy binary
// can run: one stream per HTTP request, headers sent as raw_value, exactly one
// response expected per message, mutations applied with Envoy's rules, the
// route cache cleared only when the same response carried a header mutation.
// Observe does the same for the observe filter in observability mode.
package extproctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Header is one HTTP header; order and repeats are kept as Envoy keeps them.
type Header struct{ Key, Value string }

// Request is one HTTP request as the ext_proc filter sees it.
type Request struct {
	// Metadata is the gRPC initial metadata of the filter's grpc_service
	// (merged with the route's ExtProcPerRoute grpc_initial_metadata).
	Metadata map[string]string
	Headers  []Header
	// ResponseHeaders are the upstream's response headers, sent only if the
	// server asks for the response phase with mode_override.
	ResponseHeaders []Header
}

// Result is what Envoy would do with the server's answers.
type Result struct {
	RequestHeaders    []Header // after mutations
	RouteCacheCleared bool
	// ResponsePhase reports whether mode_override asked for the response
	// headers; ResponseHeaders then holds them after mutations.
	ResponsePhase   bool
	ResponseHeaders []Header
	// Ignored lists mutations Envoy would drop (protected headers).
	Ignored []string
}

// Get returns the first value of a header in hs.
func Get(hs []Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == key {
			return h.Value, true
		}
	}
	return "", false
}

// Do runs one request through the ext_proc server on conn, as Envoy would:
// open a stream, send request_headers, apply the answer, optionally run the
// response phase, then close the stream.
func Do(ctx context.Context, conn grpc.ClientConnInterface, req Request) (Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // Envoy resets the stream when the request ends
	if len(req.Metadata) > 0 {
		pairs := make([]string, 0, 2*len(req.Metadata))
		for k, v := range req.Metadata {
			pairs = append(pairs, k, v)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, pairs...)
	}
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		return Result{}, err
	}
	res := Result{RequestHeaders: append([]Header(nil), req.Headers...)}

	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(req.Headers), EndOfStream: true},
	}}); err != nil {
		return res, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return res, fmt.Errorf("request_headers: %w", err)
	}
	hr, ok := resp.GetResponse().(*extprocv3.ProcessingResponse_RequestHeaders)
	if !ok {
		// Envoy treats any other reply as spurious and fails the request
		// (or continues, with failure_mode_allow). Tests want to know.
		return res, fmt.Errorf("spurious reply %T to request_headers", resp.GetResponse())
	}
	common := hr.RequestHeaders.GetResponse()
	if m := common.GetHeaderMutation(); m != nil {
		if res.RequestHeaders, err = apply(res.RequestHeaders, m, &res.Ignored); err != nil {
			return res, err
		}
		// Envoy clears the route cache only when this same response carried
		// a header mutation (processor_state.cc clearRouteCache).
		res.RouteCacheCleared = common.GetClearRouteCache()
	}
	if mo := resp.GetModeOverride(); mo != nil && mo.GetResponseHeaderMode() == filterpb.ProcessingMode_SEND {
		res.ResponsePhase = true
		res.ResponseHeaders = append([]Header(nil), req.ResponseHeaders...)
		if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(req.ResponseHeaders), EndOfStream: true},
		}}); err != nil {
			return res, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return res, fmt.Errorf("response_headers: %w", err)
		}
		rh, ok := resp.GetResponse().(*extprocv3.ProcessingResponse_ResponseHeaders)
		if !ok {
			return res, fmt.Errorf("spurious reply %T to response_headers", resp.GetResponse())
		}
		if m := rh.ResponseHeaders.GetResponse().GetHeaderMutation(); m != nil {
			if res.ResponseHeaders, err = apply(res.ResponseHeaders, m, &res.Ignored); err != nil {
				return res, err
			}
		}
	}
	_ = stream.CloseSend()
	return res, nil
}

func headerMap(hs []Header) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, h := range hs {
		// Modern Envoy sends raw_value only (runtime guard send_header_raw_value).
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: h.Key, RawValue: []byte(h.Value)})
	}
	return m
}

// protected reports headers Envoy's ext_proc never lets a server change
// (without explicit mutation_rules).
func protected(key string) bool {
	switch key {
	case "host", ":authority", ":scheme", ":method":
		return true
	}
	return strings.HasPrefix(key, "x-envoy-")
}

// ErrBothValues is Envoy's rejection of a HeaderValue that sets both value
// and raw_value (mutation_utils.cc applyHeaderMutations).
var ErrBothValues = errors.New("header mutation sets both value and raw_value")

func apply(hs []Header, m *extprocv3.HeaderMutation, ignored *[]string) ([]Header, error) {
	for _, key := range m.GetRemoveHeaders() {
		if protected(key) {
			*ignored = append(*ignored, "remove "+key)
			continue
		}
		hs = remove(hs, key)
	}
	for _, o := range m.GetSetHeaders() {
		h := o.GetHeader()
		key := strings.ToLower(h.GetKey())
		if h.GetValue() != "" && len(h.GetRawValue()) > 0 {
			return hs, fmt.Errorf("%w: %q", ErrBothValues, key)
		}
		if protected(key) {
			*ignored = append(*ignored, "set "+key)
			continue
		}
		// Envoy reads raw_value; a value-only mutation arrives empty.
		val := string(h.GetRawValue())
		action := o.GetAppendAction()
		switch {
		case o.GetAppend() != nil: // the deprecated wrapped bool is explicit
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			if o.GetAppend().GetValue() {
				action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
		case action == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			// Zero append_action with append unset: Envoy's ext_proc
			// overwrites (grpc-go appends) — docs/envoy-notes.md §1.4. A server
			// that means to append must say append: true.
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		}
		_, exists := Get(hs, key)
		switch action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			hs = append(hs, Header{key, val})
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				hs = append(hs, Header{key, val})
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			hs = append(remove(hs, key), Header{key, val})
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				hs = append(remove(hs, key), Header{key, val})
			}
		}
	}
	return hs, nil
}

func remove(hs []Header, key string) []Header {
	out := hs[:0:0]
	for _, h := range hs {
		if h.Key != key {
			out = append(out, h)
		}
	}
	return out
}

// H builds a Header.
func H(key, value string) Header { return Header{Key: key, Value: value} }

// Exchange is one request and its answer as Envoy's observe filter (an
// ext_proc filter in observability mode) sees them.
type Exchange struct {
	// Metadata is the filter's grpc_service initial metadata merged with
	// the route's ExtProcPerRoute grpc_initial_metadata.
	Metadata map[string]string
	Headers  []Header // request headers
	// RequestBody are the request's data frames.
	RequestBody [][]byte
	// ResponseHeaders are the answer's headers (with :status); nil when no
	// answer came (the client went away first).
	ResponseHeaders []Header
	// ResponseBody are the answer's data frames.
	ResponseBody [][]byte
	// ResponseTrailers end the answer when not nil (gRPC puts its status
	// there); nil when the answer ends with its headers or last frame.
	ResponseTrailers []Header
	// Reset: the upstream reset the stream after the response headers, so
	// neither body nor trailers follow them.
	Reset bool
	// Mode is the processing mode in force (the filter's, or the route's
	// override); nil is Envoy's default: headers SEND, bodies NONE,
	// trailers SKIP.
	Mode *filterpb.ProcessingMode
	// BeforeClose, when set, runs after the last message was sent and
	// before the stream is closed: a test can look at what the server
	// did while the stream is still open (Envoy keeps it open for
	// deferred_close_timeout after the request).
	BeforeClose func()
}

// ErrReplied is a server answering in observability mode, where Envoy
// expects and reads nothing.
var ErrReplied = errors.New("server replied to an observability-mode message")

// Observe sends x over a new stream as Envoy's ext_proc filter does in
// observability mode: every message marked observability_mode, none
// waiting for a reply, only the phases Mode sends (bodies in STREAMED
// mode only, trailers only when the answer has some: Envoy 1.40 adds no
// empty trailers in observability mode), end_of_stream where the HTTP
// stream ends. It then closes the stream, as Envoy does after
// deferred_close_timeout, and waits until the server has ended it, so
// what the server counts is in place when Observe returns.
func Observe(ctx context.Context, conn grpc.ClientConnInterface, x Exchange) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if len(x.Metadata) > 0 {
		pairs := make([]string, 0, 2*len(x.Metadata))
		for k, v := range x.Metadata {
			pairs = append(pairs, k, v)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, pairs...)
	}
	mode := x.Mode
	if mode == nil {
		mode = &filterpb.ProcessingMode{}
	}
	stream, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		return err
	}
	send := func(req *extprocv3.ProcessingRequest) error {
		req.ObservabilityMode = true
		return stream.Send(req)
	}
	var msgs []*extprocv3.ProcessingRequest
	if mode.GetRequestHeaderMode() != filterpb.ProcessingMode_SKIP {
		msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{Headers: headerMap(x.Headers), EndOfStream: len(x.RequestBody) == 0},
		}})
	}
	if mode.GetRequestBodyMode() == filterpb.ProcessingMode_STREAMED {
		for i, b := range x.RequestBody {
			msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
				RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: i == len(x.RequestBody)-1},
			}})
		}
	}
	if x.ResponseHeaders != nil {
		body, trailers := x.ResponseBody, x.ResponseTrailers
		if x.Reset {
			body, trailers = nil, nil
		}
		if mode.GetResponseHeaderMode() != filterpb.ProcessingMode_SKIP {
			msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{
				ResponseHeaders: &extprocv3.HttpHeaders{Headers: headerMap(x.ResponseHeaders),
					EndOfStream: !x.Reset && len(body) == 0 && trailers == nil},
			}})
		}
		if mode.GetResponseBodyMode() == filterpb.ProcessingMode_STREAMED {
			for i, b := range body {
				msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
					ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: i == len(body)-1 && trailers == nil},
				}})
			}
		}
		if trailers != nil && mode.GetResponseTrailerMode() == filterpb.ProcessingMode_SEND {
			msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{
				ResponseTrailers: &extprocv3.HttpTrailers{Trailers: headerMap(trailers)},
			}})
		}
	}
	for _, m := range msgs {
		if err := send(m); err != nil {
			return err
		}
	}
	if x.BeforeClose != nil {
		x.BeforeClose()
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	resp, err := stream.Recv()
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%w: %v", ErrReplied, resp)
}
