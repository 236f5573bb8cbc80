package live

import (
	"strings"
	"testing"
	"time"

	"github.com/modelsplit/modelsplit/config"
)

// testConfig is one endpoint of two variants and two shadows, one paused.
const testConfig = `
endpoints:
  - name: face
    match: {path_prefix: /face}
    sticky: {header: x-user-id}
    variants:
      - {name: stable, weight: 90, backends: ["10.0.0.1:80"]}
      - {name: canary, weight: 10, backends: ["10.0.0.2:80"]}
    shadows:
      - {name: mirror, percent: 10, backends: ["10.0.0.3:80"]}
      - {name: parked, percent: 10, paused: true, backends: ["10.0.0.4:80"]}
  - name: chat
    match: {path_prefix: /chat}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 100, backends: ["10.0.0.5:80"]}
      - {name: b, weight: 0, backends: ["10.0.0.6:80"]}
`

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// parse is testConfig with every old→new replacement made.
func parse(t *testing.T, replace ...string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("live.yaml", []byte(strings.NewReplacer(replace...).Replace(testConfig)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// world is a file config and a live state over it, changed the way the
// controller does: a Change on a clone, then Effective, then the audit.
type world struct {
	t    *testing.T
	file *config.Config
	st   *State
	eff  *config.Config
	now  time.Time
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, file: parse(t), st: NewState(), now: t0}
	w.eff, _ = Effective(w.file, w.st, w.now)
	return w
}

// do applies ch to endpoint and returns its error; nothing changes on one.
func (w *world) do(endpoint string, ch Change) error {
	w.t.Helper()
	e, ok := w.eff.Endpoint(endpoint)
	if !ok {
		w.t.Fatalf("no endpoint %s", endpoint)
	}
	fe, _ := w.file.Endpoint(endpoint)
	w.now = w.now.Add(time.Second)
	st := w.st.Clone()
	entry, err := ch(st, Target{Endpoint: e, File: fe, Now: w.now})
	if err != nil {
		return err
	}
	entry.Time, entry.Endpoint = w.now, endpoint
	eff, superseded := Effective(w.file, st, w.now)
	for _, a := range superseded {
		st.Record(a)
	}
	st.Record(entry)
	w.st, w.eff = st, eff
	return nil
}

func (w *world) must(endpoint string, ch Change) {
	w.t.Helper()
	if err := w.do(endpoint, ch); err != nil {
		w.t.Fatal(err)
	}
}

// reload serves a new file config, as a config reload does.
func (w *world) reload(file *config.Config) []string {
	w.t.Helper()
	st := w.st.Clone()
	eff, superseded := Effective(file, st, w.now)
	var details []string
	for _, a := range superseded {
		st.Record(a)
		details = append(details, a.Detail)
	}
	w.file, w.st, w.eff = file, st, eff
	return details
}

func (w *world) weights(endpoint string) map[string]int {
	w.t.Helper()
	e, ok := w.eff.Endpoint(endpoint)
	if !ok {
		w.t.Fatalf("no endpoint %s", endpoint)
	}
	return WeightsOf(e)
}

func (w *world) endpoint(name string) *config.Endpoint {
	e, _ := w.eff.Endpoint(name)
	return e
}
