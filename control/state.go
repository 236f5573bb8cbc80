// Package control applies live changes from the admin API — weights,
// promote, rollback, shadow pause and resume — on top of the config file,
// persists them (Redis, or a local state file) so a restart keeps them,
// and audits every one.
//
// Precedence: a live change wins over the config file until the file
// changes that same setting. Each override records the file's value it
// was made against (its base); when a reload brings a different file
// value, the file wins, the override is dropped and the drop is audited
// as "superseded". Editing an unrelated part of the file keeps every
// override in force.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// Bounds on what the state keeps.
const (
	maxHistory = 20  // weight sets rollback can restore, per endpoint
	maxAudit   = 500 // audit entries kept (newest)
)

// State is everything live control has changed. It is stored as JSON.
type State struct {
	// Revision increases with every change; replicas sharing Redis adopt
	// a higher revision than their own.
	Revision  int64                     `json:"revision"`
	Endpoints map[string]*EndpointState `json:"endpoints,omitempty"`
	Audit     []api.AuditEntry          `json:"audit,omitempty"` // oldest first
}

// EndpointState is one endpoint's live overrides.
type EndpointState struct {
	// Weights in force instead of the file's, made against Base (the
	// file's weights at the time). nil: the file's weights are in force.
	Weights map[string]int `json:"weights,omitempty"`
	Base    map[string]int `json:"base,omitempty"`
	Since   *time.Time     `json:"since,omitempty"`
	// History holds the weights in force before each change, newest last.
	History []map[string]int `json:"history,omitempty"`
	// Shadows holds pause/resume overrides by shadow name.
	Shadows map[string]ShadowState `json:"shadows,omitempty"`
}

// ShadowState is a pause or resume made against the file's value (Base).
type ShadowState struct {
	Paused bool `json:"paused"`
	Base   bool `json:"base"`
}

func (s *State) clone() *State {
	b, _ := json.Marshal(s)
	var n State
	_ = json.Unmarshal(b, &n)
	if n.Endpoints == nil {
		n.Endpoints = map[string]*EndpointState{}
	}
	return &n
}

func (s *State) endpoint(name string) *EndpointState {
	if s.Endpoints == nil {
		s.Endpoints = map[string]*EndpointState{}
	}
	es := s.Endpoints[name]
	if es == nil {
		es = &EndpointState{}
		s.Endpoints[name] = es
	}
	return es
}

func (s *State) audit(e api.AuditEntry) {
	s.Audit = append(s.Audit, e)
	if n := len(s.Audit) - maxAudit; n > 0 {
		s.Audit = append([]api.AuditEntry(nil), s.Audit[n:]...)
	}
}

// prune drops endpoint entries that hold nothing.
func (s *State) prune() {
	for name, es := range s.Endpoints {
		if es.Weights == nil && len(es.History) == 0 && len(es.Shadows) == 0 {
			delete(s.Endpoints, name)
		}
	}
}

func fileWeights(e *config.Endpoint) map[string]int {
	m := make(map[string]int, len(e.Variants))
	for _, v := range e.Variants {
		m[v.Name] = v.Weight
	}
	return m
}

// effective applies st to the file config and returns the config to
// serve, plus audit entries for overrides the file superseded (they are
// removed from st).
func effective(file *config.Config, st *State, now time.Time) (*config.Config, []api.AuditEntry) {
	cfg := file.Clone()
	var superseded []api.AuditEntry
	names := make([]string, 0, len(st.Endpoints))
	for n := range st.Endpoints {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		es := st.Endpoints[name]
		e, ok := cfg.Endpoint(name)
		if !ok {
			superseded = append(superseded, api.AuditEntry{Time: now, Action: "superseded", Endpoint: name,
				Before: es.Weights, Detail: "the endpoint is no longer in the config file; its live state was dropped"})
			delete(st.Endpoints, name)
			continue
		}
		if es.Weights != nil {
			fw := fileWeights(e)
			if !maps.Equal(fw, es.Base) {
				superseded = append(superseded, api.AuditEntry{Time: now, Action: "superseded", Endpoint: name,
					Before: es.Weights, After: fw, Detail: "the config file changed this endpoint's weights; the file's weights are in force"})
				es.Weights, es.Base, es.Since = nil, nil, nil
			} else {
				for i := range e.Variants {
					e.Variants[i].Weight = es.Weights[e.Variants[i].Name]
				}
			}
		}
		for sh, ss := range es.Shadows {
			i := shadowIndex(e, sh)
			if i < 0 || e.Shadows[i].Paused != ss.Base {
				detail := "the config file changed this shadow's paused setting; the file's setting is in force"
				if i < 0 {
					detail = "the shadow is no longer in the config file"
				}
				superseded = append(superseded, api.AuditEntry{Time: now, Action: "superseded", Endpoint: name, Shadow: sh, Detail: detail})
				delete(es.Shadows, sh)
				continue
			}
			e.Shadows[i].Paused = ss.Paused
		}
	}
	st.prune()
	return cfg, superseded
}

func shadowIndex(e *config.Endpoint, name string) int {
	for i := range e.Shadows {
		if e.Shadows[i].Name == name {
			return i
		}
	}
	return -1
}

// Persister stores State.
type Persister interface {
	// Load returns the stored state, or nil when nothing is stored.
	Load(ctx context.Context) (*State, error)
	// Save stores st unless the stored revision differs from prev
	// (ErrConflict): another replica changed it first.
	Save(ctx context.Context, st *State, prev int64) error
	// String names the store in logs and errors.
	String() string
}

// ErrConflict means another replica saved a newer state first.
var ErrConflict = errors.New("live state changed concurrently (another replica saved first)")

// FilePersister keeps state in a local JSON file (single replica).
type FilePersister struct{ Path string }

func (f FilePersister) String() string { return "state file " + f.Path }

// Load reads the file; a missing file is no state.
func (f FilePersister) Load(context.Context) (*State, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: not a modelsplit state file: %w", f.Path, err)
	}
	return &st, nil
}

// Save writes atomically (temp file, fsync, rename), so a crash leaves
// the old or the new state, never half of one.
func (f FilePersister) Save(_ context.Context, st *State, _ int64) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.Path)
	tmp, err := os.CreateTemp(dir, ".modelsplit-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), f.Path)
}

// RedisPersister keeps state under one Redis key shared by replicas.
type RedisPersister struct {
	Client redis.UniversalClient
	Key    string
}

func (r RedisPersister) String() string { return "redis key " + r.Key }

// Load reads the key; a missing key is no state.
func (r RedisPersister) Load(ctx context.Context) (*State, error) {
	b, err := r.Client.Get(ctx, r.Key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("redis key %s: not modelsplit state: %w", r.Key, err)
	}
	return &st, nil
}

// saveScript sets the key only if the stored revision is still prev.
var saveScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local rev = 0
if cur then
  local ok, st = pcall(cjson.decode, cur)
  if ok and type(st) == 'table' and st.revision then rev = tonumber(st.revision) end
end
if rev ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1`)

// Save compares and sets in one script, so two replicas changing at once
// cannot overwrite each other.
func (r RedisPersister) Save(ctx context.Context, st *State, prev int64) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	ok, err := saveScript.Run(ctx, r.Client, []string{r.Key}, b, prev).Int()
	if err != nil {
		return err
	}
	if ok != 1 {
		return ErrConflict
	}
	return nil
}
