// Package api holds the admin API's JSON shapes. The server and the CLI
// both use these types, so the two cannot drift apart.
package api

import "time"

// EndpointList is GET /v1/endpoints.
type EndpointList struct {
	Endpoints []EndpointStatus `json:"endpoints"`
}

// EndpointStatus is one endpoint as it is served now.
type EndpointStatus struct {
	Name string `json:"name"`
	// Override is true while live weights from the API are in force
	// instead of the config file's.
	Override      bool       `json:"override"`
	OverrideSince *time.Time `json:"override_since,omitempty"`
	// RollbackDepth is how many earlier weight sets rollback can restore.
	RollbackDepth int `json:"rollback_depth"`
	// LiveSource says what live shares count: "requests" (the observe
	// filter saw them) or "decisions" (no observed traffic in the window).
	LiveSource string          `json:"live_source"`
	Variants   []VariantStatus `json:"variants"`
	Shadows    []ShadowStatus  `json:"shadows,omitempty"`
}

// VariantStatus is one variant's configured and live traffic.
type VariantStatus struct {
	Name             string `json:"name"`
	ConfiguredWeight int    `json:"configured_weight"` // in the config file
	Weight           int    `json:"weight"`            // in force
	// WeightShare is Weight over the endpoint's total: the share of new
	// users this variant gets.
	WeightShare float64 `json:"weight_share"`
	// LiveShare is this variant's share of the endpoint's decisions over
	// the last LiveWindowSeconds (null before any traffic).
	LiveShare         *float64 `json:"live_share"`
	LiveWindowSeconds float64  `json:"live_window_seconds"`
	// Decisions and Requests count since this process started: decisions
	// made (all sources) and requests the observe filter saw.
	Decisions uint64 `json:"decisions"`
	Requests  uint64 `json:"requests"`
	// Users is the number of users assigned to this variant in the store
	// (approximate for Redis: a HyperLogLog of assignments made).
	Users *int64 `json:"users"`
}

// ShadowStatus is one shadow's state.
type ShadowStatus struct {
	Name       string  `json:"name"`
	Percent    float64 `json:"percent"`
	PerRequest bool    `json:"per_request"`
	Compare    bool    `json:"compare"`
	Paused     bool    `json:"paused"`
	// Comparison results since start (compare mode only).
	Compared  uint64   `json:"compared"`
	Agreed    uint64   `json:"agreed"`
	Agreement *float64 `json:"agreement,omitempty"`
	Errors    uint64   `json:"errors"`
	Dropped   uint64   `json:"dropped"`
}

// SetWeightsRequest is PUT /v1/endpoints/{endpoint}/weights. Every
// variant of the endpoint must be listed.
type SetWeightsRequest struct {
	Weights map[string]int `json:"weights"`
}

// PromoteRequest is POST /v1/endpoints/{endpoint}/promote.
type PromoteRequest struct {
	Variant string `json:"variant"`
}

// ChangeResult answers every successful change.
type ChangeResult struct {
	Endpoint string         `json:"endpoint"`
	Weights  map[string]int `json:"weights"`  // in force after the change
	Previous map[string]int `json:"previous"` // in force before it
	Paused   []string       `json:"paused_shadows,omitempty"`
	Audit    AuditEntry     `json:"audit"`
	// Persisted is false when the change is in force but could not be
	// stored (Redis or the state file unavailable); it is retried, and
	// Warning says why.
	Persisted bool   `json:"persisted"`
	Warning   string `json:"warning,omitempty"`
}

// AuditEntry records one change: what, when and from where.
type AuditEntry struct {
	Time      time.Time      `json:"time"`
	Action    string         `json:"action"` // set_weights, promote, rollback, reset, pause, resume, superseded
	Endpoint  string         `json:"endpoint"`
	Shadow    string         `json:"shadow,omitempty"`
	Before    map[string]int `json:"before,omitempty"`
	After     map[string]int `json:"after,omitempty"`
	Remote    string         `json:"remote,omitempty"`     // client address
	UserAgent string         `json:"user_agent,omitempty"` // e.g. modelsplit-cli/dev
	Detail    string         `json:"detail,omitempty"`
	// Actor is who made an automated change ("rollout", "bandit"); empty
	// for a person's change through the API or CLI.
	Actor string `json:"actor,omitempty"`
	Plan  string `json:"plan,omitempty"` // the automated plan's id
	Step  int    `json:"step,omitempty"` // its step, from 1
	// Count is how many automated changes this entry stands for:
	// consecutive changes of the same actor, plan and action are merged
	// into one entry (First is the time of the first of them).
	Count int        `json:"count,omitempty"`
	First *time.Time `json:"first,omitempty"`
}

// AuditList is GET /v1/audit.
type AuditList struct {
	Entries []AuditEntry `json:"entries"`
}

// Disagreements is GET /v1/endpoints/{endpoint}/shadows/{shadow}/disagreements.
type Disagreements struct {
	Endpoint string   `json:"endpoint"`
	Shadow   string   `json:"shadow"`
	Samples  []Sample `json:"samples"`
}

// Sample is one recorded disagreement, configured fields redacted.
type Sample struct {
	Time           time.Time `json:"time"`
	RequestID      string    `json:"request_id"`
	Method         string    `json:"method,omitempty"`
	Path           string    `json:"path"`
	Reason         string    `json:"reason"` // status, field, body, shadow_error
	PrimaryStatus  int       `json:"primary_status"`
	ShadowStatus   int       `json:"shadow_status"`
	PrimaryLatency float64   `json:"primary_latency_seconds"`
	ShadowLatency  float64   `json:"shadow_latency_seconds"`
	Request        string    `json:"request,omitempty"` // body, truncated, redacted
	Primary        string    `json:"primary"`           // answer, truncated, redacted
	Shadow         string    `json:"shadow"`            // answer, truncated, redacted
	Error          string    `json:"error,omitempty"`
}

// ErrorBody is every 4xx and 5xx answer.
type ErrorBody struct {
	Error string `json:"error"`
}
