package cohort

import (
	"strings"
	"testing"
)

func TestCookieValue(t *testing.T) {
	cases := []struct {
		header, name, want string
		ok                 bool
	}{
		{"uid=abc", "uid", "abc", true},
		{"theme=dark; uid=abc; x=1", "uid", "abc", true},
		{"xuid=no; uid=yes", "uid", "yes", true},
		{`uid="quoted"`, "uid", "quoted", true},
		{"  uid = spaced ;", "uid", "", false}, // a space before '=' makes another name
		{"uid=", "uid", "", false},
		{"uid", "uid", "", false},
		{"a=1; b=2", "uid", "", false},
		{"", "uid", "", false},
		{"uid=first; uid=second", "uid", "first", true},
	}
	for _, c := range cases {
		got, ok := cookieValue(c.header, c.name)
		if got != c.want || ok != c.ok {
			t.Errorf("cookieValue(%q, %q) = %q, %v; want %q, %v", c.header, c.name, got, ok, c.want, c.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { cookieValue("theme=dark; uid=abc; x=1", "uid") }); n != 0 {
		t.Errorf("cookieValue allocates %v times", n)
	}
}

// Any Cookie header, however malformed, yields a substring or nothing.
func FuzzCookieValue(f *testing.F) {
	for _, s := range []string{"uid=abc", `a=1; uid="x"; b`, ";;=;", "uid=\"", "uid"} {
		f.Add(s, "uid")
	}
	f.Fuzz(func(t *testing.T, header, name string) {
		v, ok := cookieValue(header, name)
		if ok && (v == "" || !strings.Contains(header, v)) {
			t.Fatalf("cookieValue(%q, %q) = %q, not a non-empty part of the header", header, name, v)
		}
	})
}
