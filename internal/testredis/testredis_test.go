package testredis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/internal/testredis"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

// Kill stops answering; Restart answers again on the same address, empty
// unless Persistent.
func TestKillRestart(t *testing.T) {
	for _, persistent := range []bool{false, true} {
		var opts []testredis.Option
		if persistent {
			opts = append(opts, testredis.Persistent())
		}
		r := testredis.Start(t, opts...)
		addr := r.Addr()
		if reply, err := r.Do(ctx(t), "SET", "k", "v"); err != nil || reply != "+OK" {
			t.Fatalf("SET: %q %v", reply, err)
		}
		r.Kill()
		if r.Ping(ctx(t)) {
			t.Fatal("killed server still answers")
		}
		r.Restart()
		if r.Addr() != addr || !r.Ping(ctx(t)) {
			t.Fatalf("restarted server at %s (was %s) does not answer", r.Addr(), addr)
		}
		got, err := r.Do(ctx(t), "GET", "k")
		if err != nil {
			t.Fatal(err)
		}
		if kept := got != "$-1"; kept != persistent {
			t.Errorf("persistent=%v: after kill and restart GET k = %q", persistent, got)
		}
	}
}

func TestPauseHangs(t *testing.T) {
	r := testredis.Start(t)
	r.Pause()
	c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if r.Ping(c) {
		t.Fatal("paused server answered")
	}
	r.Resume()
	if !r.Ping(ctx(t)) {
		t.Fatal("resumed server does not answer")
	}
}

func TestCluster(t *testing.T) {
	r := testredis.Start(t, testredis.Cluster())
	info, err := r.Do(ctx(t), "CLUSTER", "INFO")
	if err != nil {
		t.Fatal(err)
	}
	if want := "cluster_slots_assigned:16384"; !strings.Contains(info, want) {
		t.Fatalf("CLUSTER INFO lacks %s: %q", want, info)
	}
}

func TestSentinel(t *testing.T) {
	master := testredis.Start(t)
	s := testredis.StartSentinel(t, master, "mymaster")
	got, err := s.Do(ctx(t), "SENTINEL", "get-master-addr-by-name", "mymaster")
	if err != nil {
		t.Fatal(err)
	}
	if _, port, _ := strings.Cut(master.Addr(), ":"); !strings.Contains(got, port) {
		t.Fatalf("sentinel reports master %q, want port %s", got, port)
	}
}
