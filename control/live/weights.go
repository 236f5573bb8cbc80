package live

import (
	"fmt"
	"sort"
	"strings"

	"github.com/modelsplit/modelsplit/config"
)

// ValidateWeights checks a full weight set for e and names every problem
// (ErrInvalid), in a stable order whatever the map order.
func ValidateWeights(e *config.Endpoint, w map[string]int) error {
	if len(w) == 0 {
		return Errorf(ErrInvalid, `body: "weights" is required, e.g. {"weights": {%s}}`, exampleWeights(e))
	}
	var problems []string
	total := 0
	for name, v := range w {
		if _, ok := e.Variant(name); !ok {
			problems = append(problems, fmt.Sprintf("weights: unknown variant %q (variants: %s)", name, strings.Join(VariantNames(e), ", ")))
			continue
		}
		switch {
		case v < 0:
			problems = append(problems, fmt.Sprintf("weights.%s: must not be negative, got %d", name, v))
		case v > config.MaxWeight:
			problems = append(problems, fmt.Sprintf("weights.%s: must be at most %d, got %d", name, config.MaxWeight, v))
		default:
			total += v
		}
	}
	for _, v := range e.Variants {
		if _, ok := w[v.Name]; !ok {
			problems = append(problems, fmt.Sprintf("weights: variant %q is missing: list every variant (%s), 0 drains one", v.Name, strings.Join(VariantNames(e), ", ")))
		}
	}
	if len(problems) == 0 && total == 0 {
		problems = append(problems, "weights: sum to zero: at least one variant needs a positive weight")
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return Errorf(ErrInvalid, "%s", strings.Join(problems, "; "))
	}
	return nil
}

func exampleWeights(e *config.Endpoint) string {
	parts := make([]string, 0, len(e.Variants))
	for _, v := range e.Variants {
		parts = append(parts, fmt.Sprintf("%q: %d", v.Name, v.Weight))
	}
	return strings.Join(parts, ", ")
}

// WeightsOf is an endpoint's weights by variant name.
func WeightsOf(e *config.Endpoint) map[string]int {
	m := make(map[string]int, len(e.Variants))
	for _, v := range e.Variants {
		m[v.Name] = v.Weight
	}
	return m
}

// VariantNames lists e's variants in config order.
func VariantNames(e *config.Endpoint) []string {
	out := make([]string, 0, len(e.Variants))
	for _, v := range e.Variants {
		out = append(out, v.Name)
	}
	return out
}

// EndpointNames lists cfg's endpoints in config order.
func EndpointNames(cfg *config.Config) []string {
	out := make([]string, 0, len(cfg.Endpoints))
	for _, e := range cfg.Endpoints {
		out = append(out, e.Name)
	}
	return out
}

// ShadowIndex is the index of e's shadow called name, -1 if none.
func ShadowIndex(e *config.Endpoint, name string) int {
	for i := range e.Shadows {
		if e.Shadows[i].Name == name {
			return i
		}
	}
	return -1
}

// UnknownEndpoint is the error for a name cfg does not have; it lists
// the names it has, so a typo shows.
func UnknownEndpoint(cfg *config.Config, name string) error {
	return Errorf(ErrUnknownEndpoint, "unknown endpoint %q (endpoints: %s)", name, strings.Join(EndpointNames(cfg), ", "))
}
