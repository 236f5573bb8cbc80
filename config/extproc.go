package config

import (
	"time"
)

// ExtProc bounds what the ext_proc server holds. Envoy opens one stream
// per request (two with the observe filter) and keeps it until the
// request ends, so a stream's life follows its request's; a stream that
// never sends anything, or outlives any request, is not Envoy's and would
// otherwise hold a goroutine and its buffers until its client leaves.
type ExtProc struct {
	// MaxStreams caps the ext_proc streams open at once (decide and
	// observe together). Past it a new stream is refused with
	// RESOURCE_EXHAUSTED: Envoy's decide filter fails open to the
	// weighted route, its observe filter drops that request's telemetry.
	MaxStreams int `yaml:"max_streams"`
	// FirstMessageTimeout closes a stream that has sent nothing: Envoy
	// sends the request headers as it opens the stream.
	FirstMessageTimeout Duration `yaml:"first_message_timeout"`
	// IdleTimeout closes a stream silent that long after its first
	// message. An observe stream is silent while the answer streams (its
	// trailers come at the end), a decide stream after its decision until
	// the request ends, so it must not be shorter than the longest
	// endpoint timeout. Default: that timeout plus 10s.
	IdleTimeout Duration `yaml:"idle_timeout"`
}

// Defaults and bounds of the extproc section.
const (
	DefaultExtProcMaxStreams          = 10_000
	MaxExtProcMaxStreams              = 1_000_000
	DefaultExtProcFirstMessageTimeout = Duration(10 * time.Second)
	// ExtProcIdleMargin is added to the longest endpoint timeout for the
	// default idle_timeout.
	ExtProcIdleMargin = Duration(10 * time.Second)
)

func (c *Config) applyExtProcDefaults() {
	x := &c.ExtProc
	if x.MaxStreams == 0 && c.Line("extproc.max_streams") == 0 {
		x.MaxStreams = DefaultExtProcMaxStreams
	}
	if x.FirstMessageTimeout == 0 && c.Line("extproc.first_message_timeout") == 0 {
		x.FirstMessageTimeout = DefaultExtProcFirstMessageTimeout
	}
	if x.IdleTimeout == 0 && c.Line("extproc.idle_timeout") == 0 {
		x.IdleTimeout = c.longestEndpointTimeout() + ExtProcIdleMargin
	}
}

// longestEndpointTimeout is the longest endpoint timeout (the default
// when there are no endpoints).
func (c *Config) longestEndpointTimeout() Duration {
	longest := DefaultTimeout
	if len(c.Endpoints) > 0 {
		longest = 0
	}
	for _, e := range c.Endpoints {
		longest = max(longest, e.Timeout)
	}
	return longest
}

func (v *validator) extProc() {
	x := v.c.ExtProc
	v.intRange("extproc.max_streams", x.MaxStreams, 1, MaxExtProcMaxStreams)
	if t := x.FirstMessageTimeout; t < Duration(time.Millisecond) || t > Duration(time.Hour) {
		v.add("extproc.first_message_timeout", "must be between 1ms and 1h0m0s, got %v (Envoy sends its first message as it opens the stream)", t)
	}
	switch longest := v.c.longestEndpointTimeout(); {
	case x.IdleTimeout < Duration(time.Second) || x.IdleTimeout > MaxTimeout+ExtProcIdleMargin:
		v.add("extproc.idle_timeout", "must be between 1s and %v, got %v", MaxTimeout+ExtProcIdleMargin, x.IdleTimeout)
	case x.IdleTimeout < longest:
		v.add("extproc.idle_timeout", "%v is shorter than the longest endpoint timeout %v: an observe stream is silent while its answer streams, "+
			"so it would be closed and that request's telemetry lost (make it at least %v, or leave it out for %v)",
			x.IdleTimeout, longest, longest, longest+ExtProcIdleMargin)
	}
}
