package config_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/modelsplit/modelsplit/config"
)

func TestParseJSONPath(t *testing.T) {
	type st = config.PathStep
	for _, tc := range []struct {
		in      string
		want    []config.PathStep
		wantErr string // substring of the error; "" means valid
	}{
		{in: "label", want: []st{{Key: "label"}}},
		{in: "$.label", want: []st{{Key: "label"}}},
		{in: ".label", want: []st{{Key: "label"}}},
		{in: "predictions[0].score", want: []st{{Key: "predictions"}, {Index: 0}, {Key: "score"}}},
		{in: "a.b[2][1]", want: []st{{Key: "a"}, {Key: "b"}, {Index: 2}, {Index: 1}}},
		{in: "$[3].x", want: []st{{Index: 3}, {Key: "x"}}},
		{in: "[0]", want: []st{{Index: 0}}},
		{in: "a.b.c", want: []st{{Key: "a"}, {Key: "b"}, {Key: "c"}}},
		{in: "outputs[10]", want: []st{{Key: "outputs"}, {Index: 10}}},
		{in: "user-id", want: []st{{Key: "user-id"}}},

		{in: "", wantErr: "empty JSON field path"},
		{in: "$", wantErr: "empty JSON field path"},
		{in: "$.", wantErr: "empty JSON field path"},
		{in: "a..b", wantErr: "empty key"},
		{in: "a.", wantErr: "empty key"},
		{in: "a[0", wantErr: "unclosed '['"},
		{in: "a[x]", wantErr: `index "x" is not a non-negative integer`},
		{in: "a[-1]", wantErr: `index "-1" is not a non-negative integer`},
		{in: "a[]", wantErr: `index "" is not a non-negative integer`},
		{in: "a[0]b", wantErr: `unexpected "b" after an index`},
		{in: "a[0]x[1]", wantErr: `unexpected "x[1]" after an index`},
	} {
		got, err := config.ParseJSONPath(tc.in)
		if tc.wantErr == "" {
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseJSONPath(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseJSONPath(%q) = %+v, want an error about %s", tc.in, got, tc.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.in) {
			t.Errorf("ParseJSONPath(%q) error %q: want it to name the path and say %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestParseProtoPath(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []int
		wantErr string
	}{
		{in: "1", want: []int{1}},
		{in: "2.1", want: []int{2, 1}},
		{in: "3.10.536870911", want: []int{3, 10, 536870911}},

		{in: "", wantErr: "empty protobuf field path"},
		{in: "0", wantErr: `"0" is not a field number (1-536870911)`},
		{in: "536870912", wantErr: `"536870912" is not a field number`},
		{in: "-1", wantErr: `"-1" is not a field number`},
		{in: "1..2", wantErr: `"" is not a field number`},
		{in: "1.", wantErr: `"" is not a field number`},
		{in: "label", wantErr: `"label" is not a field number`},
		{in: "1.score", wantErr: `"score" is not a field number`},
		{in: "1[0]", wantErr: `"1[0]" is not a field number`},
	} {
		got, err := config.ParseProtoPath(tc.in)
		if tc.wantErr == "" {
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseProtoPath(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseProtoPath(%q) = %v, want an error", tc.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ParseProtoPath(%q) error %q, want it to say %q", tc.in, err, tc.wantErr)
		}
	}
}
