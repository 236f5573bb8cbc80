package control

import (
	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control/httpapi"
	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/control/persist"
)

// The names below keep what service and cmd use from control where it
// was before the split: the rules live in package live, the stores in
// package persist, the HTTP API in package httpapi.

// Requester says who asked for a change (for the audit).
type Requester = live.Requester

// State is everything live control has changed.
type State = live.State

// Persister stores State (persist.Persister).
type Persister = persist.Persister

// FilePersister keeps state in a local JSON file (one replica).
type FilePersister = persist.FilePersister

// RedisPersister keeps state under one Redis key shared by replicas.
type RedisPersister = persist.RedisPersister

// ErrConflict and ErrNotState are the stores' errors (see persist).
var (
	ErrConflict = persist.ErrConflict
	ErrNotState = persist.ErrNotState
)

// CheckStateFile is what serve checks before it uses a state file.
func CheckStateFile(path string) error { return persist.CheckStateFile(path) }

// ValidateWeights checks a full weight set for e and names the problem.
func ValidateWeights(e *config.Endpoint, w map[string]int) error { return live.ValidateWeights(e, w) }

// Register adds the live-control routes to the admin handler.
func (c *Controller) Register(h *admin.Handler) { httpapi.Register(h, c) }
