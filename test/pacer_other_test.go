//go:build !linux

package test

import "time"

// sleepPacer is the portable fallback: time.Sleep, which on most systems
// oversleeps sub-millisecond intervals (the lag column shows it).
type sleepPacer struct {
	start    time.Time
	interval time.Duration
	next     int
}

func newPacer(interval time.Duration) (pacer, error) {
	return &sleepPacer{start: time.Now(), interval: interval}, nil
}

func (p *sleepPacer) Start() time.Time { return p.start }

func (p *sleepPacer) Wait() (int, error) {
	time.Sleep(time.Until(p.start.Add(time.Duration(p.next+1) * p.interval)))
	due := int(time.Since(p.start) / p.interval)
	n := due - p.next
	if n < 1 {
		n = 1
	}
	p.next += n
	return n, nil
}

func (p *sleepPacer) Close() error { return nil }
