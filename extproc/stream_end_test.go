package extproc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc"
	"github.com/modelsplit/modelsplit/extproc/extproctest"
)

func streamCount(h *harness, result string) float64 {
	return testutil.ToFloat64(h.metrics.ExtProcStreams.WithLabelValues("envoy", result))
}

func requestHeaders() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{}}}
}

// Envoy ends a stream by half-closing it: the server ends it cleanly (the
// client reads io.EOF) and counts it ok.
func TestHalfClosedStreamEndsClean(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), config.EndpointMetadataKey, "face"), 5*time.Second)
	defer cancel()
	stream, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(requestHeaders()); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after a half-close the stream ended with %v, want io.EOF", err)
	}
	waitCounter(t, func() float64 { return streamCount(h, "ok") }, 1)
	if n := streamCount(h, "error"); n != 0 {
		t.Fatalf("a half-closed stream counted as an error (%v)", n)
	}
}

// A client whose deadline runs out mid-stream went away: a clean end, not
// an error.
func TestClientDeadlineIsClean(t *testing.T) {
	h := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), config.EndpointMetadataKey, "face"), 300*time.Millisecond)
	defer cancel()
	stream, err := extprocv3.NewExternalProcessorClient(h.conn).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(requestHeaders()); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	waitCounter(t, func() float64 { return streamCount(h, "ok") }, 1)
	if n := streamCount(h, "error"); n != 0 {
		t.Fatalf("a stream past its deadline counted as an error (%v)", n)
	}
}

// Listen replaces a stale unix socket left by a previous run, and never
// removes a file that is not a socket.
func TestListenReplacesOnlyStaleSockets(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("precondition: stale socket file: %v", err)
	}
	l2, err := extproc.Listen("unix://" + stale)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	l2.Close()

	regular := filepath.Join(dir, "data")
	if err := os.WriteFile(regular, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if l3, err := extproc.Listen("unix://" + regular); err == nil {
		l3.Close()
		t.Fatal("listened over a regular file")
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep me" {
		t.Fatalf("regular file at the socket path: %q %v, want it untouched", b, err)
	}
}

// Without compare capture (no shadow manager), the decision marks the
// user-sampled mirror shadows only: a compare-mode shadow's mark would
// select a body-streaming route for nothing.
func TestMarksMirrorShadowsWithoutCompareCapture(t *testing.T) {
	cfg, err := config.Parse("m.yaml", []byte(`
endpoints:
  - name: face
    match: {path_prefix: /face}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
    shadows:
      - {name: mirror, percent: 100, backends: ["10.0.0.2:80"]}
      - {name: cmp, percent: 100, backends: ["10.0.0.3:80"], compare: {}}
`))
	if err != nil {
		t.Fatal(err)
	}
	engine := cohort.NewEngine(cohort.NewMemoryStore(100), cohort.Options{})
	engine.SetConfig(cfg)
	t.Cleanup(func() { engine.Close() })
	lis, err := extproc.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	extproc.NewServer(engine, extproc.Options{}).Register(g) // the engine samples; no shadow manager
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	res, err := extproctest.Do(context.Background(), conn, extproctest.Request{
		Metadata: envoyMD("face"),
		Headers:  []extproctest.Header{extproctest.H(":path", "/face/x"), extproctest.H("x-user-id", "u1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := extproctest.Get(res.RequestHeaders, config.ShadowHeaderFor("mirror")); !ok || v != "face/mirror" {
		t.Errorf("mirror shadow mark %q (%v), want face/mirror", v, ok)
	}
	if v, ok := extproctest.Get(res.RequestHeaders, config.ShadowHeaderFor("cmp")); ok {
		t.Errorf("compare shadow marked (%q) without compare capture", v)
	}
}
