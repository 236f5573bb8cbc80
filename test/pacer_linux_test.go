//go:build linux

package test

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// timerfdPacer ticks every interval from a periodic timerfd read through
// Go's netpoller. time.Sleep cannot pace sub-millisecond intervals: with
// the netpoller in use, an idle runtime sleeps in epoll_wait, whose
// timeout is whole milliseconds (a 333 µs sleep takes ~1 ms), whereas a
// timerfd wakes epoll within tens of µs of its expiry.
type timerfdPacer struct {
	f     *os.File
	buf   [8]byte
	start time.Time
}

func newPacer(interval time.Duration) (pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	p := &timerfdPacer{f: os.NewFile(uintptr(fd), "pacer-timerfd")}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(interval)), Interval: unix.NsecToTimespec(int64(interval))}
	// Expiry k (from 1) is at start + k*interval, to within the settime
	// call's own duration (a microsecond or two).
	p.start = time.Now()
	if err := unix.TimerfdSettime(fd, 0, &spec, nil); err != nil {
		p.f.Close()
		return nil, fmt.Errorf("timerfd_settime: %w", err)
	}
	return p, nil
}

// Start is the time slot 0 is due at minus one interval (slot i is due
// at Start + (i+1)*interval).
func (p *timerfdPacer) Start() time.Time { return p.start }

// Wait blocks until at least one more slot is due and returns how many
// came due since the last call (more than one when the caller fell behind).
func (p *timerfdPacer) Wait() (int, error) {
	if _, err := p.f.Read(p.buf[:]); err != nil {
		return 0, err
	}
	return int(binary.LittleEndian.Uint64(p.buf[:])), nil
}

func (p *timerfdPacer) Close() error { return p.f.Close() }
