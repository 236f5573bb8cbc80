package api

import (
	"encoding/json"
	"time"
)

// BanditStatus is GET /v1/endpoints/{endpoint}/bandit.
type BanditStatus struct {
	Endpoint   string      `json:"endpoint"`
	Plan       string      `json:"plan,omitempty"`
	Phase      string      `json:"phase"` // starting, warmup, running
	Reward     string      `json:"reward"`
	Floor      float64     `json:"floor_percent"`
	Started    time.Time   `json:"started"`
	Updates    int         `json:"updates"`
	Warmup     bool        `json:"warmup"`
	LastUpdate *time.Time  `json:"last_update,omitempty"`
	NextUpdate *time.Time  `json:"next_update,omitempty"`
	Arms       []BanditArm `json:"arms"`
}

// BanditArm is one arm: rewards counted (pulls), mean reward with a 95%
// interval, posterior probability of being best, and the weight in force
// (basis points of 10,000).
type BanditArm struct {
	Name     string  `json:"name"`
	Pulls    uint64  `json:"pulls"`
	Mean     float64 `json:"mean"`
	Lower    float64 `json:"lower"`
	Upper    float64 `json:"upper"`
	ProbBest float64 `json:"prob_best"`
	Weight   int     `json:"weight"`
	Control  bool    `json:"control,omitempty"` // held at a fixed share, outside the bandit
}

// BanditList is GET /v1/bandits.
type BanditList struct {
	Bandits []BanditStatus `json:"bandits"`
}

// MaxRewardBatch bounds one POST /v1/endpoints/{endpoint}/rewards.
const MaxRewardBatch = 1000

// RewardsRequest is POST /v1/endpoints/{endpoint}/rewards.
type RewardsRequest struct {
	Rewards []Reward `json:"rewards"`
}

// Reward is one reward: ID makes a retried post count once; User (the
// sticky key) or RequestID (x-request-id) names what earned it.
type Reward struct {
	ID        string          `json:"id"`
	User      string          `json:"user,omitempty"`
	RequestID string          `json:"request_id,omitempty"`
	Value     json.RawMessage `json:"value"`
}

// RewardsResult answers a rewards post.
type RewardsResult struct {
	Accepted   int             `json:"accepted"`
	Duplicates int             `json:"duplicates"`
	Refused    []RefusedReward `json:"refused,omitempty"`
}

// RefusedReward is a reward that could not be joined to a variant.
type RefusedReward struct {
	Index  int    `json:"index"`
	ID     string `json:"id"`
	Reason string `json:"reason"`
}
