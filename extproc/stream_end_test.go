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
	"google.golang.org/grpc/metadata"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc"
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
