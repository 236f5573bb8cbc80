package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds"
)

func runValidate(_ context.Context, env Env, args []string) error {
	fs := newFlags(env, "validate", "-config FILE", `
Check a config file: YAML syntax, unknown fields, names, weights, addresses,
rules, and that the Envoy and gRPC resources it produces pass Envoy's own
validation. Every problem is printed with file, line and field; the exit code
is 1 when there is any.`)
	path := fs.String("config", "", "config `file` to check (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return usagef("-config is required")
	}
	cfg, err := loadAndBuild(*path)
	if err != nil {
		printConfigError(env, err)
		return errReported
	}
	// Not errors: Envoy takes them (its limit is far larger), but a
	// proxyless grpc-go client with the default receive limit does not.
	for _, kind := range xds.Kinds {
		res, _ := xds.Build(cfg, kind)
		for _, o := range xds.OversizedResources(res, kind, xds.GRPCDefaultReceiveLimit) {
			fmt.Fprintf(env.Stderr, "%s: warning: %s\n", *path, o)
		}
	}
	variants := 0
	for _, e := range cfg.Endpoints {
		variants += len(e.Variants)
	}
	fmt.Fprintf(env.Stdout, "%s: OK (%d endpoints, %d variants)\n", *path, len(cfg.Endpoints), variants)
	return nil
}

// loadAndBuild loads a config and checks that both node kinds' resources
// build and validate, so `validate` catches what `serve` would refuse.
func loadAndBuild(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	for _, kind := range xds.Kinds {
		res, err := xds.Build(cfg, kind)
		if err == nil {
			err = xds.Check(res)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: resources for %s nodes: %w", path, kind, err)
		}
	}
	return cfg, nil
}

func printConfigError(env Env, err error) {
	var errs config.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(env.Stderr, e.Error())
		}
		fmt.Fprintf(env.Stderr, "%d problem(s) found\n", len(errs))
		return
	}
	fmt.Fprintln(env.Stderr, err)
}

func runRender(_ context.Context, env Env, args []string) error {
	fs := newFlags(env, "render", "-config FILE [-node-kind envoy|grpc]", `
Print, as YAML, the xDS resources (listeners, routes, clusters, endpoints) that
modelsplit serves for a config to one kind of node: "envoy" for Envoy proxies,
"grpc" for proxyless gRPC clients.`)
	path := fs.String("config", "", "config `file` (required)")
	kind := fs.String("node-kind", string(xds.KindEnvoy), "node `kind`: envoy or grpc")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return usagef("-config is required")
	}
	nk := xds.NodeKind(*kind)
	if nk != xds.KindEnvoy && nk != xds.KindGRPC {
		return usagef("-node-kind must be envoy or grpc, got %q", *kind)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigError(env, err)
		return errReported
	}
	res, err := xds.Build(cfg, nk)
	if err != nil {
		return err
	}
	if err := xds.Check(res); err != nil {
		return err
	}
	out, err := xds.RenderYAML(res)
	if err != nil {
		return err
	}
	_, err = env.Stdout.Write(out)
	return err
}
