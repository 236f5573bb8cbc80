package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

// envSlowServer makes the test binary a model server of its own that
// answers "a" after the given delay (serveSlow), so a benchmark's slow
// shadow runs in another process than its load generator, as a shadow
// model server would: its goroutines, timers and garbage then do not
// share the generator's scheduler.
const envSlowServer = "MODELSPLIT_E2E_SLOW_SERVER"

// serveSlow listens on a free loopback port, prints the address and
// serves until stdin closes.
func serveSlow(delay string) int {
	d, err := time.ParseDuration(delay)
	if err != nil {
		fmt.Fprintln(os.Stderr, "slow server:", err)
		return 2
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "slow server:", err)
		return 1
	}
	srv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
		_, _ = w.Write([]byte("a"))
	}), &http2.Server{})}
	go srv.Serve(lis)
	fmt.Println(lis.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin) // the parent's end closes when it exits
	return 0
}

// startSlowServerProcess runs serveSlow in a child process and returns its
// address and process id. A niceness above 0 runs it at that lower CPU
// priority (through nice(1), so every thread of it has it).
func startSlowServerProcess(t testing.TB, delay time.Duration, niceness int) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if niceness > 0 {
		cmd = exec.Command("nice", "-n", strconv.Itoa(niceness), os.Args[0], "-test.run=^$")
	}
	cmd.Env = append(os.Environ(), envSlowServer+"="+delay.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("slow server process: %v", err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid
}
