package cohort

import (
	"testing"
	"time"
)

// healthRun records reads on a fresh readHealth and returns, for each
// read, whether it reported Redis down. Reads are given as "ok" or "fail"
// with the instant (offset from a fixed base) each happens at.
type healthRead struct {
	at     time.Duration
	failed bool
}

func reads(at time.Duration, n int, failed bool) []healthRead {
	out := make([]healthRead, n)
	for i := range out {
		out[i] = healthRead{at, failed}
	}
	return out
}

// firstDown is the 1-based index of the first read that reported Redis
// down, or 0 if none did.
func firstDown(h *readHealth, rs ...[]healthRead) int {
	base := time.Unix(1_700_000_000, 0)
	i := 0
	for _, group := range rs {
		for _, r := range group {
			i++
			if h.record(base.Add(r.at), r.failed) {
				return i
			}
		}
	}
	return 0
}

// The rule of readHealth.record, read by read: down after 5 failures in a
// row once the last second holds at least 10 reads of which half or more
// failed, or after 20 in a row whatever the rate; reads older than the
// window (1s) no longer count.
func TestReadHealthRule(t *testing.T) {
	cases := []struct {
		name  string
		reads [][]healthRead
		want  int // 1-based read that marks Redis down; 0 none
	}{
		// Ten failures are the window's minimum: not the ninth.
		{"ten failures, none answered", [][]healthRead{reads(0, 12, true)}, 10},
		// Five in a row reach half of ten reads exactly: down at once.
		{"5 ok then 5 failures: half", [][]healthRead{reads(0, 5, false), reads(0, 6, true)}, 10},
		// 5 of 11 is under half; the sixth failure makes 6 of 12.
		{"6 ok then failures: under half until the sixth", [][]healthRead{reads(0, 6, false), reads(0, 7, true)}, 12},
		// Four failures in a row are not enough, however the window looks.
		{"four in a row, twice", [][]healthRead{reads(0, 4, true), reads(0, 1, false), reads(0, 4, true)}, 0},
		// 30 answered reads keep the rate under half until 30 failures, but
		// 20 in a row are down regardless.
		{"20 in a row whatever the rate", [][]healthRead{reads(0, 30, false), reads(0, 25, true)}, 50},
		// Answered reads 1.5s ago have left the window: the failures are
		// all it holds, and the tenth marks Redis down.
		{"old answers forgotten", [][]healthRead{reads(0, 30, false), reads(1500*time.Millisecond, 12, true)}, 40},
		// The same answers 0.5s ago still count: 30 ok against 19 failures.
		{"recent answers kept", [][]healthRead{reads(0, 30, false), reads(500*time.Millisecond, 19, true)}, 0},
		// Failures spread over the window (one bucket each, 100ms apart)
		// all count.
		{"failures over the window", [][]healthRead{
			reads(0, 1, true), reads(100*time.Millisecond, 1, true), reads(200*time.Millisecond, 1, true),
			reads(300*time.Millisecond, 1, true), reads(400*time.Millisecond, 1, true), reads(500*time.Millisecond, 1, true),
			reads(600*time.Millisecond, 1, true), reads(700*time.Millisecond, 1, true), reads(800*time.Millisecond, 1, true),
			reads(900*time.Millisecond, 3, true),
		}, 10},
	}
	for _, c := range cases {
		var h readHealth
		if got := firstDown(&h, c.reads...); got != c.want {
			t.Errorf("%s: down at read %d, want %d (0: never)", c.name, got, c.want)
		}
	}
	// reset forgets everything: the run and the window.
	var h readHealth
	if got := firstDown(&h, reads(0, 9, true)); got != 0 {
		t.Fatalf("9 failures: down at read %d", got)
	}
	h.reset()
	if got := firstDown(&h, reads(0, 9, true)); got != 0 {
		t.Errorf("9 failures after reset: down at read %d; reset kept the earlier ones", got)
	}
}

// A down Redis counts as up again once 3 of the last 5 probes answered in
// time, in a row or not; answers older than 5 probes no longer count.
func TestProbeWindow(t *testing.T) {
	cases := []struct {
		answered string // one probe per character: y answered in time, n not
		want     string // after each probe: + enough answered, . not
	}{
		{"yyy", "..+"},
		{"ynyny", "....+"},
		{"yyyny", "..+++"},
		{"yyynnn", "..+++."},
		{"yynnnyy", "......."},
		{"nnnnnyyyn", ".......++"},
	}
	for _, c := range cases {
		var p probes
		got := ""
		for _, a := range c.answered {
			if p.add(a == 'y') {
				got += "+"
			} else {
				got += "."
			}
		}
		if got != c.want {
			t.Errorf("probes %s: %s, want %s", c.answered, got, c.want)
		}
	}
}
