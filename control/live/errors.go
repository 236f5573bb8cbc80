package live

import (
	"errors"
	"fmt"
)

// Code says why a change was refused. A Code is an error itself, so
// errors.Is(err, ErrOwned) tells an *Error of that code.
type Code int

const (
	// ErrInvalid: the request is malformed or names something wrong
	// (weights that do not fit the endpoint, an unknown variant).
	ErrInvalid Code = iota + 1
	// ErrUnknownEndpoint: no endpoint of that name is in force.
	ErrUnknownEndpoint
	// ErrUnknownShadow: the endpoint has no shadow of that name.
	ErrUnknownShadow
	// ErrConflict: the state does not allow the change now (nothing to
	// roll back, no override to reset, other replicas kept changing it).
	ErrConflict
	// ErrOwned: an automated actor drives the endpoint; people's weight
	// changes wait until it is paused or aborted.
	ErrOwned
	// ErrRejected: the config the change would serve was refused by
	// validation when applied.
	ErrRejected
)

var codeNames = map[Code]string{
	ErrInvalid:         "invalid",
	ErrUnknownEndpoint: "unknown endpoint",
	ErrUnknownShadow:   "unknown shadow",
	ErrConflict:        "conflict",
	ErrOwned:           "owned by an automated actor",
	ErrRejected:        "rejected",
}

func (c Code) Error() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("live error code %d", int(c))
}

// Error is a refused change: its Code says why, its message names the
// problem for the person who asked.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Is makes errors.Is(err, code) true for an *Error of that code.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// Errorf builds an *Error of code c.
func Errorf(c Code, format string, args ...any) error {
	return &Error{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf is err's Code, 0 when err is not an *Error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}
