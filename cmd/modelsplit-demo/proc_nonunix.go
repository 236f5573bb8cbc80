//go:build !unix

package main

import "syscall"

// childAttr: no process groups here; children are stopped one by one.
func childAttr() *syscall.SysProcAttr { return nil }
