package config

import (
	"fmt"
	"strconv"
	"strings"
)

// PathStep is one step of a JSON field path: an object key, or an array
// index when Key is empty.
type PathStep struct {
	Key   string
	Index int
}

// ParseJSONPath parses a dotted JSON field path such as "label",
// "predictions[0].score" or "a.b[2][1]". A leading "$." is accepted.
func ParseJSONPath(p string) ([]PathStep, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
	if s == "" {
		return nil, fmt.Errorf("empty JSON field path %q", p)
	}
	var out []PathStep
	for _, part := range strings.Split(s, ".") {
		key, rest, indexed := strings.Cut(part, "[")
		if key == "" && !indexed {
			return nil, fmt.Errorf("JSON field path %q has an empty key (use a.b or a[0].b)", p)
		}
		if key != "" {
			out = append(out, PathStep{Key: key})
		}
		if !indexed {
			continue
		}
		rest = "[" + rest
		for rest != "" {
			if rest[0] != '[' {
				return nil, fmt.Errorf("JSON field path %q: unexpected %q after an index", p, rest)
			}
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("JSON field path %q: unclosed '['", p)
			}
			n, err := strconv.Atoi(rest[1:end])
			if err != nil || n < 0 {
				return nil, fmt.Errorf("JSON field path %q: index %q is not a non-negative integer", p, rest[1:end])
			}
			out = append(out, PathStep{Index: n})
			rest = rest[end+1:]
		}
	}
	return out, nil
}

// ParseProtoPath parses a dotted path of protobuf field numbers such as
// "1" or "2.1" (field 1 of the message in field 2).
func ParseProtoPath(p string) ([]int, error) {
	if p == "" {
		return nil, fmt.Errorf("empty protobuf field path")
	}
	var out []int
	for _, part := range strings.Split(p, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 || n > 536870911 {
			return nil, fmt.Errorf("protobuf field path %q: %q is not a field number (1-536870911); gRPC answers are compared by field numbers such as 1 or 2.1", p, part)
		}
		out = append(out, n)
	}
	return out, nil
}
