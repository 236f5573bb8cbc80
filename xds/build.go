package xds

import (
	"errors"

	"github.com/modelsplit/modelsplit/config"
)

// Build translates the config into the complete resource set for one node
// kind. Pure: no I/O, same input gives the same output.
func Build(cfg *config.Config, kind NodeKind) (Resources, error) {
	return nil, errors.New("xds.Build: not implemented yet")
}

// Check validates every resource recursively with Envoy's proto rules
// (unpacking Any fields) and checks cross-resource references.
func Check(res Resources) error {
	return errors.New("xds.Check: not implemented yet")
}
