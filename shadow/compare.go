package shadow

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/modelsplit/modelsplit/config"
)

// comparer decides whether two answers agree. It is built once per
// shadow config.
type comparer struct {
	grpc        bool
	jsonField   []config.PathStep
	protoField  []int
	tolerance   float64
	redactJSON  [][]config.PathStep
	redactProto [][]int
}

func newComparer(c *config.Compare, grpc bool) (*comparer, error) {
	cmp := &comparer{grpc: grpc, tolerance: c.Tolerance}
	var err error
	if c.Field != "" {
		if grpc {
			cmp.protoField, err = config.ParseProtoPath(c.Field)
		} else {
			cmp.jsonField, err = config.ParseJSONPath(c.Field)
		}
		if err != nil {
			return nil, err
		}
	}
	for _, r := range c.Redact {
		if grpc {
			p, err := config.ParseProtoPath(r)
			if err != nil {
				return nil, err
			}
			cmp.redactProto = append(cmp.redactProto, p)
		} else {
			p, err := config.ParseJSONPath(r)
			if err != nil {
				return nil, err
			}
			cmp.redactJSON = append(cmp.redactJSON, p)
		}
	}
	return cmp, nil
}

// Disagreement reasons (api.Sample.Reason).
const (
	reasonStatus = "status"
	reasonField  = "field"
	reasonBody   = "body"
)

// compare returns "" when the answers agree, else the reason.
func (c *comparer) compare(primaryStatus int, primary []byte, shadowStatus int, shadow []byte) string {
	if primaryStatus != shadowStatus {
		return reasonStatus
	}
	switch {
	case c.jsonField != nil:
		a, okA := jsonField(primary, c.jsonField)
		b, okB := jsonField(shadow, c.jsonField)
		if !okA || !okB || !c.valuesAgree(a, b) {
			return reasonField
		}
	case c.protoField != nil:
		a, okA := protoField(primary, c.protoField)
		b, okB := protoField(shadow, c.protoField)
		if !okA || !okB || !c.valuesAgree(a, b) {
			return reasonField
		}
	default:
		if !bodiesEqual(primary, shadow, c.grpc) {
			return reasonBody
		}
	}
	return ""
}

// valuesAgree: numbers within the tolerance, everything else equal.
func (c *comparer) valuesAgree(a, b any) bool {
	fa, aNum := a.(float64)
	fb, bNum := b.(float64)
	if aNum && bNum {
		if math.IsNaN(fa) || math.IsNaN(fb) {
			return math.IsNaN(fa) && math.IsNaN(fb)
		}
		return fa == fb || math.Abs(fa-fb) <= c.tolerance
	}
	return reflect.DeepEqual(a, b)
}

// bodiesEqual compares whole answers: JSON by value (key order and
// spacing do not matter), anything else byte for byte.
func bodiesEqual(a, b []byte, grpc bool) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if grpc {
		return false
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// jsonField extracts a value by path; numbers are float64.
func jsonField(body []byte, path []config.PathStep) (any, bool) {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return nil, false
	}
	for _, st := range path {
		if st.Key != "" {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, false
			}
			if v, ok = m[st.Key]; !ok {
				return nil, false
			}
			continue
		}
		a, ok := v.([]any)
		if !ok || st.Index >= len(a) {
			return nil, false
		}
		v = a[st.Index]
	}
	return v, true
}

// protoField walks a serialized message by field numbers. The last
// field's value: varint → integer, fixed64 → double, fixed32 → float
// (numbers as float64), bytes → string. The last occurrence wins, as
// protobuf's own merge rule says for scalars.
func protoField(msg []byte, path []int) (any, bool) {
	for depth, num := range path {
		var (
			found bool
			val   any
			sub   []byte
		)
		b := msg
		for len(b) > 0 {
			n, typ, l := protowire.ConsumeTag(b)
			if l < 0 {
				return nil, false
			}
			b = b[l:]
			var m int
			switch typ {
			case protowire.VarintType:
				x, k := protowire.ConsumeVarint(b)
				m = k
				if int(n) == num && k >= 0 {
					found, val = true, float64(int64(x))
				}
			case protowire.Fixed64Type:
				x, k := protowire.ConsumeFixed64(b)
				m = k
				if int(n) == num && k >= 0 {
					found, val = true, math.Float64frombits(x)
				}
			case protowire.Fixed32Type:
				x, k := protowire.ConsumeFixed32(b)
				m = k
				if int(n) == num && k >= 0 {
					found, val = true, float64(math.Float32frombits(x))
				}
			case protowire.BytesType:
				x, k := protowire.ConsumeBytes(b)
				m = k
				if int(n) == num && k >= 0 {
					found, sub, val = true, x, string(x)
				}
			default:
				m = protowire.ConsumeFieldValue(n, typ, b)
			}
			if m < 0 {
				return nil, false
			}
			b = b[m:]
		}
		if !found {
			return nil, false
		}
		if depth == len(path)-1 {
			return val, true
		}
		if sub == nil && val != nil {
			return nil, false // a scalar where a message was expected
		}
		msg = sub
	}
	return nil, false
}

// maxRendered bounds each body in a sample.
const maxRendered = 4 << 10

const redacted = "[redacted]"

// render turns a body into sample text with the configured fields
// redacted. A body that cannot be parsed to redact is withheld whole
// rather than risk showing a redacted field.
func (c *comparer) render(body []byte) string {
	if len(body) == 0 {
		return ""
	}
	var s string
	if c.grpc {
		s = renderProto(body, nil, c.redactProto, 0)
	} else {
		s = c.renderJSON(body)
	}
	if len(s) > maxRendered {
		s = s[:maxRendered] + "…[truncated]"
	}
	return s
}

func (c *comparer) renderJSON(body []byte) string {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		if len(c.redactJSON) > 0 {
			return "[redacted: not JSON]"
		}
		if utf8.Valid(body) {
			return string(body)
		}
		return "base64:" + base64.StdEncoding.EncodeToString(body)
	}
	for _, p := range c.redactJSON {
		v = redactJSON(v, p)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func redactJSON(v any, path []config.PathStep) any {
	if len(path) == 0 {
		return redacted
	}
	st := path[0]
	if st.Key != "" {
		if m, ok := v.(map[string]any); ok {
			if child, ok := m[st.Key]; ok {
				m[st.Key] = redactJSON(child, path[1:])
			}
		}
		return v
	}
	if a, ok := v.([]any); ok && st.Index < len(a) {
		a[st.Index] = redactJSON(a[st.Index], path[1:])
	}
	return v
}

// renderProto prints a message as field-number: value pairs, redacting
// the configured paths. Length-delimited fields print as nested messages
// when they parse as one and a redaction path goes through them, as text
// when printable, else as base64.
func renderProto(msg []byte, prefix []int, redact [][]int, depth int) string {
	var sb strings.Builder
	sb.WriteString("{")
	b := msg
	first := true
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return "[unparsable protobuf]"
		}
		b = b[l:]
		path := append(append([]int(nil), prefix...), int(n))
		if !first {
			sb.WriteString(", ")
		}
		first = false
		fmt.Fprintf(&sb, "%d: ", n)
		var m int
		switch {
		case matchesPath(path, redact):
			m = protowire.ConsumeFieldValue(n, typ, b)
			sb.WriteString(redacted)
		case typ == protowire.VarintType:
			var x uint64
			x, m = protowire.ConsumeVarint(b)
			fmt.Fprintf(&sb, "%d", int64(x))
		case typ == protowire.Fixed64Type:
			var x uint64
			x, m = protowire.ConsumeFixed64(b)
			fmt.Fprintf(&sb, "%g", math.Float64frombits(x))
		case typ == protowire.Fixed32Type:
			var x uint32
			x, m = protowire.ConsumeFixed32(b)
			fmt.Fprintf(&sb, "%g", math.Float32frombits(x))
		case typ == protowire.BytesType:
			var x []byte
			x, m = protowire.ConsumeBytes(b)
			switch {
			case m < 0:
			case depth < 16 && throughPath(path, redact) && isMessage(x):
				sb.WriteString(renderProto(x, path, redact, depth+1))
			case throughPath(path, redact):
				sb.WriteString(redacted) // cannot look inside: withhold
			case utf8.Valid(x) && isPrintable(x):
				fmt.Fprintf(&sb, "%q", x)
			default:
				sb.WriteString("base64:" + base64.StdEncoding.EncodeToString(x))
			}
		default:
			m = protowire.ConsumeFieldValue(n, typ, b)
			sb.WriteString("?")
		}
		if m < 0 {
			return "[unparsable protobuf]"
		}
		b = b[m:]
	}
	sb.WriteString("}")
	return sb.String()
}

func matchesPath(path []int, redact [][]int) bool {
	for _, r := range redact {
		if len(r) == len(path) && prefixOf(r, path) {
			return true
		}
	}
	return false
}

// throughPath: a redaction path continues below path.
func throughPath(path []int, redact [][]int) bool {
	for _, r := range redact {
		if len(r) > len(path) && prefixOf(path, r) {
			return true
		}
	}
	return false
}

func prefixOf(p, of []int) bool {
	for i := range p {
		if p[i] != of[i] {
			return false
		}
	}
	return true
}

func isMessage(b []byte) bool {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 || n == 0 {
			return false
		}
		b = b[l:]
		m := protowire.ConsumeFieldValue(n, typ, b)
		if m < 0 {
			return false
		}
		b = b[m:]
	}
	return true
}

func isPrintable(b []byte) bool {
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\t' {
			return false
		}
	}
	return true
}
