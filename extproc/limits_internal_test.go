package extproc

import (
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/config"
)

// A server given no limits (a zero config.ExtProc, as a caller that sets
// none passes) bounds its streams as a config without an extproc section
// does: the same stream cap and timeouts, the idle one outlasting the
// default endpoint timeout by the margin.
func TestZeroLimitsTakeTheConfigDefaults(t *testing.T) {
	cfg, err := config.Parse("defaults.yaml", []byte(`
endpoints:
  - name: face
    match: {path_prefix: /face}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := cfg.ExtProc
	if time.Duration(want.IdleTimeout) <= time.Duration(config.DefaultTimeout) {
		t.Fatalf("config's default idle_timeout %v does not outlast the default endpoint timeout %v", want.IdleTimeout, config.DefaultTimeout)
	}
	s := NewServer(nil, Options{})
	got := config.ExtProc{
		MaxStreams:          int(s.maxStreams.Load()),
		FirstMessageTimeout: config.Duration(s.firstMsg.Load()),
		IdleTimeout:         config.Duration(s.idle.Load()),
	}
	if got != want {
		t.Fatalf("zero limits give %+v, want the config defaults %+v", got, want)
	}
	// Negative values (never valid in a config) take the defaults too.
	s.SetLimits(config.ExtProc{MaxStreams: -1, FirstMessageTimeout: -1, IdleTimeout: -1})
	if s.maxStreams.Load() != int64(want.MaxStreams) || s.firstMsg.Load() != int64(want.FirstMessageTimeout) || s.idle.Load() != int64(want.IdleTimeout) {
		t.Fatalf("negative limits give %d, %v, %v; want the defaults", s.maxStreams.Load(), time.Duration(s.firstMsg.Load()), time.Duration(s.idle.Load()))
	}
}
