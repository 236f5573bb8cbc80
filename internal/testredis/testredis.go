// Package testredis starts throwaway redis-server processes for tests, on
// free loopback ports, so tests can also kill, pause and restart them.
package testredis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Server is one redis-server process owned by a test.
type Server struct {
	t          testing.TB
	port       int
	dir        string
	persistent bool
	cluster    bool
	monitor    string   // sentinel mode: "<name> <host> <port>" of the watched master
	without    []string // commands disabled (rename-command NAME "")
	cmd        *exec.Cmd
	exited     chan struct{} // closed when cmd has exited
}

// Option changes how the server is started.
type Option func(*Server)

// Persistent keeps data across Kill/Restart with an fsync'd append-only
// file, as a production Redis with persistence would. Without it (the
// default: --save "" --appendonly no) a Kill loses every key.
func Persistent() Option { return func(s *Server) { s.persistent = true } }

// Cluster starts the server in cluster mode; AddSlots then makes it a
// one-node cluster owning every slot.
func Cluster() Option { return func(s *Server) { s.cluster = true } }

// Without disables the named commands (rename-command NAME ""): the server
// answers them "ERR unknown command", as a Redis too old to know them does
// (GETEX before 6.2, for instance).
func Without(commands ...string) Option {
	return func(s *Server) { s.without = append(s.without, commands...) }
}

// Start launches redis-server on a free loopback port and stops it when
// the test ends. Without redis-server the test is skipped, except in CI
// (CI=true), where that is a failure.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not found on PATH (CI=true): %v; install it (Debian/Ubuntu: apt-get install redis-server)", err)
		}
		t.Skip("redis-server not found on PATH; install it (Debian/Ubuntu: apt-get install redis-server) to run this test")
	}
	s := &Server{t: t, dir: t.TempDir()}
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(s.Kill)
	// The free port is found by binding and closing it, so another process
	// may take it before redis-server binds: try a few ports.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if s.port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if err = s.start(); err == nil {
			return s
		}
	}
	t.Fatalf("testredis: %v", err)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) args() []string {
	if s.monitor != "" {
		return s.sentinelArgs()
	}
	a := []string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--daemonize", "no", "--loglevel", "warning", "--logfile", filepath.Join(s.dir, "redis.log")}
	if s.persistent {
		a = append(a, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		a = append(a, "--appendonly", "no")
	}
	for _, c := range s.without {
		a = append(a, "--rename-command", c, "")
	}
	if s.cluster {
		a = append(a, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"))
	}
	return a
}

// StartSentinel launches a Redis Sentinel on a free port that watches
// master under the name masterName (quorum 1), for go-redis failover
// clients. It is stopped when the test ends.
func StartSentinel(t testing.TB, master *Server, masterName string) *Server {
	t.Helper()
	return Start(t, func(s *Server) { s.monitor = masterName + " 127.0.0.1 " + strconv.Itoa(master.port) })
}

// sentinelArgs writes the config file Sentinel insists on (it rewrites it
// with what it learns) and starts redis-server in sentinel mode.
func (s *Server) sentinelArgs() []string {
	conf := filepath.Join(s.dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\nsentinel monitor %s 1\n",
		s.port, s.dir, filepath.Join(s.dir, "redis.log"), s.monitor)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		s.t.Fatalf("testredis: write sentinel config: %v", err)
	}
	return []string{conf, "--sentinel"}
}

func (s *Server) start() error {
	cmd := exec.Command("redis-server", s.args()...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.port, s.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		up := s.Ping(ctx)
		cancel()
		if up && s.cluster {
			return s.claimAllSlots()
		}
		if up {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Kill()
	return fmt.Errorf("redis-server on %s did not answer PING within 5s: %s", s.Addr(), s.logTail())
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], " | ")
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is a redis:// URL for go-redis.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Kill stops the server at once (SIGKILL), as a crash would. It is safe to
// call on a stopped server.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sigCont) // a paused process must run to die cleanly
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Pause stops the process (SIGSTOP) without closing its socket: clients
// see a server that hangs rather than one that refuses connections.
func (s *Server) Pause() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sigStop)
	}
}

// Resume continues a paused server.
func (s *Server) Resume() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sigCont)
	}
}

// Restart starts the server again on the same port (killing it first if it
// runs). Data survives only with Persistent.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	// The port may linger briefly after the kill; retry for a moment.
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("testredis: restart on port %d: %v", s.port, err)
}

// Ping reports whether the server answers PING.
func (s *Server) Ping(ctx context.Context) bool {
	reply, err := s.Do(ctx, "PING")
	return err == nil && reply == "+PONG"
}

// claimAllSlots makes a cluster-mode server a one-node cluster and waits
// until it reports cluster_state:ok. After a restart the node keeps its
// slots (nodes.conf), so "already busy" is expected and ignored.
func (s *Server) claimAllSlots() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if reply, err := s.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383"); err != nil || (reply != "+OK" && !strings.Contains(reply, "busy")) {
		return fmt.Errorf("CLUSTER ADDSLOTSRANGE: %q %v", reply, err)
	}
	for ctx.Err() == nil {
		if info, err := s.Do(ctx, "CLUSTER", "INFO"); err == nil && strings.Contains(info, "cluster_state:ok") {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("cluster on %s not ok within 10s", s.Addr())
}

// Do sends one command (inline protocol) and returns the reply: the first
// line of a simple reply ("+OK", ":1", "-ERR ..."), or the raw rest of a
// bulk or array reply (as much as one read returns). Enough for setup commands without a client library.
func (s *Server) Do(ctx context.Context, args ...string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	}
	if _, err := c.Write([]byte(strings.Join(args, " ") + "\r\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if n == 0 {
		return "", err
	}
	line, rest, _ := strings.Cut(string(buf[:n]), "\r\n")
	if (strings.HasPrefix(line, "$") || strings.HasPrefix(line, "*")) && line != "$-1" && line != "*-1" { // -1: nil
		return rest, nil
	}
	return line, nil
}
