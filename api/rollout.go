package api

import "time"

// Rollout phases.
const (
	PhaseRunning    = "running"
	PhasePaused     = "paused"
	PhasePromoted   = "promoted"
	PhaseRolledBack = "rolled_back"
	PhaseAborted    = "aborted"
)

// Gate verdicts.
const (
	VerdictPass    = "pass"    // enough data, and the canary is not worse
	VerdictFail    = "fail"    // the canary is worse, with the gate's confidence
	VerdictPending = "pending" // not enough data yet: the step holds
	VerdictError   = "error"   // the gate could not be computed: the step holds
)

// RolloutStatus is GET /v1/endpoints/{endpoint}/rollout and the answer to
// every rollout action.
type RolloutStatus struct {
	Endpoint string `json:"endpoint"`
	Plan     string `json:"plan"` // id of this run of the plan
	Strategy string `json:"strategy"`
	Phase    string `json:"phase"`
	Canary   string `json:"canary"`
	Baseline string `json:"baseline"`
	// Step counts from 1; Steps is how many the plan has.
	Step  int `json:"step"`
	Steps int `json:"steps"`
	// Weights is what the current step puts in force; Before is what was
	// in force when the rollout started (a rollback restores it).
	Weights     map[string]int `json:"weights"`
	Before      map[string]int `json:"before"`
	Started     time.Time      `json:"started"`
	StepStarted time.Time      `json:"step_started"`
	// NextStepDue is the earliest time the next step can start (bake time
	// over); it also waits for every gate to pass.
	NextStepDue *time.Time `json:"next_step_due,omitempty"`
	// BakeRemaining is kept while paused (seconds).
	BakeRemaining float64       `json:"bake_remaining_seconds,omitempty"`
	Gates         []GateVerdict `json:"gates,omitempty"`
	LastCheck     *time.Time    `json:"last_check,omitempty"`
	// Reason says why a rollout ended (the failing gate and its figures).
	Reason string     `json:"reason,omitempty"`
	Ended  *time.Time `json:"ended,omitempty"`
	// Driver is the replica driving the rollout (empty on a replica that
	// only follows).
	Driver string `json:"driver,omitempty"`
}

// GateVerdict is one gate's latest verdict with its figures.
type GateVerdict struct {
	Gate     string   `json:"gate"` // e.g. error_ratio, latency, srm
	Verdict  string   `json:"verdict"`
	Canary   float64  `json:"canary"`   // the canary's figure (ratio, seconds…)
	Baseline float64  `json:"baseline"` // the baseline's (or the expected) figure
	CanaryN  uint64   `json:"canary_n"` // samples behind each
	BaseN    uint64   `json:"baseline_n"`
	PValue   *float64 `json:"p_value,omitempty"` // statistical gates only
	Detail   string   `json:"detail,omitempty"`
}

// RolloutList is GET /v1/rollouts.
type RolloutList struct {
	Rollouts []RolloutStatus `json:"rollouts"`
}
