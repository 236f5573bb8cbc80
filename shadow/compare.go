package shadow

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
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
		a, okA, errA := jsonField(primary, c.jsonField)
		b, okB, errB := jsonField(shadow, c.jsonField)
		switch {
		case errA != nil || errB != nil, okA != okB:
			return reasonField // unparsable, or the field in one answer only
		case okA && !c.valuesAgree(a, b):
			return reasonField
		}
		// Missing in both answers: they agree there is no such field.
	case c.protoField != nil:
		a, okA, errA := protoField(primary, c.protoField)
		b, okB, errB := protoField(shadow, c.protoField)
		if errA != nil || errB != nil {
			return reasonField
		}
		// proto3 does not serialize default values: an absent field is
		// the zero value of the other answer's kind.
		switch {
		case !okA && !okB:
		case !okA:
			a = zeroLike(b)
		case !okB:
			b = zeroLike(a)
		}
		if !c.valuesAgree(a, b) {
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
	na, aJSON := a.(json.Number)
	nb, bJSON := b.(json.Number)
	if aJSON && bJSON {
		// Decimal JSON numbers are compared exactly, so that 1.1 and 1.0
		// differ by exactly 0.1 and large integers stay distinct.
		x, okX := bigNumber(na)
		y, okY := bigNumber(nb)
		if okX && okY {
			if x.Cmp(y) == 0 {
				return true
			}
			d, _ := new(big.Float).Sub(x, y).Float64()
			return math.Abs(d) <= c.tolerance
		}
		return na == nb
	}
	fa, aNum := number(a)
	fb, bNum := number(b)
	if aNum && bNum {
		return withinTolerance(fa, fb, c.tolerance)
	}
	return jsonEqual(a, b)
}

// bigNumber parses a JSON number exactly enough for comparisons.
func bigNumber(n json.Number) (*big.Float, bool) {
	f, _, err := big.ParseFloat(string(n), 10, 256, big.ToNearestEven)
	return f, err == nil
}

// withinTolerance: |a-b| <= tol, with a few units in the last place of
// slack so that a difference written exactly as the tolerance (a float32
// 0.75 vs 0.5 with 0.25, 1.1 vs 1.0 with 0.1) agrees although binary
// floating point cannot always represent it.
func withinTolerance(a, b, tol float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	if a == b {
		return true // equal infinities too
	}
	d := math.Abs(a - b)
	if math.IsNaN(d) || math.IsInf(d, 0) {
		return false
	}
	const ulps = 4 * 2.220446049250313e-16
	return d <= tol+ulps*max(math.Abs(a), math.Abs(b), tol)
}

// number reads a decoded JSON number (json.Number) or a protobuf scalar
// (float64).
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case json.Number:
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, false
		}
		return f, true
	}
	return 0, false
}

// equalNumbers compares exactly: integers beyond 2^53 that float64 would
// merge stay distinct; 1, 1.0 and 1e0 are equal.
func equalNumbers(a, b any) bool {
	na, okA := a.(json.Number)
	nb, okB := b.(json.Number)
	if okA && okB {
		if na == nb {
			return true
		}
		x, okX := bigNumber(na)
		y, okY := bigNumber(nb)
		return okX && okY && x.Cmp(y) == 0
	}
	fa, _ := number(a)
	fb, _ := number(b)
	return fa == fb
}

// jsonEqual compares decoded JSON values: objects by keys, arrays in
// order, numbers by value (1 and 1.0 are equal).
func jsonEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number, float64:
		if _, ok := number(b); !ok {
			return false
		}
		return equalNumbers(a, b)
	default: // string, bool, nil
		return a == b
	}
}

func zeroLike(v any) any {
	if _, ok := v.(string); ok {
		return ""
	}
	return float64(0)
}

// decodeJSON parses one JSON value, numbers kept as json.Number.
func decodeJSON(body []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
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
	va, errA := decodeJSON(a)
	vb, errB := decodeJSON(b)
	if errA != nil || errB != nil {
		return false
	}
	return jsonEqual(va, vb)
}

// jsonField extracts a value by path. ok is false when the path is not
// in the body; err when the body is not JSON.
func jsonField(body []byte, path []config.PathStep) (v any, ok bool, err error) {
	if v, err = decodeJSON(body); err != nil {
		return nil, false, err
	}
	for _, st := range path {
		if st.Key != "" {
			m, isObj := v.(map[string]any)
			if !isObj {
				return nil, false, nil
			}
			if v, ok = m[st.Key]; !ok {
				return nil, false, nil
			}
			continue
		}
		a, isArr := v.([]any)
		if !isArr || st.Index >= len(a) {
			return nil, false, nil
		}
		v = a[st.Index]
	}
	return v, true, nil
}

// errProto: the answer is not a protobuf message, or the path meets a
// scalar where it expects a nested message.
var errProto = errors.New("not a protobuf message along the field path")

// protoField walks a serialized message by field numbers. The last
// field's value: varint → integer, fixed64 → double, fixed32 → float
// (numbers as float64), bytes → string. The last occurrence wins, as
// protobuf's own merge rule says for scalars. ok is false when the
// field (or a message on its path) is absent.
func protoField(msg []byte, path []int) (any, bool, error) {
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
				return nil, false, errProto
			}
			b = b[l:]
			match := int(n) == num
			var m int
			switch typ {
			case protowire.VarintType:
				var x uint64
				x, m = protowire.ConsumeVarint(b)
				if match && m >= 0 {
					found, val, sub = true, float64(int64(x)), nil
				}
			case protowire.Fixed64Type:
				var x uint64
				x, m = protowire.ConsumeFixed64(b)
				if match && m >= 0 {
					found, val, sub = true, math.Float64frombits(x), nil
				}
			case protowire.Fixed32Type:
				var x uint32
				x, m = protowire.ConsumeFixed32(b)
				if match && m >= 0 {
					found, val, sub = true, float64(math.Float32frombits(x)), nil
				}
			case protowire.BytesType:
				var x []byte
				x, m = protowire.ConsumeBytes(b)
				if match && m >= 0 {
					found, val, sub = true, string(x), x
				}
			default:
				m = protowire.ConsumeFieldValue(n, typ, b)
			}
			if m < 0 {
				return nil, false, errProto
			}
			b = b[m:]
		}
		if !found {
			return nil, false, nil
		}
		if depth == len(path)-1 {
			return val, true, nil
		}
		if sub == nil {
			return nil, false, errProto // a scalar where a message was expected
		}
		msg = sub
	}
	return nil, false, nil
}

// maxRendered bounds each body in a sample.
const maxRendered = 4 << 10

const (
	redacted        = "[redacted]"
	unparsableProto = "[unparsable protobuf]"
)

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
		if s == unparsableProto && len(c.redactProto) == 0 {
			s = "base64:" + base64.StdEncoding.EncodeToString(body)
		}
	} else {
		s = c.renderJSON(body)
	}
	return truncate(s, maxRendered)
}

// redacts reports whether any field is redacted.
func (c *comparer) redacts() bool { return len(c.redactJSON)+len(c.redactProto) > 0 }

const truncated = "…[truncated]"

// truncate bounds s to n bytes (marker included) without splitting a
// UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len(truncated)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncated
}

func (c *comparer) renderJSON(body []byte) string {
	v, err := decodeJSON(body)
	if err != nil {
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
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return "[unrenderable JSON]"
	}
	return strings.TrimSuffix(out.String(), "\n")
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
			return unparsableProto
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
			case depth < 16 && len(x) > 0 && isMessage(x):
				sb.WriteString(renderProto(x, path, redact, depth+1))
			default:
				sb.WriteString("base64:" + base64.StdEncoding.EncodeToString(x))
			}
		default:
			m = protowire.ConsumeFieldValue(n, typ, b)
			sb.WriteString("?")
		}
		if m < 0 {
			return unparsableProto
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
