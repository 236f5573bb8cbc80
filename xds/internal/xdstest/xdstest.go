// Package xdstest holds the configs the translator's and the server's tests
// and benchmarks share.
package xdstest

import (
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/modelsplit/modelsplit/config"
)

// Dir is the translator's directory: the test configs name their TLS
// files relative to it.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "translate")
}

// Case is the path of a config in xds/translate/testdata/in, from any test
// directory.
func Case(name string) string { return filepath.Join(Dir(), "testdata", "in", name) }

// LoadCase loads a config file or fails the test.
func LoadCase(t testing.TB, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cfg
}

// BenchConfig is n endpoints × 4 variants; routeLookup makes them gRPC
// endpoints with RLS (twice the clusters for gRPC nodes).
func BenchConfig(t testing.TB, n int, routeLookup bool) *config.Config {
	t.Helper()
	cfg := &config.Config{}
	for i := 0; i < n; i++ {
		e := config.Endpoint{Name: "model-" + strconv.Itoa(i), Match: config.Match{PathPrefix: "/m" + strconv.Itoa(i)},
			Sticky: config.Sticky{Header: "x-user-id"}}
		if routeLookup {
			e.Protocol, e.RouteLookup = config.ProtocolGRPC, true
			e.Match.PathPrefix = "/pkg" + strconv.Itoa(i) + ".Model/"
		}
		for v := 0; v < 4; v++ {
			e.Variants = append(e.Variants, config.Variant{Name: "v" + strconv.Itoa(v), Weight: 25,
				Backends: []config.Backend{{Host: "10.1." + strconv.Itoa(i%250) + "." + strconv.Itoa(v+1), Port: 8000 + v}}})
		}
		cfg.Endpoints = append(cfg.Endpoints, e)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}
