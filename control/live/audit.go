package live

import (
	"encoding/json"
	"sort"
	"unicode/utf8"

	"github.com/modelsplit/modelsplit/api"
)

// Bounds on what the state keeps, so its size depends on the config and
// these constants, never on what clients send.
const (
	MaxHistory = 20  // weight sets rollback can restore, per endpoint
	MaxAudit   = 500 // audit entries kept (newest)

	// Longest strings an audit entry keeps, in bytes; longer ones are cut
	// (at a UTF-8 boundary) and end in "…".
	maxUserAgent = 256
	maxRemote    = 128
	maxName      = 128 // action, endpoint, shadow, actor, plan
	maxDetail    = 512
	maxWeights   = 64 // variants in an entry's before/after
)

// Requester says who asked for a change (for the audit).
type Requester struct {
	Remote    string
	UserAgent string
}

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
	e.Actor, e.Plan = clip(e.Actor, maxName), clip(e.Plan, maxName)
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

// Record adds e to the audit (bounded), keeping the newest MaxAudit.
//
// An automated entry (Actor set) that repeats the actor, plan and action
// of its endpoint's newest entry replaces that entry instead: Count
// grows, First and Before stay those of the first change, the rest is
// the newest's. A rollout that steps every few seconds thus leaves one
// entry per phase, and cannot push people's entries out of the audit.
func (s *State) Record(e api.AuditEntry) {
	e = boundEntry(e)
	if e.Actor != "" {
		if e.Count < 1 {
			e.Count = 1
		}
		if e.First == nil {
			t := e.Time
			e.First = &t
		}
		if i := s.newestOf(e.Endpoint); i >= 0 {
			if p := s.Audit[i]; p.Actor == e.Actor && p.Plan == e.Plan && p.Action == e.Action && p.Shadow == e.Shadow {
				e.Count += max(p.Count, 1)
				if p.First != nil {
					e.First = p.First
				}
				e.Before = p.Before
				s.removeAudit(i)
			}
		}
	}
	cached := len(s.auditJSON) == len(s.Audit)
	s.Audit = append(s.Audit, e)
	if b, err := json.Marshal(e); err == nil && cached {
		s.auditJSON = append(s.auditJSON, b)
	} else {
		s.auditJSON = nil
	}
	if n := len(s.Audit) - MaxAudit; n > 0 {
		s.Audit = append([]api.AuditEntry(nil), s.Audit[n:]...)
		if s.auditJSON != nil {
			s.auditJSON = append([][]byte(nil), s.auditJSON[n:]...)
		}
	}
}

// newestOf is the index of endpoint's newest audit entry, -1 if none.
func (s *State) newestOf(endpoint string) int {
	for i := len(s.Audit) - 1; i >= 0; i-- {
		if s.Audit[i].Endpoint == endpoint {
			return i
		}
	}
	return -1
}

// removeAudit removes entry i. Clone gave this State its own backing
// arrays, so shifting them never touches another State's.
func (s *State) removeAudit(i int) {
	if len(s.auditJSON) == len(s.Audit) {
		s.auditJSON = append(s.auditJSON[:i], s.auditJSON[i+1:]...)
	} else {
		s.auditJSON = nil
	}
	s.Audit = append(s.Audit[:i], s.Audit[i+1:]...)
}
