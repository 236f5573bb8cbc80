// Package cli is the modelsplit command line: it parses arguments, runs one
// subcommand and returns the exit code. main is a one-line call into Main so
// that tests run the whole program in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitError  = 1 // the command ran and failed (invalid config, server error)
	ExitUsage  = 2 // bad arguments
	ExitSignal = 130
)

// Env is what a command sees of the outside world.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads environment variables (os.Getenv in main).
	Getenv func(string) string
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the xDS, ext_proc and admin servers for a config", runServe},
		{"validate", "check a config file and print every problem with its line", runValidate},
		{"render", "print the Envoy resources a config produces for a node kind", runRender},
		{"bootstrap", "print an Envoy bootstrap that points at this server", runBootstrap},
		{"status", "show endpoints, weights, live shares and shadows of a running server", runStatus},
		{"set-weights", "change an endpoint's weights live", runSetWeights},
		{"promote", "send all of an endpoint's traffic to one variant", runPromote},
		{"rollback", "restore an endpoint's previous weights", runRollback},
		{"reset", "drop live overrides: the config file is in force again", runReset},
		{"shadow", "pause or resume a shadow, or list its disagreements", runShadow},
		{"rollout", "start, follow, pause, resume, promote or abort an endpoint's rollout plan", runRollout},
		{"bandit", "show bandits: per arm rewards, mean, probability of being best, weight", runBandit},
		{"reward", "post rewards to an endpoint's bandit for users or requests", runReward},
		{"audit", "list recent live changes", runAudit},
		{"version", "print the version", runVersion},
	}
}

// Version is set at build time with -ldflags "-X .../cli.Version=...".
var Version = "dev"

// usageError marks errors caused by bad arguments (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// Main runs the command named by args[0] (args excludes the program name).
func Main(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(env.Stderr)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		var ue usageError
		switch {
		case err == nil:
			return ExitOK
		case errors.Is(err, flag.ErrHelp):
			return ExitOK
		case errors.As(err, &ue):
			fmt.Fprintf(env.Stderr, "modelsplit %s: %v\nRun 'modelsplit %s -h' for usage.\n", c.name, err, c.name)
			return ExitUsage
		case errors.Is(err, errReported):
			return ExitError
		default:
			fmt.Fprintf(env.Stderr, "modelsplit %s: %v\n", c.name, err)
			return ExitError
		}
	}
	fmt.Fprintf(env.Stderr, "modelsplit: unknown command %q\n\n", args[0])
	printUsage(env.Stderr)
	return ExitUsage
}

// errReported means the command already printed its problems.
var errReported = errors.New("reported")

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "modelsplit rolls out ML model variants behind Envoy: sticky A/B splits, canaries, shadows.")
	fmt.Fprintln(w, "\nUsage: modelsplit <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'modelsplit <command> -h' for a command's flags.")
}

// newFlags makes a FlagSet whose -h output explains the command.
func newFlags(env Env, name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: modelsplit %s %s\n\n%s\n\nFlags:\n", name, synopsis, strings.TrimSpace(description))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and rejects stray positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func runVersion(_ context.Context, env Env, args []string) error {
	fs := newFlags(env, "version", "", "Print the modelsplit version.")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, "modelsplit", Version)
	return nil
}
