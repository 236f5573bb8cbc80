package cli

import (
	"context"

	"github.com/modelsplit/modelsplit/xds"
)

func runBootstrap(_ context.Context, env Env, args []string) error {
	fs := newFlags(env, "bootstrap", "[flags] > envoy.yaml", `
Print an Envoy bootstrap (YAML) that takes its listeners, routes, clusters and
endpoints from modelsplit's xDS server over ADS. Start Envoy with it:
  modelsplit bootstrap -node-id edge-1 > envoy.yaml && envoy -c envoy.yaml
Each Envoy needs its own -node-id.`)
	o := xds.DefaultBootstrapOptions()
	fs.StringVar(&o.NodeID, "node-id", o.NodeID, "this Envoy's node `id` (unique per Envoy)")
	fs.StringVar(&o.NodeCluster, "node-cluster", o.NodeCluster, "node `cluster` name")
	fs.StringVar(&o.XDSAddress, "xds", o.XDSAddress, "`address` where Envoy reaches modelsplit's xDS server")
	fs.BoolVar(&o.Delta, "delta", false, "use incremental (delta) xDS instead of state of the world")
	fs.IntVar(&o.AdminPort, "admin-port", o.AdminPort, "Envoy admin `port` on 127.0.0.1 (0 disables)")
	fs.Int64Var(&o.MaxConnections, "max-connections", o.MaxConnections,
		"overload manager: most downstream connections Envoy holds at once, past it new ones are closed (`n`; 0 disables)")
	fs.Int64Var(&o.MaxHeapBytes, "max-heap-bytes", o.MaxHeapBytes,
		"overload manager: Envoy's heap budget in `bytes`; at 95% it shrinks its heap, at 98% it answers new requests 503 (0 disables; set below the container's memory limit)")
	if err := parse(fs, args); err != nil {
		return err
	}
	b, err := xds.Bootstrap(o)
	if err != nil {
		return usagef("%v", err)
	}
	if err := xds.Check(xds.Resources{"bootstrap": {b}}); err != nil {
		return err
	}
	out, err := xds.RenderBootstrapYAML(b)
	if err != nil {
		return err
	}
	_, err = env.Stdout.Write(out)
	return err
}
