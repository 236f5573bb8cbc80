//go:build linux

package main

import "syscall"

// childAttr puts a child in its own process group, so a Ctrl-C in the
// terminal reaches only the launcher, which stops the children in order,
// and asks the kernel to send it SIGTERM if the launcher dies without
// stopping it (kill -9): no orphans either way. Pdeathsig fires when the
// thread that started the child exits, so children are started from the
// main goroutine, locked to the main thread (see init in main.go).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
