package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a config file, located by line and field path.
type Error struct {
	File  string
	Line  int    // 0 when unknown
	Field string // e.g. endpoints[0].variants[1].weight; "" for file-level problems
	Msg   string
}

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if b.Len() == 0 {
		b.WriteString("config")
	}
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one config, reported all at once.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads, defaults and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes YAML (source names the file in errors), applies defaults and
// validates. The error, if any, is an Errors listing every problem.
func Parse(source string, data []byte) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Errors{{File: source, Msg: "config is empty"}}
		}
		e, _ := typeError(source, err.Error())
		return nil, Errors{e}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{{File: source, Line: extra.Line, Msg: "more than one YAML document; a config is one document"}}
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil, Errors{{File: source, Line: doc.Line, Msg: "config must be a YAML mapping"}}
	}

	c := &Config{Source: source, lines: map[string]int{}}
	var errs Errors
	// Walk the tree first: it records every field's line and reports unknown
	// fields by path, which yaml's own KnownFields cannot do.
	values := map[string]*yaml.Node{}
	walk(doc, reflect.TypeOf(Config{}), "", c.lines, values, func(line int, field, msg string) {
		errs = append(errs, Error{File: source, Line: line, Field: field, Msg: msg})
	})
	if err := doc.Decode(c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, m := range te.Errors {
				e, col := typeError(source, m)
				e.Field = fieldAt(values, e.Line, col, e.Msg)
				errs = append(errs, e)
			}
		} else {
			e, _ := typeError(source, err.Error())
			errs = append(errs, e)
		}
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		// Report structural and semantic problems together, but drop a
		// semantic complaint about a field that already has a structural one
		// or about the list holding a malformed element (a malformed backend
		// is dropped by the decoder and would also look like a missing one).
		structural := errs
		for _, e := range err.(Errors) {
			if !coveredBy(structural, e.Field) {
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, errs
	}
	return c, nil
}

func coveredBy(errs Errors, field string) bool {
	for _, e := range errs {
		if e.Field != "" && (e.Field == field || strings.HasPrefix(field, e.Field+".") || strings.HasPrefix(field, e.Field+"[") ||
			strings.HasPrefix(e.Field, field+"[")) {
			return true
		}
	}
	return false
}

// fieldAt finds the field a decoder error is about, so that type errors
// name their field too: by column when known, else by the offending value
// quoted in the message, else the deepest field on that line.
func fieldAt(values map[string]*yaml.Node, line, col int, msg string) string {
	best, bestScore := "", -1
	for p, n := range values {
		if n.Line != line {
			continue
		}
		score := strings.Count(p, ".") + strings.Count(p, "[")
		switch {
		case col > 0 && n.Column == col:
			score += 1000
		case col == 0 && n.Kind == yaml.ScalarNode && strings.Contains(msg, "`"+n.Value+"`"):
			score += 1000
		}
		if score > bestScore || (score == bestScore && p < best) {
			best, bestScore = p, score
		}
	}
	return best
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

var columnRE = regexp.MustCompile(`^column (\d+): (.*)$`)

// typeError turns a yaml "line N: msg" string into an Error; the column is
// present only in messages from this package's own unmarshalers.
func typeError(source, msg string) (Error, int) {
	m := yamlLineRE.FindStringSubmatch(msg)
	if m == nil {
		return Error{File: source, Msg: strings.TrimPrefix(msg, "yaml: ")}, 0
	}
	line, _ := strconv.Atoi(m[1])
	e, col := Error{File: source, Line: line, Msg: m[2]}, 0
	if c := columnRE.FindStringSubmatch(e.Msg); c != nil {
		col, _ = strconv.Atoi(c[1])
		e.Msg = c[2]
	}
	return e, col
}

func sortErrors(errs Errors) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
}

// walk records the line of every field under n and reports keys that the Go
// type t has no field for.
func walk(n *yaml.Node, t reflect.Type, path string, lines map[string]int, values map[string]*yaml.Node, report func(line int, field, msg string)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if path != "" {
		values[path] = n
		if _, seen := lines[path]; !seen {
			lines[path] = n.Line
		}
	}
	if n.Kind == yaml.AliasNode {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode || reflect.PointerTo(t).Implements(unmarshalerType) {
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			child := join(path, key.Value)
			ft, ok := fields[key.Value]
			if !ok {
				report(key.Line, child, fmt.Sprintf("unknown field %q (known: %s)", key.Value, knownList(fields)))
				continue
			}
			lines[child] = key.Line
			walk(val, ft, child, lines, values, report)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range n.Content {
			walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), lines, values, report)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			child := join(path, key.Value)
			lines[child] = key.Line
			walk(val, t.Elem(), child, lines, values, report)
		}
	}
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "-" || !f.IsExported() {
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		m[tag] = f.Type
	}
	return m
}

func knownList(fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// UnmarshalYAML reads "host:port". A malformed value is reported with its
// line and decoding goes on, so every problem is listed at once.
func (b *Backend) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, "backend must be a \"host:port\" string")
	}
	parsed, err := ParseBackend(n.Value)
	if err != nil {
		return lineError(n, err.Error())
	}
	*b = parsed
	return nil
}

// MarshalYAML writes the backend as "host:port".
func (b Backend) MarshalYAML() (any, error) { return b.String(), nil }

// ParseBackend parses a "host:port" backend address.
func ParseBackend(s string) (Backend, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return Backend{}, fmt.Errorf("backend %q is not host:port", s)
	}
	if host == "" {
		return Backend{}, fmt.Errorf("backend %q has no host", s)
	}
	if !validHost(host) {
		return Backend{}, fmt.Errorf("backend %q: host %q is neither an IP address nor a DNS name", s, host)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return Backend{}, fmt.Errorf("backend %q: port must be 1-65535", s)
	}
	return Backend{Host: host, Port: port}, nil
}

var dnsNameRE = regexp.MustCompile(`^([a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)*\.?$`)

func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	return len(h) <= 253 && dnsNameRE.MatchString(h)
}

// UnmarshalYAML reads a Go duration string such as "50ms" or "720h".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, "duration must be a string such as \"50ms\" or \"24h\"")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return lineError(n, fmt.Sprintf("invalid duration %q (use e.g. \"50ms\", \"24h\")", n.Value))
	}
	*d = Duration(v)
	return nil
}

func lineError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: column %d: %s", n.Line, n.Column, msg)}}
}
