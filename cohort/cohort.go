package cohort

import "errors"

// Source says how a decision was reached. It is a metric label, so the set
// is closed.
type Source uint8

const (
	SourceTarget   Source = iota // x-modelsplit-target named an allowed variant
	SourceRule                   // a targeting rule matched
	SourceStore                  // a stored assignment (cache or store)
	SourceHash                   // new user: the weighted hash picked, result stored
	SourceRandom                 // no user key: weighted random
	SourceFallback               // store unavailable or over budget: the hash decided
	SourceRamp                   // a rollout's ramp moved an assigned user to the canary
)

var sourceNames = [...]string{"target", "rule", "store", "hash", "random", "fallback", "ramp"}

func (s Source) String() string {
	if int(s) < len(sourceNames) {
		return sourceNames[s]
	}
	return "unknown"
}

// Headers gives the decision read access to request headers without
// copying them. Names are lower-case; ok is false when absent.
type Headers interface {
	Get(name string) (value string, ok bool)
}

// Decision is the outcome for one request.
type Decision struct {
	Endpoint string
	Variant  string
	// Cluster is config.ClusterName(Endpoint, Variant).
	Cluster string
	Source  Source
	// SetCookie, when not empty, is a Set-Cookie header value carrying a
	// freshly minted user id; it must be added to this request's response.
	SetCookie string
	// Mirror holds the user-sampled mirror shadows this request goes to:
	// the caller sets each one's header to its cluster, and Envoy's mirror
	// policy (cluster_header) tees the request there.
	Mirror ShadowSet
	// Unsampled is set when the endpoint has a bandit and a target header
	// or a rule placed the request: its reward is not the bandit's.
	Unsampled bool
}

// ErrUnknownEndpoint is returned for an endpoint missing from the config.
// Callers pass the request through unchanged and count it.
var ErrUnknownEndpoint = errors.New("unknown endpoint")
