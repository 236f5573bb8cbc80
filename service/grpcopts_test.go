package service

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The ext_proc server runs with fixed flow-control windows, so grpc-go
// never probes the bandwidth-delay product: a client that sends a message
// gets its answer and no PING. With probing on (grpc-go's default) every
// round trip on a busy connection carried one more PING and its ACK.
// Checked on the wire, from a raw HTTP/2 client.
func TestExtProcServerSendsNoBDPPings(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      []grpc.ServerOption
		wantPings bool
		window    uint32
	}{
		{"extproc", append(grpcServerOptions(nil), extprocServerOptions()...), false, 1 << 20},
		// The same probe against grpc-go's defaults shows what it detects.
		{"grpc-go defaults", grpcServerOptions(nil), true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			settings, pings := probeServer(t, tc.opts)
			if got := settings[http2.SettingInitialWindowSize]; tc.window != 0 && got != tc.window {
				t.Errorf("initial stream window %d, want %d", got, tc.window)
			}
			if (pings > 0) != tc.wantPings {
				t.Errorf("%d PING frames from the server after one request, want pings: %v", pings, tc.wantPings)
			}
		})
	}
}

// probeServer starts a gRPC server with opts, sends it one health check
// over a raw HTTP/2 connection, reads frames until 300 ms after the answer
// ended, and returns the server's SETTINGS and how many PINGs it sent.
func probeServer(t *testing.T, opts []grpc.ServerOption) (map[http2.SettingID]uint32, int) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(g, health.NewServer())
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.health.v1.Health/Check"},
		{":authority", "probe"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	// An empty HealthCheckRequest: the 5-byte gRPC message prefix alone.
	if err := fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	settings := map[http2.SettingID]uint32{}
	pings := 0
	deadline := time.Now().Add(5 * time.Second)
	answered := false
	for {
		_ = conn.SetReadDeadline(deadline)
		f, err := fr.ReadFrame()
		if err != nil {
			if answered {
				break // the quiet 300 ms after the answer passed
			}
			t.Fatalf("no answer to the health check: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = f.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
				_ = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				pings++
				_ = fr.WritePing(true, f.Data)
			}
		case *http2.HeadersFrame:
			if f.StreamEnded() && !answered {
				answered = true
				deadline = time.Now().Add(300 * time.Millisecond)
			}
		}
	}
	return settings, pings
}
