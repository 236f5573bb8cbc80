package testredis

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// SlowProxy is a TCP proxy in front of a Redis that holds back a share of
// the replies: each chunk Redis sends is delayed, with probability
// Fraction, by Delay before the client gets it (later chunks of that
// connection wait behind it, as on a real slow link). Requests pass at
// once. It stands for a Redis that is slow, not dead: a loaded machine,
// a saturated network.
type SlowProxy struct {
	lis      net.Listener
	target   string
	fraction atomic.Uint64 // share delayed, per million
	delay    atomic.Int64  // nanoseconds
	delayed  atomic.Int64
	replies  atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartSlowProxy listens on a free loopback port and forwards to target
// (host:port), delaying fraction (0-1) of the replies by delay. It is
// stopped when the test ends.
func StartSlowProxy(t testing.TB, target string, fraction float64, delay time.Duration) *SlowProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &SlowProxy{lis: lis, target: target, conns: map[net.Conn]struct{}{}}
	p.Set(fraction, delay)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Set changes the share of replies delayed and the delay.
func (p *SlowProxy) Set(fraction float64, delay time.Duration) {
	p.fraction.Store(uint64(fraction * 1e6))
	p.delay.Store(int64(delay))
}

// Addr is the proxy's host:port.
func (p *SlowProxy) Addr() string { return p.lis.Addr().String() }

// URL is a redis:// URL through the proxy.
func (p *SlowProxy) URL() string { return "redis://" + p.Addr() + "/0" }

// Counts returns how many reply chunks were forwarded and how many of
// them were delayed.
func (p *SlowProxy) Counts() (replies, delayed int64) { return p.replies.Load(), p.delayed.Load() }

// Close stops accepting and closes every proxied connection.
func (p *SlowProxy) Close() {
	p.lis.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *SlowProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *SlowProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.lis.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.track(client, true)
		p.track(server, true)
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(server, client)
			server.Close()
			client.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.forwardReplies(client, server)
			server.Close()
			client.Close()
			p.track(client, false)
			p.track(server, false)
		}()
	}
}

// forwardReplies copies server → client, delaying a share of the chunks.
func (p *SlowProxy) forwardReplies(client, server net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			p.replies.Add(1)
			if rand.Uint64N(1e6) < p.fraction.Load() {
				p.delayed.Add(1)
				time.Sleep(time.Duration(p.delay.Load()))
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
