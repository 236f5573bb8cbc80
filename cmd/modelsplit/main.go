// Command modelsplit rolls out ML model variants behind Envoy. See README.md.
package main

import (
	"context"
	"os"

	"github.com/modelsplit/modelsplit/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}))
}
