package main

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the launcher started and must stop.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited and been reaped
	err  error         // from Wait, valid after done
}

// startChild starts path with args; its stdout and stderr go to the log mux
// line by line, prefixed with name.
func (l *launcher) startChild(name, path string, args []string) (*child, error) {
	c := &child{name: name, done: make(chan struct{})}
	c.cmd = exec.Command(path, args...)
	out := l.logs.writer(name)
	c.cmd.Stdout, c.cmd.Stderr = out, out
	c.cmd.SysProcAttr = childAttr()
	c.cmd.WaitDelay = 2 * time.Second // a grandchild holding the log pipe cannot block Wait
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	l.say("started %s (pid %d): %s %s", name, c.cmd.Process.Pid, path, strings.Join(args, " "))
	go func() {
		c.err = c.cmd.Wait()
		out.flush()
		close(c.done)
		l.died <- c
	}()
	return c, nil
}

// stop sends SIGTERM and waits; after timeout, or at once when kill is
// closed, it sends SIGKILL.
func (c *child) stop(timeout time.Duration, kill <-chan struct{}, say func(string, ...any)) {
	select {
	case <-c.done:
		return
	default:
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.cmd.Process.Kill()
	}
	select {
	case <-c.done:
	case <-time.After(timeout):
		say("%s did not stop within %v of SIGTERM: killing it", c.name, timeout)
		c.cmd.Process.Kill()
		<-c.done
	case <-kill:
		c.cmd.Process.Kill()
		<-c.done
	}
}

// logMux writes whole lines from several sources to one writer, each line
// prefixed with its source, so logs never interleave mid-line.
type logMux struct {
	mu sync.Mutex
	w  io.Writer
}

func newLogMux(w io.Writer) *logMux { return &logMux{w: w} }

func (m *logMux) line(source, text string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintf(m.w, "%-15s | %s\n", source, text)
}

func (m *logMux) writer(source string) *lineWriter { return &lineWriter{m: m, source: source} }

// lineWriter buffers a source's output until a newline.
type lineWriter struct {
	m      *logMux
	source string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.m.line(w.source, strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 { // a line that never ends
		w.m.line(w.source, string(w.buf))
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.m.line(w.source, string(w.buf))
		w.buf = nil
	}
}
