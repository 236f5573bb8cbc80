package stats

import (
	"testing"
	"time"
)

// A closed window is handed to the publisher only once it has been
// closed for a whole window length (late adds have landed by then), not
// as it closes.
func TestWindowsPublishedAWindowAfterClosing(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 1, 0, time.UTC)
	r := New(Options{Now: func() time.Time { return now }})
	r.Variant("ep", "a").Request(Class2xx, time.Millisecond)
	now = now.Add(9 * time.Second) // 10:00:10, the boundary
	r.Rotate()
	ep := r.lookup("ep")
	if len(ep.closed) != 1 || ep.closed[0].published {
		t.Fatalf("%d closed windows, published %v: want one, not yet published", len(ep.closed), len(ep.closed) == 1 && ep.closed[0].published)
	}
	now = now.Add(DefaultWindow - time.Nanosecond)
	r.Rotate()
	if ep.closed[0].published {
		t.Fatal("published before it had been closed a whole window length")
	}
	now = now.Add(time.Nanosecond)
	r.Rotate()
	if !ep.closed[0].published {
		t.Fatal("not published a window length after closing")
	}
}
