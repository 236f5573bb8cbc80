// Package test holds end-to-end tests across processes: `modelsplit serve`
// as a real subprocess, real gRPC backends, real grpc-go xDS clients (and
// Envoy when ENVOY_BIN is set).
package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// Environment shared by the re-executed test process.
const (
	envChild   = "MODELSPLIT_E2E_CHILD"
	envXDSPort = "MODELSPLIT_E2E_XDS_PORT"
	envBinary  = "MODELSPLIT_E2E_BINARY"
)

// TestMain re-executes the test binary once with the environment grpc-go
// reads only at package init: the ext_proc flag and the xDS bootstrap (so the
// default xDS client pool — the one CSDS reports on — talks to our server).
func TestMain(m *testing.M) {
	if d := os.Getenv(envSlowServer); d != "" {
		os.Exit(serveSlow(d))
	}
	if os.Getenv(envChild) == "1" {
		os.Exit(m.Run())
	}
	os.Exit(reexec())
}

func reexec() int {
	dir, err := os.MkdirTemp("", "modelsplit-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "modelsplit")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	build := exec.Command("go", "build", "-o", bin, "github.com/modelsplit/modelsplit/cmd/modelsplit")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building modelsplit:", err)
		return 1
	}
	port, err := freePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	bootstrap := fmt.Sprintf(`{"xds_servers":[{"server_uri":"passthrough:///127.0.0.1:%d","channel_creds":[{"type":"insecure"}],"server_features":["trusted_xds_server"]}],"node":{"id":"e2e-grpc-client","user_agent_name":"gRPC Go"}}`, port)
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Stdout, cmd.Stderr, cmd.Stdin = os.Stdout, os.Stderr, os.Stdin
	cmd.Env = append(os.Environ(),
		envChild+"=1",
		envBinary+"="+bin,
		fmt.Sprintf("%s=%d", envXDSPort, port),
		"GRPC_EXPERIMENTAL_XDS_EXT_PROC_ON_CLIENT=true",
		"GRPC_XDS_BOOTSTRAP_CONFIG="+bootstrap,
	)
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "e2e: re-exec:", err)
		return 1
	}
	return 0
}

// freePort asks the kernel for a free loopback port. The port is released
// before use, so a rare clash is possible; tests that restart the server need
// a fixed port, which :0 cannot give.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
