package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/modelsplit/modelsplit/xds"
)

// Every config the golden files pin (xds/translate/testdata/in) loads into a real
// Envoy with zero NACKs: no update_rejected in Envoy, no NACK counted by
// modelsplit, the gateway listener, routes and every cluster in place, and
// the ext_proc cluster health-checked healthy.
// Only the listen addresses and the gateway port are rewritten (to free
// loopback ports; a unix-socket ext_proc stays a unix socket).
func TestEnvoyLoadsEveryTestdataConfig(t *testing.T) {
	envoyBinary(t)
	inputs, err := filepath.Glob("../xds/translate/testdata/in/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no testdata configs: %v", err)
	}
	for _, in := range inputs {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".yaml"), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := yaml.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			p := newPorts(t)
			gwPort, _ := freePort()
			listen, _ := doc["listen"].(map[string]any)
			extproc := fmt.Sprintf("127.0.0.1:%d", p.extproc)
			if s, _ := listen["extproc"].(string); strings.HasPrefix(s, "unix://") {
				dir, err := os.MkdirTemp("", "ms") // short: unix socket paths are limited to ~100 bytes
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(dir) })
				extproc = "unix://" + filepath.Join(dir, "extproc.sock")
			}
			doc["listen"] = map[string]any{"xds": fmt.Sprintf("127.0.0.1:%d", p.xds), "extproc": extproc, "admin": fmt.Sprintf("127.0.0.1:%d", p.admin)}
			gw, _ := doc["gateway"].(map[string]any)
			if gw == nil {
				gw = map[string]any{}
			}
			gw["port"], gw["address"] = gwPort, "127.0.0.1"
			doc["gateway"] = gw
			var bootstrapArgs []string
			if tlsDoc, ok := doc["tls"].(map[string]any); ok {
				bootstrapArgs = tlsTestdata(t, tlsDoc, gw)
			}
			out, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			cfg := tempConfig(t, string(out))
			srv := startServe(t, cfg, p)
			e := startEnvoy(t, envoyOptions{XDS: fmt.Sprintf("127.0.0.1:%d", p.xds), BootstrapArgs: bootstrapArgs})

			want := clusterNames(t, cfg)
			deadline := time.Now().Add(20 * time.Second)
			for {
				v := e.xdsVersions()
				got := e.loadedClusters()
				missing := []string{}
				for _, c := range want {
					if !got[c] {
						missing = append(missing, c)
					}
				}
				if v["listener/"+xds.GatewayListenerName] != "" && v["route/"+xds.GatewayRouteName] != "" && len(missing) == 0 {
					t.Logf("Envoy holds the listener and routes at %s and all %d clusters", v["route/"+xds.GatewayRouteName], len(want))
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Envoy did not load the config within 20s: versions %v, clusters missing %v", v, missing)
				}
				time.Sleep(50 * time.Millisecond)
			}
			e.assertNoRejections()
			// The ext_proc cluster's gRPC health check reaches modelsplit
			// (TCP or unix socket) and finds it serving.
			e.waitStat("cluster."+xds.ExtProcClusterName+".membership_healthy", 10*time.Second, func(v uint64) bool { return v == 1 })
			if n, _ := srv.metric("modelsplit_xds_nacks_total"); n != 0 {
				t.Errorf("modelsplit counted %v NACKs", n)
			}
			if r, err := newGatewayClient(gwPort).get("/no-such-endpoint"); err != nil || r.status != 404 {
				t.Errorf("a path no endpoint matches: %v, status %d; want 404 from Envoy's listener", err, r.status)
			}
		})
	}
}

// tlsTestdata makes a testdata config with tls: runnable from test/: its
// file paths (relative to xds/) become absolute, ext_proc is dialled at the
// rewritten loopback address (the test server certificate holds 127.0.0.1),
// and Envoy's bootstrap gets the matching TLS flags (mTLS with the test
// client certificate when the config asks for client certificates).
func tlsTestdata(t *testing.T, tlsDoc, gw map[string]any) []string {
	t.Helper()
	abs := func(m map[string]any, key string) string {
		rel, _ := m[key].(string)
		if rel == "" {
			return ""
		}
		a, err := filepath.Abs(filepath.Join("..", "xds", "translate", rel))
		if err != nil {
			t.Fatal(err)
		}
		m[key] = a
		return a
	}
	for _, k := range []string{"cert_file", "key_file", "client_ca_file"} {
		abs(tlsDoc, k)
	}
	envoyTLS, _ := tlsDoc["envoy"].(map[string]any)
	if envoyTLS == nil {
		t.Fatal("tls: without tls.envoy")
	}
	args := []string{"-xds-ca-file", abs(envoyTLS, "ca_file")}
	if cert, key := abs(envoyTLS, "cert_file"), abs(envoyTLS, "key_file"); cert != "" {
		args = append(args, "-xds-cert-file", cert, "-xds-key-file", key)
	}
	delete(gw, "extproc_address")
	delete(envoyTLS, "server_name")
	return args
}

// loadedClusters is the set of cluster names Envoy holds (static and dynamic).
func (e *envoyProc) loadedClusters() map[string]bool {
	out := map[string]bool{}
	for _, c := range asList(e.configDump()["configs"]) {
		for _, key := range []string{"dynamic_active_clusters", "static_clusters"} {
			for _, dc := range asList(c[key]) {
				if cl, ok := dc["cluster"].(map[string]any); ok {
					name, _ := cl["name"].(string)
					out[name] = true
				}
			}
		}
	}
	return out
}

// clusterNames is what `modelsplit render` says Envoy should hold.
func clusterNames(t testing.TB, cfg string) []string {
	t.Helper()
	raw, err := exec.Command(os.Getenv(envBinary), "render", "-config", cfg, "-node-kind", "envoy").Output()
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	out := string(raw)
	var names []string
	dec := yaml.NewDecoder(strings.NewReader(out)) // one document per resource type
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			break
		}
		list, _ := doc["Clusters"].([]any)
		for _, c := range list {
			if m, ok := c.(map[string]any); ok {
				if n, ok := m["name"].(string); ok {
					names = append(names, n)
				}
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("render printed no clusters:\n%s", out)
	}
	return names
}
