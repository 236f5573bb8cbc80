package admin

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:18002":   true,
		"127.0.0.53:1":      true,
		"localhost:18002":   true,
		"[::1]:18002":       true,
		"0.0.0.0:18002":     false,
		"[::]:18002":        false,
		":18002":            false, // empty host: every interface
		"192.168.1.20:8080": false,
		"10.0.0.1:80":       false,
		"example.com:80":    false,
		"127.0.0.1":         false, // no port: not an address we can judge
		"":                  false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestResolveToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr, file, env string
		want            string
		err             error // nil, ErrTokenRequired, or errAny
	}{
		{"127.0.0.1:1", "", "", "", nil},                // loopback: no token needed
		{"[::1]:1", "", "", "", nil},                    //
		{"localhost:1", "", "", "", nil},                //
		{"0.0.0.0:1", "", "", "", ErrTokenRequired},     // exposed without a token: refused
		{"[::]:1", "", "", "", ErrTokenRequired},        //
		{":1", "", "", "", ErrTokenRequired},            //
		{"192.168.1.5:1", "", "", "", ErrTokenRequired}, //
		{"0.0.0.0:1", "", " env-tok ", "env-tok", nil},  // environment token
		{"0.0.0.0:1", file, "env-tok", "s3cret", nil},   // the file wins over the environment
		{"127.0.0.1:1", file, "", "s3cret", nil},        // a token on loopback is still enforced
		{"0.0.0.0:1", empty, "env-tok", "", errAny},     // an empty file is an error, not "no token"
		{"0.0.0.0:1", filepath.Join(dir, "missing"), "", "", errAny},
	}
	for _, c := range cases {
		got, err := ResolveToken(c.addr, c.file, c.env)
		switch {
		case c.err == nil && err != nil:
			t.Errorf("ResolveToken(%q, %q, %q): %v", c.addr, c.file, c.env, err)
		case c.err == ErrTokenRequired && !errors.Is(err, ErrTokenRequired):
			t.Errorf("ResolveToken(%q, %q, %q) = %q, %v; want ErrTokenRequired", c.addr, c.file, c.env, got, err)
		case c.err == errAny && err == nil:
			t.Errorf("ResolveToken(%q, %q, %q) = %q, want an error", c.addr, c.file, c.env, got)
		case err == nil && got != c.want:
			t.Errorf("ResolveToken(%q, %q, %q) = %q, want %q", c.addr, c.file, c.env, got, c.want)
		}
	}
}

var errAny = errors.New("any error")
