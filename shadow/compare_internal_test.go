package shadow

import (
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/modelsplit/modelsplit/config"
)

func mustComparer(t testing.TB, c config.Compare, grpc bool) *comparer {
	t.Helper()
	cmp, err := newComparer(&c, grpc)
	if err != nil {
		t.Fatal(err)
	}
	return cmp
}

func TestCompareJSON(t *testing.T) {
	for _, tc := range []struct {
		field     string
		tolerance float64
		a, b      string
		want      string
	}{
		{"predictions[0].score", 0.01, `{"predictions":[{"score":0.5}]}`, `{"predictions":[{"score":0.51}]}`, ""},
		{"predictions[0].score", 0.01, `{"predictions":[{"score":0.5}]}`, `{"predictions":[{"score":0.52}]}`, "field"},
		{"predictions[1]", 0, `{"predictions":[1]}`, `{"predictions":[1,2]}`, "field"},   // missing in one
		{"predictions[1]", 0, `{"predictions":[1]}`, `{"predictions":[3]}`, ""},          // missing in both
		{"id", 0, `{"id":12345678901234567890}`, `{"id":12345678901234567891}`, "field"}, // beyond float64
		{"id", 0, `{"id":1e2}`, `{"id":100}`, ""},
		{"x", 0, `{"x":true}`, `{"x":"true"}`, "field"},
		{"x", 0, `{"x":null}`, `{"x":null}`, ""},
		{"x", 0, `{"x":[1,{"a":2}]}`, `{"x":[1.0,{"a":2}]}`, ""},
		{"x", 0, `{"x":1} trailing`, `{"x":1}`, "field"}, // not one JSON value
		{"", 0, `{"a":1,"b":[2]}`, ` { "b" : [2.0], "a" : 1 } `, ""},
		{"", 0, `not json`, `not json`, ""},
		{"", 0, `not json`, `not json!`, "body"},
		{"", 0, `{"a":1}`, `{"a":1,"b":null}`, "body"},
	} {
		cmp := mustComparer(t, config.Compare{Field: tc.field, Tolerance: tc.tolerance}, false)
		if got := cmp.compare(200, []byte(tc.a), 200, []byte(tc.b)); got != tc.want {
			t.Errorf("field %q: %s vs %s = %q, want %q", tc.field, tc.a, tc.b, got, tc.want)
		}
		if got := cmp.compare(200, []byte(tc.b), 200, []byte(tc.a)); got != tc.want {
			t.Errorf("field %q: not symmetric for %s vs %s", tc.field, tc.b, tc.a)
		}
	}
}

func TestWithinTolerance(t *testing.T) {
	for _, tc := range []struct {
		a, b, tol float64
		want      bool
	}{
		{1.0, 1.1, 0.1, true}, {0.7, 0.6, 0.1, true}, {100.5, 100.0, 0.5, true}, {1e9 + 1, 1e9, 1, true},
		{1.0, 1.1000001, 0.1, false}, {1, 1.0000000001, 0, false}, {0, 1e-300, 0, false},
		{math.NaN(), math.NaN(), 1, true}, {math.NaN(), 1, math.Inf(1), false},
		{math.Inf(1), math.Inf(1), 0, true}, {math.Inf(1), math.Inf(-1), 1, false}, {math.Inf(1), 1, 1, false},
	} {
		if got := withinTolerance(tc.a, tc.b, tc.tol); got != tc.want {
			t.Errorf("withinTolerance(%v, %v, %v) = %v, want %v", tc.a, tc.b, tc.tol, got, tc.want)
		}
	}
}

func msg(fields ...func([]byte) []byte) []byte {
	var b []byte
	for _, f := range fields {
		b = f(b)
	}
	return b
}

func varint(n protowire.Number, v uint64) func([]byte) []byte {
	return func(b []byte) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, n, protowire.VarintType), v)
	}
}

func str(n protowire.Number, s string) func([]byte) []byte {
	return func(b []byte) []byte {
		return protowire.AppendString(protowire.AppendTag(b, n, protowire.BytesType), s)
	}
}

func float(n protowire.Number, f float32) func([]byte) []byte {
	return func(b []byte) []byte {
		return protowire.AppendFixed32(protowire.AppendTag(b, n, protowire.Fixed32Type), math.Float32bits(f))
	}
}

func sub(n protowire.Number, m []byte) func([]byte) []byte {
	return func(b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, n, protowire.BytesType), m)
	}
}

func TestCompareProto(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		tolerance   float64
		a, b        []byte
		want        string
	}{
		{"varint equal", "1", 0, msg(varint(1, 7)), msg(varint(1, 7), str(2, "x")), ""},
		{"varint differs", "1", 0, msg(varint(1, 7)), msg(varint(1, 8)), "field"},
		{"varint within tolerance", "1", 1, msg(varint(1, 7)), msg(varint(1, 8)), ""},
		{"negative int64", "1", 0, msg(varint(1, uint64(1<<64-1))), msg(varint(1, uint64(1<<64-1))), ""},
		{"float32", "3", 0.25, msg(float(3, 0.5)), msg(float(3, 0.75)), ""},
		{"float32 above", "3", 0.2, msg(float(3, 0.5)), msg(float(3, 0.75)), "field"},
		{"string", "2", 0, msg(str(2, "cat")), msg(str(2, "dog")), "field"},
		{"nested", "4.1", 0, msg(sub(4, msg(str(1, "cat")))), msg(varint(1, 3), sub(4, msg(str(1, "cat")))), ""},
		{"nested differs", "4.1", 0, msg(sub(4, msg(str(1, "cat")))), msg(sub(4, msg(str(1, "dog")))), "field"},
		{"last occurrence wins", "1", 0, msg(varint(1, 1), varint(1, 2)), msg(varint(1, 2)), ""},
		{"default left out of one", "1", 0, msg(str(2, "x")), msg(varint(1, 0)), ""},
		{"default vs non-zero", "1", 0, msg(str(2, "x")), msg(varint(1, 5)), "field"},
		{"empty string default", "2", 0, nil, msg(str(2, "")), ""},
		{"absent from both", "9", 0, msg(varint(1, 1)), msg(varint(1, 2)), ""},
		{"scalar on a message path", "1.1", 0, msg(varint(1, 1)), msg(varint(1, 1)), "field"},
		{"not protobuf", "1", 0, []byte{0xff, 0xff}, msg(varint(1, 1)), "field"},
		{"whole message", "", 0, msg(varint(1, 1)), msg(varint(1, 1)), ""},
		{"whole message differs", "", 0, msg(varint(1, 1)), msg(varint(1, 2)), "body"},
	} {
		cmp := mustComparer(t, config.Compare{Field: tc.field, Tolerance: tc.tolerance}, true)
		if got := cmp.compare(0, tc.a, 0, tc.b); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
		if got := cmp.compare(0, tc.b, 0, tc.a); got != tc.want {
			t.Errorf("%s: not symmetric", tc.name)
		}
	}
	cmp := mustComparer(t, config.Compare{Field: "1"}, true)
	if got := cmp.compare(0, nil, int(14), nil); got != "status" {
		t.Errorf("OK vs UNAVAILABLE: %q, want status", got)
	}
}

func TestRenderProto(t *testing.T) {
	cmp := mustComparer(t, config.Compare{Redact: []string{"4.1", "2"}}, true)
	m := msg(varint(1, 3), str(2, "secret"), str(2, "secret2"), sub(4, msg(str(1, "secret-user"), varint(2, 9))), sub(5, []byte{0xff, 0x01}))
	want := `{1: 3, 2: [redacted], 2: [redacted], 4: {1: [redacted], 2: 9}, 5: base64:/wE=}`
	if got := cmp.render(m); got != want {
		t.Errorf("render\n%s\nwant\n%s", got, want)
	}
	// Field 4 is not a message here: withheld whole, not shown.
	if got := cmp.render(msg(str(4, "\xffsecret"))); strings.Contains(got, "secret") {
		t.Errorf("render leaked %s", got)
	}
	if got := cmp.render([]byte{0xff}); got != unparsableProto {
		t.Errorf("unparsable with redaction: %s", got)
	}
	plain := mustComparer(t, config.Compare{}, true)
	if got := plain.render([]byte{0xff}); got != "base64:/w==" {
		t.Errorf("unparsable without redaction: %s", got)
	}
}

// FuzzCompare: comparison and rendering never panic, comparison is
// symmetric, an answer agrees with itself when compared whole, and
// rendered samples stay bounded, valid UTF-8.
func FuzzCompare(f *testing.F) {
	f.Add("label", "user.id", 0.1, false, []byte(`{"label":"a","user":{"id":"u"}}`), []byte(`{"label":"b"}`), 200, 200)
	f.Add("predictions[0].score", "", 0.05, false, []byte(`{"predictions":[{"score":1}]}`), []byte(`{"predictions":[{"score":1.05}]}`), 200, 200)
	f.Add("", "a[1]", 0.0, false, []byte(`[1,2]`), []byte(`not json`), 200, 500)
	f.Add("2.1", "1", 0.5, true, msg(varint(1, 3), sub(2, msg(float(1, 0.5)))), msg(sub(2, msg(float(1, 1)))), 0, 0)
	f.Add("1", "3.1", 0.0, true, msg(str(1, "x"), sub(3, msg(str(1, "u")))), []byte{0x0a, 0x80}, 0, 2)
	f.Fuzz(func(t *testing.T, field, redact string, tol float64, grpc bool, a, b []byte, sa, sb int) {
		c := config.Compare{Field: field, Tolerance: tol}
		if redact != "" {
			c.Redact = []string{redact}
		}
		cmp, err := newComparer(&c, grpc)
		if err != nil {
			return
		}
		r1 := cmp.compare(sa, a, sb, b)
		r2 := cmp.compare(sb, b, sa, a)
		if (r1 == "") != (r2 == "") {
			t.Fatalf("not symmetric: %q vs %q", r1, r2)
		}
		if field == "" && cmp.compare(sa, a, sa, a) != "" {
			t.Fatalf("an answer disagrees with itself")
		}
		for _, body := range [][]byte{a, b} {
			s := cmp.render(body)
			if len(s) > maxRendered || !utf8.ValidString(s) {
				t.Fatalf("render: %d bytes, valid UTF-8 %v", len(s), utf8.ValidString(s))
			}
		}
	})
}
