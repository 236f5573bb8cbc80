package api

import "time"

// Series is GET /v1/endpoints/{endpoint}/series: an endpoint's recent
// per-variant results, one point per stats window (10 s, aligned to the
// wall clock), oldest first; the last may be the open window (Partial).
// The console draws its charts from it.
type Series struct {
	Endpoint      string  `json:"endpoint"`
	WindowSeconds float64 `json:"window_seconds"`
	// Variants are the endpoint's variants in config order.
	Variants []string       `json:"variants"`
	Windows  []SeriesWindow `json:"windows"`
}

// SeriesWindow is one window's figures per variant.
type SeriesWindow struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"` // for the open window, when it will close
	Partial bool      `json:"partial,omitempty"`
	// Weights in force over the whole window (a weight change closes it).
	Weights  map[string]int         `json:"weights,omitempty"`
	Variants map[string]SeriesPoint `json:"variants"`
}

// SeriesPoint is one variant's figures over one window.
type SeriesPoint struct {
	// Requests the observe filter saw end (with or without a status).
	Requests uint64 `json:"requests"`
	// Errors are 5xx answers plus requests that never got a status, as
	// the error_ratio rollout gate counts them; ErrorRatio is
	// Errors/Requests (null without requests).
	Errors     uint64   `json:"errors"`
	ErrorRatio *float64 `json:"error_ratio"`
	// Latency quantiles in seconds (request headers to response
	// headers), read off the window's histogram as Prometheus'
	// histogram_quantile does; null without answered requests.
	P50 *float64 `json:"p50_seconds"`
	P90 *float64 `json:"p90_seconds"`
	P99 *float64 `json:"p99_seconds"`
	// Decisions made for the variant and new users the hash placed on it.
	Decisions uint64 `json:"decisions"`
	NewUsers  uint64 `json:"new_users"`
}
