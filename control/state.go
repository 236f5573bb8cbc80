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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// Bounds on what the state keeps, so its size depends on the config and
// these constants, never on what clients send.
const (
	maxHistory = 20  // weight sets rollback can restore, per endpoint
	maxAudit   = 500 // audit entries kept (newest)

	// Longest strings an audit entry keeps, in bytes; longer ones are cut
	// (at a UTF-8 boundary) and end in "…".
	maxUserAgent = 256
	maxRemote    = 128
	maxName      = 128 // action, endpoint, shadow
	maxDetail    = 512
	maxWeights   = 64 // variants in an entry's before/after
)

// clip cuts s to at most n bytes, ending in "…" when cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ell = "…"
	cut := n - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}

// boundEntry clips every string of an audit entry; what clients send (the
// User-Agent, the address) can be arbitrarily long.
func boundEntry(e api.AuditEntry) api.AuditEntry {
	e.Action, e.Endpoint, e.Shadow = clip(e.Action, maxName), clip(e.Endpoint, maxName), clip(e.Shadow, maxName)
	e.Remote, e.UserAgent, e.Detail = clip(e.Remote, maxRemote), clip(e.UserAgent, maxUserAgent), clip(e.Detail, maxDetail)
	e.Before, e.After = boundWeights(e.Before), boundWeights(e.After)
	return e
}

func boundWeights(w map[string]int) map[string]int {
	ok := len(w) <= maxWeights
	for k := range w {
		ok = ok && len(k) <= maxName
	}
	if ok {
		return w
	}
	names := make([]string, 0, len(w))
	for k := range w {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make(map[string]int, maxWeights)
	for _, k := range names[:min(len(names), maxWeights)] {
		out[clip(k, maxName)] = w[k]
	}
	return out
}

// bound applies the bounds to a state read from a store, which an older
// release (or anything else) may have written without them.
func (s *State) bound() {
	if n := len(s.Audit) - maxAudit; n > 0 {
		s.Audit = s.Audit[n:]
	}
	for i := range s.Audit {
		s.Audit[i] = boundEntry(s.Audit[i])
	}
	for _, es := range s.Endpoints {
		if es == nil {
			continue
		}
		if n := len(es.History) - maxHistory; n > 0 {
			es.History = es.History[n:]
		}
	}
	for name, es := range s.Endpoints {
		if es == nil {
			delete(s.Endpoints, name)
		}
	}
	s.encodeAudit()
}

// State is everything live control has changed. It is stored as JSON.
type State struct {
	// Revision increases with every change; replicas sharing Redis adopt
	// a higher revision than their own.
	Revision  int64                     `json:"revision"`
	Endpoints map[string]*EndpointState `json:"endpoints,omitempty"`
	Audit     []api.AuditEntry          `json:"audit,omitempty"` // oldest first

	owned map[string]bool // endpoint states this copy may write (see endpoint)
	// auditJSON[i] is Audit[i] encoded, made once when the entry is
	// added (entries never change), so saving the state does not encode
	// the whole audit again. Shorter than Audit when unknown.
	auditJSON [][]byte
}

// encode is the state as stored: compact JSON with the revision first
// (Revision reads it from there), the audit from its encoded entries.
func (s *State) encode() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(256 + len(s.Audit)*320)
	b.WriteString(`{"revision":`)
	b.WriteString(strconv.FormatInt(s.Revision, 10))
	if len(s.Endpoints) > 0 {
		eps, err := json.Marshal(s.Endpoints)
		if err != nil {
			return nil, err
		}
		b.WriteString(`,"endpoints":`)
		b.Write(eps)
	}
	if len(s.Audit) > 0 {
		b.WriteString(`,"audit":[`)
		cached := len(s.auditJSON) == len(s.Audit)
		for i := range s.Audit {
			if i > 0 {
				b.WriteByte(',')
			}
			if cached {
				b.Write(s.auditJSON[i])
				continue
			}
			e, err := json.Marshal(s.Audit[i])
			if err != nil {
				return nil, err
			}
			b.Write(e)
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// MarshalJSON is encode, so every encoding of a State is the stored one.
func (s *State) MarshalJSON() ([]byte, error) { return s.encode() }

// encodeAudit fills auditJSON for every entry (after a load).
func (s *State) encodeAudit() {
	s.auditJSON = make([][]byte, 0, len(s.Audit)+1)
	for _, e := range s.Audit {
		b, err := json.Marshal(e)
		if err != nil {
			s.auditJSON = nil
			return
		}
		s.auditJSON = append(s.auditJSON, b)
	}
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

// clone copies the state for a change. Endpoint states are shared until
// endpoint() hands one out for writing (copy on write), and audit entries
// are never modified once stored, so the copy shares them too (in a new
// backing array: appending never touches the original's). A change thus
// costs little however many endpoints have live state.
func (s *State) clone() *State {
	n := &State{Revision: s.Revision, Endpoints: maps.Clone(s.Endpoints)}
	if n.Endpoints == nil {
		n.Endpoints = map[string]*EndpointState{}
	}
	if s.Audit != nil {
		n.Audit = append(make([]api.AuditEntry, 0, len(s.Audit)+1), s.Audit...)
	}
	if len(s.auditJSON) == len(s.Audit) {
		n.auditJSON = append(make([][]byte, 0, len(s.auditJSON)+1), s.auditJSON...)
	}
	return n
}

func (es *EndpointState) copy() *EndpointState {
	c := &EndpointState{Weights: maps.Clone(es.Weights), Base: maps.Clone(es.Base), Shadows: maps.Clone(es.Shadows)}
	if es.Since != nil {
		t := *es.Since
		c.Since = &t
	}
	if es.History != nil {
		c.History = make([]map[string]int, len(es.History))
		for i, h := range es.History {
			c.History[i] = maps.Clone(h)
		}
	}
	return c
}

// endpoint returns the named endpoint's state for writing: created when
// missing, copied the first time this State writes it.
func (s *State) endpoint(name string) *EndpointState {
	if s.Endpoints == nil {
		s.Endpoints = map[string]*EndpointState{}
	}
	es := s.Endpoints[name]
	switch {
	case es == nil:
		es = &EndpointState{}
	case !s.owned[name]:
		es = es.copy()
	default:
		return es
	}
	s.Endpoints[name] = es
	if s.owned == nil {
		s.owned = map[string]bool{}
	}
	s.owned[name] = true
	return es
}

func (s *State) audit(e api.AuditEntry) {
	e = boundEntry(e)
	cached := len(s.auditJSON) == len(s.Audit)
	s.Audit = append(s.Audit, e)
	if b, err := json.Marshal(e); err == nil && cached {
		s.auditJSON = append(s.auditJSON, b)
	} else {
		s.auditJSON = nil
	}
	if n := len(s.Audit) - maxAudit; n > 0 {
		s.Audit = append([]api.AuditEntry(nil), s.Audit[n:]...)
		if s.auditJSON != nil {
			s.auditJSON = append([][]byte(nil), s.auditJSON[n:]...)
		}
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
//
// The result shares with file everything live state does not change
// (copy on write: a new endpoint slice, and new variant and shadow
// slices for the endpoints with live state), so a change costs little
// with many endpoints; neither config is modified afterwards.
func effective(file *config.Config, st *State, now time.Time) (*config.Config, []api.AuditEntry) {
	cfg := *file
	cfg.Endpoints = slices.Clone(file.Endpoints)
	index := make(map[string]int, len(cfg.Endpoints))
	for i := range cfg.Endpoints {
		index[cfg.Endpoints[i].Name] = i
	}
	var superseded []api.AuditEntry
	names := make([]string, 0, len(st.Endpoints))
	for n := range st.Endpoints {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		es := st.Endpoints[name]
		i, ok := index[name]
		if !ok {
			superseded = append(superseded, api.AuditEntry{Time: now, Action: "superseded", Endpoint: name,
				Before: es.Weights, Detail: "the endpoint is no longer in the config file; its live state was dropped"})
			delete(st.Endpoints, name)
			continue
		}
		e := &cfg.Endpoints[i]
		if es.Weights != nil {
			e.Variants = slices.Clone(e.Variants)
		}
		if len(es.Shadows) > 0 {
			e.Shadows = slices.Clone(e.Shadows)
		}
		if es.Weights != nil {
			fw := fileWeights(e)
			if err := ValidateWeights(e, es.Weights); err != nil {
				superseded = append(superseded, api.AuditEntry{Time: now, Action: "superseded", Endpoint: name,
					Before: es.Weights, After: fw, Detail: "the stored weights are not valid for the endpoint (" + err.Error() + "); the file's weights are in force"})
				es = st.endpoint(name)
				es.Weights, es.Base, es.Since = nil, nil, nil
			} else if !maps.Equal(fw, es.Base) {
				superseded = append(superseded, api.AuditEntry{Time: now, Action: "superseded", Endpoint: name,
					Before: es.Weights, After: fw, Detail: "the config file changed this endpoint's weights; the file's weights are in force"})
				es = st.endpoint(name)
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
				delete(st.endpoint(name).Shadows, sh)
				continue
			}
			e.Shadows[i].Paused = ss.Paused
		}
	}
	st.prune()
	return &cfg, superseded
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
	// Content that is not a modelsplit state is an ErrNotState.
	Load(ctx context.Context) (*State, error)
	// Revision returns the stored state's revision without reading the
	// whole state (0, false when nothing is stored), so replicas can poll
	// it cheaply and read the state only when it changed.
	Revision(ctx context.Context) (rev int64, exists bool, err error)
	// Save stores st unless the stored revision differs from prev
	// (ErrConflict): another replica changed it first.
	Save(ctx context.Context, st *State, prev int64) error
	// String names the store in logs and errors.
	String() string
}

// ErrConflict means another replica saved a newer state first.
var ErrConflict = errors.New("live state changed concurrently (another replica saved first)")

// ErrNotState means the store holds something that is not a modelsplit
// live state, which is never overwritten.
var ErrNotState = errors.New("not a modelsplit live state")

// revisionRE reads the revision from the start of a stored state: it is
// the first field of State, so json.Marshal writes it first.
var revisionRE = regexp.MustCompile(`^\s*\{\s*"revision"\s*:\s*(-?[0-9]{1,18})\s*[,}]`)

// headSize is how much of a stored state Revision reads.
const headSize = 64

func peekRevision(head []byte) (int64, bool) {
	m := revisionRE.FindSubmatch(head)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(m[1]), 10, 64)
	return n, err == nil
}

// decodeState parses a stored state: a JSON object with a numeric
// "revision". Anything else is ErrNotState. The result is bounded.
func decodeState(where string, b []byte) (*State, error) {
	var probe struct {
		Revision *json.Number `json:"revision"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", where, ErrNotState, err)
	}
	if probe.Revision == nil {
		return nil, fmt.Errorf("%s: %w: no \"revision\" field", where, ErrNotState)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", where, ErrNotState, err)
	}
	if st.Endpoints == nil {
		st.Endpoints = map[string]*EndpointState{}
	}
	st.bound()
	return &st, nil
}

// FilePersister keeps state in a local JSON file (single replica).
type FilePersister struct{ Path string }

func (f FilePersister) String() string { return "state file " + f.Path }

// Load reads the file; a missing or empty file is no state, and one that
// is not a state file is ErrNotState.
func (f FilePersister) Load(context.Context) (*State, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	return decodeState(f.Path, b)
}

// Revision reads the start of the file only.
func (f FilePersister) Revision(ctx context.Context) (int64, bool, error) {
	file, err := os.Open(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	head := make([]byte, headSize)
	n, err := io.ReadFull(file, head)
	file.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return 0, false, err
	}
	if rev, ok := peekRevision(head[:n]); ok {
		return rev, true, nil
	}
	st, err := f.Load(ctx) // not in the usual layout: read it whole
	if err != nil || st == nil {
		return 0, false, err
	}
	return st.Revision, true, nil
}

// Save writes atomically (temp file, fsync, rename), so a crash leaves
// the old or the new state, never half of one. It never replaces a file
// that is not a state file (ErrNotState).
func (f FilePersister) Save(ctx context.Context, st *State, _ int64) error {
	if _, _, err := f.Revision(ctx); errors.Is(err, ErrNotState) {
		return fmt.Errorf("refusing to overwrite it: %w", err)
	}
	b, err := st.encode() // compact JSON: `jq . FILE` shows it indented
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
	return decodeState("redis key "+r.Key, b)
}

// Revision reads the first bytes of the key (GETRANGE), not the state.
func (r RedisPersister) Revision(ctx context.Context) (int64, bool, error) {
	head, err := r.Client.GetRange(ctx, r.Key, 0, headSize-1).Bytes()
	if err != nil {
		return 0, false, err
	}
	if len(head) == 0 { // GETRANGE answers "" for a missing key
		return 0, false, nil
	}
	if rev, ok := peekRevision(head); ok {
		return rev, true, nil
	}
	st, err := r.Load(ctx) // not in the usual layout: read it whole
	if err != nil || st == nil {
		return 0, false, err
	}
	return st.Revision, true, nil
}

// saveScript sets the key only if the stored revision is still prev. It
// reads the revision from the value's first bytes (the layout Save
// writes), so a save costs Redis a GETRANGE and a SET, not a decode of
// the whole state; a value in another layout is decoded, and one that is
// not a state is never overwritten (-1).
var saveScript = redis.NewScript(`
local head = redis.call('GETRANGE', KEYS[1], 0, 63)
local rev = 0
if head ~= '' then
  local m = string.match(head, '^%s*{%s*"revision"%s*:%s*(%-?%d+)%s*[,}]')
  if m then
    rev = tonumber(m)
  else
    local ok, st = pcall(cjson.decode, redis.call('GET', KEYS[1]))
    if not (ok and type(st) == 'table' and type(st.revision) == 'number') then return -1 end
    rev = st.revision
  end
end
if rev ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1`)

// Save compares and sets in one script, so two replicas changing at once
// cannot overwrite each other.
func (r RedisPersister) Save(ctx context.Context, st *State, prev int64) error {
	b, err := st.encode()
	if err != nil {
		return err
	}
	ok, err := saveScript.Run(ctx, r.Client, []string{r.Key}, b, prev).Int()
	if err != nil {
		return err
	}
	switch ok {
	case 1:
		return nil
	case -1:
		return fmt.Errorf("redis key %s: %w: refusing to overwrite it", r.Key, ErrNotState)
	}
	return ErrConflict
}

// CheckStateFile is what serve checks before it uses a state file: the
// file is absent, empty or a modelsplit state, and its directory exists.
// Otherwise the first live change would overwrite someone else's file,
// or every save would fail.
func CheckStateFile(path string) error {
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("%s: its directory: %w", path, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	_, err := FilePersister{Path: path}.Load(context.Background())
	return err
}
