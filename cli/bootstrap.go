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
Each Envoy needs its own -node-id. With -xds-ca-file Envoy connects over TLS
(and presents -xds-cert-file/-xds-key-file when modelsplit has
tls.client_ca_file); the files are read by Envoy, so give their paths on
Envoy's host.`)
	o := xds.DefaultBootstrapOptions()
	fs.StringVar(&o.NodeID, "node-id", o.NodeID, "this Envoy's node `id` (unique per Envoy)")
	fs.StringVar(&o.NodeCluster, "node-cluster", o.NodeCluster, "node `cluster` name")
	fs.StringVar(&o.XDSAddress, "xds", o.XDSAddress, "`address` where Envoy reaches modelsplit's xDS server")
	fs.BoolVar(&o.Delta, "delta", false, "use incremental (delta) xDS instead of state of the world")
	fs.IntVar(&o.AdminPort, "admin-port", o.AdminPort, "Envoy admin `port` on 127.0.0.1 (0 disables)")
	var t xds.BootstrapTLS
	fs.StringVar(&t.CAFile, "xds-ca-file", "", "CA bundle `file` (on Envoy's host) that verifies modelsplit's certificate; turns on TLS to xDS")
	fs.StringVar(&t.CertFile, "xds-cert-file", "", "Envoy's client certificate `file` (on Envoy's host), for modelsplit's tls.client_ca_file")
	fs.StringVar(&t.KeyFile, "xds-key-file", "", "Envoy's client key `file` (on Envoy's host)")
	fs.StringVar(&t.ServerName, "xds-server-name", "", "`name` modelsplit's certificate holds, sent as SNI (default: the -xds host)")
	fs.Int64Var(&o.MaxConnections, "max-connections", o.MaxConnections,
		"overload manager: most downstream connections Envoy holds at once, past it new ones are closed (`n`; 0 disables)")
	fs.Int64Var(&o.MaxHeapBytes, "max-heap-bytes", o.MaxHeapBytes,
		"overload manager: Envoy's heap budget in `bytes`; at 95% it shrinks its heap, at 98% it answers new requests 503 (0 disables; set below the container's memory limit)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if t != (xds.BootstrapTLS{}) {
		if t.CAFile == "" {
			return usagef("-xds-cert-file, -xds-key-file and -xds-server-name need -xds-ca-file (TLS to xDS)")
		}
		o.TLS = &t
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
