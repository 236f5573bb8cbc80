package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// modelsplitBin is the product's binary, built from the parent module by
// TestMain: the rendered config and flags are checked against it.
var modelsplitBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "modelsplit-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	modelsplitBin = filepath.Join(dir, "modelsplit")
	build := exec.Command("go", "build", "-o", modelsplitBin, "./cmd/modelsplit")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building modelsplit:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// renderCase is one way the chart is used: a values set, rendered.
type renderCase struct {
	name   string
	values map[string]any
	yaml   string
}

func chartValues(t *testing.T, y string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// cases are the committed manifests and a few chart installs.
func cases(t *testing.T) []renderCase {
	t.Helper()
	var out []renderCase
	ms, err := Manifests(".")
	if err != nil || len(ms) == 0 {
		t.Fatalf("no manifests (%v)", err)
	}
	for _, m := range ms {
		b, err := os.ReadFile(m.Name)
		if err != nil {
			t.Fatalf("%s: %v (run make manifests)", m.Name, err)
		}
		vals, err := ReadValues(m.Values)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, renderCase{name: "manifests/" + filepath.Base(m.Name), values: vals, yaml: string(b)})
	}
	for _, c := range []struct{ name, values string }{
		{"helm gateway, token in values", "admin: {token: s3cret}\n"},
		{"helm gateway, external redis, 3 replicas", "admin: {token: s3cret}\nreplicaCount: 3\nredis: {url: \"redis://redis.data.svc:6379/2\"}\n"},
		{"helm controlPlane, no network policy", "mode: controlPlane\nadmin: {token: s3cret, allowedHosts: [modelsplit.example.com]}\nnetworkPolicy: {enabled: false}\n"},
	} {
		vals := chartValues(t, c.values)
		y, err := Render(ChartDir, vals, "ms", "prod")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		out = append(out, renderCase{name: c.name, values: vals, yaml: y})
	}
	return out
}

// TestManifestsAreTheChartRendered: the plain manifests are exactly the
// chart rendered with their values files, so they cannot drift apart.
func TestManifestsAreTheChartRendered(t *testing.T) {
	ms, err := Manifests(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		want, err := RenderManifest(".", m)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(m.Name)
		if string(got) != want {
			t.Errorf("%s is not the chart rendered with %s: run make manifests", m.Name, m.Values)
		}
	}
}

// TestChartLint runs Helm's own linter on the chart.
func TestChartLint(t *testing.T) {
	for _, vals := range []string{"admin: {token: s3cret}\n", "mode: controlPlane\nadmin: {existingSecret: tok}\n", "redis: {enabled: true}\nadmin: {token: x}\n"} {
		l := lint.All(ChartDir, chartValues(t, vals), "prod", false)
		for _, m := range l.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("helm lint (%q): %s", vals, m)
			}
		}
	}
}

// TestChartRefusesWhatCannotRun: no token, or an unknown mode, fail at
// render time with a message that says what to set.
func TestChartRefusesWhatCannotRun(t *testing.T) {
	for vals, want := range map[string]string{
		"{}":                                 "admin.token (or admin.existingSecret) is required",
		"mode: sidecar\nadmin: {token: x}\n": `mode must be gateway or controlPlane, got "sidecar"`,
	} {
		_, err := Render(ChartDir, chartValues(t, vals), "ms", "prod")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("values %q: %v, want an error with %q", vals, err, want)
		}
	}
}

// objects is one rendering decoded strictly into the Kubernetes types.
type objects struct {
	deployments  []*appsv1.Deployment
	services     []*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	pdbs         []*policyv1.PodDisruptionBudget
	policies     []*networkingv1.NetworkPolicy
	accounts     map[string]*corev1.ServiceAccount
	unknownKinds []string
}

// decode splits a multi-document YAML and decodes each object into its
// Kubernetes Go type, refusing unknown and duplicate fields.
func decode(t *testing.T, all string) objects {
	t.Helper()
	o := objects{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}, accounts: map[string]*corev1.ServiceAccount{}}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(all, -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		// As the API server decodes strictly: field names are case
		// sensitive (encoding/json's are not: readOnlyRootFileSystem
		// would pass), unknown and duplicate fields fail.
		strict := func(into any) {
			js, err := yaml.YAMLToJSONStrict([]byte(doc))
			if err != nil {
				t.Fatalf("document %d (%s %s): %v\n%s", i, head.APIVersion, head.Kind, err, doc)
			}
			strictErrs, err := kjson.UnmarshalStrict(js, into)
			if err == nil && len(strictErrs) > 0 {
				err = errors.Join(strictErrs...)
			}
			if err != nil {
				t.Fatalf("document %d (%s %s) does not decode strictly: %v\n%s", i, head.APIVersion, head.Kind, err, doc)
			}
		}
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 Deployment":
			d := &appsv1.Deployment{}
			strict(d)
			o.deployments = append(o.deployments, d)
		case "v1 Service":
			s := &corev1.Service{}
			strict(s)
			o.services = append(o.services, s)
		case "v1 ConfigMap":
			c := &corev1.ConfigMap{}
			strict(c)
			o.configMaps[c.Name] = c
		case "v1 Secret":
			s := &corev1.Secret{}
			strict(s)
			o.secrets[s.Name] = s
		case "v1 ServiceAccount":
			s := &corev1.ServiceAccount{}
			strict(s)
			o.accounts[s.Name] = s
		case "policy/v1 PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			strict(p)
			o.pdbs = append(o.pdbs, p)
		case "networking.k8s.io/v1 NetworkPolicy":
			p := &networkingv1.NetworkPolicy{}
			strict(p)
			o.policies = append(o.policies, p)
		default:
			o.unknownKinds = append(o.unknownKinds, head.APIVersion+" "+head.Kind)
		}
	}
	return o
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func container(p *corev1.PodSpec, name string) *corev1.Container {
	for i := range p.Containers {
		if p.Containers[i].Name == name {
			return &p.Containers[i]
		}
	}
	return nil
}

func portNamed(p *corev1.PodSpec, name string) (int32, bool) {
	for _, c := range p.Containers {
		for _, cp := range c.Ports {
			if cp.Name == name {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return int32(n)
}

// modelsplitConfig is the part of the config file the checks read.
type modelsplitConfig struct {
	Listen struct{ XDS, ExtProc, Admin string } `json:"listen"`
	Admin  struct {
		TokenFile    string   `json:"token_file"`
		StateFile    string   `json:"state_file"`
		AllowedHosts []string `json:"allowed_hosts"`
	} `json:"admin"`
	Store   struct{ Redis string } `json:"store"`
	Gateway struct {
		Port           int32  `json:"port"`
		ExtProcAddress string `json:"extproc_address"`
	} `json:"gateway"`
}

// TestRenderedObjects decodes every object of every rendering strictly
// and checks what must hold for it to run: security settings, requests,
// probes on the paths and port the binary serves, Services and policies
// naming real ports, the config valid for `modelsplit validate`, the
// Envoy bootstrap exactly `modelsplit bootstrap`'s, and the binary
// started with the rendered args on the rendered files.
func TestRenderedObjects(t *testing.T) {
	for _, c := range cases(t) {
		t.Run(c.name, func(t *testing.T) {
			o := decode(t, c.yaml)
			if len(o.unknownKinds) > 0 {
				t.Errorf("objects of kinds the checks do not know: %v", o.unknownKinds)
			}
			gateway := c.values["mode"] == nil || c.values["mode"] == "gateway"
			var ms *appsv1.Deployment
			for _, d := range o.deployments {
				if container(&d.Spec.Template.Spec, "modelsplit") != nil {
					ms = d
				}
				checkPodSecurity(t, d)
				if !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
					t.Errorf("deployment %s: selector %v does not select its pods %v", d.Name, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
				}
			}
			if ms == nil {
				t.Fatal("no Deployment runs modelsplit")
			}
			pod := &ms.Spec.Template.Spec
			if gateway != (container(pod, "envoy") != nil) {
				t.Errorf("gateway mode %v, but the pod's containers are %v", gateway, pod.Containers)
			}
			redisWanted := c.values["redis"] != nil && (c.values["redis"].(map[string]any)["enabled"] == true)
			var redisDeployed bool
			for _, d := range o.deployments {
				redisDeployed = redisDeployed || container(&d.Spec.Template.Spec, "redis") != nil
			}
			if redisWanted != redisDeployed {
				t.Errorf("redis.enabled %v, Redis deployed %v", redisWanted, redisDeployed)
			}

			// The modelsplit container: flags, mounts, config.
			mc := container(pod, "modelsplit")
			cfgFile, cfgText, mounts := renderedConfig(t, o, pod, mc)
			// Only what the checks need: every key is the binary's to
			// judge (modelsplit validate, below).
			var cfg modelsplitConfig
			if err := yaml.Unmarshal([]byte(cfgText), &cfg); err != nil {
				t.Fatal(err)
			}
			if p, ok := portNamed(pod, "admin"); !ok || p != portOf(t, cfg.Listen.Admin) {
				t.Errorf("container port admin %d, config listen.admin %s", p, cfg.Listen.Admin)
			}
			for _, probe := range []struct {
				name string
				p    *corev1.Probe
				path string
			}{{"startup", mc.StartupProbe, "/healthz"}, {"liveness", mc.LivenessProbe, "/healthz"}, {"readiness", mc.ReadinessProbe, "/readyz"}} {
				if probe.p == nil || probe.p.HTTPGet == nil || probe.p.HTTPGet.Path != probe.path || probe.p.HTTPGet.Port != intstr.FromString("admin") {
					t.Errorf("modelsplit %s probe %+v, want GET %s on port admin", probe.name, probe.p, probe.path)
				}
			}
			if gateway {
				ec := container(pod, "envoy")
				if p, _ := portNamed(pod, "gateway"); p != cfg.Gateway.Port || p == 0 {
					t.Errorf("envoy port gateway %d, config gateway.port %d", p, cfg.Gateway.Port)
				}
				if !strings.HasPrefix(cfg.Listen.XDS, "127.0.0.1:") || !strings.HasPrefix(cfg.Listen.ExtProc, "127.0.0.1:") {
					t.Errorf("gateway mode: xDS and ext_proc should stay on the pod's loopback, got %+v", cfg.Listen)
				}
				checkEnvoyBootstrap(t, o, pod, ec, cfg)
			} else {
				for _, n := range []struct{ port, addr string }{{"xds", cfg.Listen.XDS}, {"extproc", cfg.Listen.ExtProc}} {
					if p, ok := portNamed(pod, n.port); !ok || p != portOf(t, n.addr) {
						t.Errorf("container port %s %d, config %s", n.port, p, n.addr)
					}
				}
				if !strings.Contains(cfg.Gateway.ExtProcAddress, ".svc:") {
					t.Errorf("controlPlane: gateway.extproc_address %q is not the Service's name", cfg.Gateway.ExtProcAddress)
				}
			}
			url := ""
			if r, ok := c.values["redis"].(map[string]any); ok {
				url, _ = r["url"].(string)
			}
			switch {
			case redisWanted && !strings.HasPrefix(cfg.Store.Redis, "redis://"):
				t.Errorf("redis.enabled but store.redis is %q", cfg.Store.Redis)
			case url != "" && cfg.Store.Redis != url:
				t.Errorf("redis.url %q but store.redis %q", url, cfg.Store.Redis)
			case cfg.Store.Redis == "" && (cfg.Admin.StateFile == "" || mounts[filepath.Dir(cfg.Admin.StateFile)].EmptyDir == nil):
				t.Errorf("no Redis: the state file %q must be on a writable emptyDir (the ConfigMap is read-only)", cfg.Admin.StateFile)
			}
			if tok := mounts[filepath.Dir(cfg.Admin.TokenFile)]; tok.Secret == nil {
				t.Errorf("admin.token_file %s is not on a Secret volume", cfg.Admin.TokenFile)
			} else if _, ok := o.secrets[tok.Secret.SecretName]; !ok {
				existing := c.values["admin"].(map[string]any)["existingSecret"]
				if existing != tok.Secret.SecretName {
					t.Errorf("the token Secret %s is neither rendered nor admin.existingSecret (%v)", tok.Secret.SecretName, existing)
				}
			}

			// Services, PDB, policies point at these pods and their ports.
			checkServices(t, o, ms, gateway)
			if len(o.pdbs) != 1 || !selects(o.pdbs[0].Spec.Selector.MatchLabels, ms.Spec.Template.Labels) {
				t.Errorf("want one PodDisruptionBudget selecting the pods, got %d", len(o.pdbs))
			}
			checkPolicies(t, o, c, ms, gateway)

			// What the binary says about the rendered config and flags.
			runBinary(t, pod, mc, cfgFile, cfgText, mounts)
		})
	}
}

func checkPodSecurity(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	ps := d.Spec.Template.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot {
		t.Errorf("deployment %s: pod not runAsNonRoot", d.Name)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s/%s: no securityContext", d.Name, c.Name)
			continue
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s/%s: root filesystem not read-only", d.Name, c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s/%s: privilege escalation allowed", d.Name, c.Name)
		case sc.RunAsUser == nil || *sc.RunAsUser == 0:
			t.Errorf("%s/%s: no non-root runAsUser", d.Name, c.Name)
		case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
			t.Errorf("%s/%s: capabilities not all dropped", d.Name, c.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s/%s: resources %+v: want cpu and memory requests and a memory limit", d.Name, c.Name, c.Resources)
		}
	}
}

// renderedConfig finds the config file serve is started on, through the
// -config flag and the volume mounted there, and maps each mount path to
// its volume.
func renderedConfig(t *testing.T, o objects, pod *corev1.PodSpec, mc *corev1.Container) (string, string, map[string]corev1.VolumeSource) {
	t.Helper()
	if len(mc.Args) == 0 || mc.Args[0] != "serve" {
		t.Fatalf("modelsplit args %v: want serve first", mc.Args)
	}
	cfgFile := ""
	for i, a := range mc.Args {
		if a == "-config" && i+1 < len(mc.Args) {
			cfgFile = mc.Args[i+1]
		}
	}
	vols := map[string]corev1.VolumeSource{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v.VolumeSource
	}
	mounts := map[string]corev1.VolumeSource{}
	var cfgText string
	for _, m := range mc.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Fatalf("mount %s names no volume", m.Name)
		}
		mounts[m.MountPath] = v
		if m.MountPath == filepath.Dir(cfgFile) {
			if v.ConfigMap == nil || m.SubPath != "" {
				t.Fatalf("the config %s must be a ConfigMap mounted as a directory (no subPath) to reload on change", cfgFile)
			}
			cm, ok := o.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("ConfigMap %s not rendered", v.ConfigMap.Name)
			}
			cfgText = cm.Data[filepath.Base(cfgFile)]
		}
	}
	if cfgText == "" {
		t.Fatalf("no config at %s among the mounts %v", cfgFile, mc.VolumeMounts)
	}
	return cfgFile, cfgText, mounts
}

// checkEnvoyBootstrap: Envoy starts on the mounted bootstrap, which is
// what `modelsplit bootstrap` prints for the same ports and budgets.
func checkEnvoyBootstrap(t *testing.T, o objects, pod *corev1.PodSpec, ec *corev1.Container, cfg modelsplitConfig) {
	t.Helper()
	path := ""
	for i, a := range ec.Args {
		if a == "-c" && i+1 < len(ec.Args) {
			path = ec.Args[i+1]
		}
	}
	var boot string
	for _, m := range ec.VolumeMounts {
		if m.MountPath != filepath.Dir(path) {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				boot = o.configMaps[v.ConfigMap.Name].Data[filepath.Base(path)]
			}
		}
	}
	if boot == "" {
		t.Fatalf("envoy -c %q: no bootstrap mounted there", path)
	}
	var b struct {
		Admin struct {
			Address struct {
				SocketAddress struct {
					PortValue int `json:"port_value"`
				} `json:"socket_address"`
			} `json:"address"`
		} `json:"admin"`
		OverloadManager struct {
			ResourceMonitors []struct {
				TypedConfig map[string]any `json:"typed_config"`
			} `json:"resource_monitors"`
		} `json:"overload_manager"`
	}
	if err := yaml.Unmarshal([]byte(boot), &b); err != nil {
		t.Fatal(err)
	}
	args := []string{"bootstrap", "-xds", cfg.Listen.XDS, "-admin-port", strconv.Itoa(b.Admin.Address.SocketAddress.PortValue)}
	for _, m := range b.OverloadManager.ResourceMonitors {
		if v, ok := m.TypedConfig["max_heap_size_bytes"]; ok {
			args = append(args, "-max-heap-bytes", fmt.Sprint(v))
		}
		if v, ok := m.TypedConfig["max_active_downstream_connections"]; ok {
			args = append(args, "-max-connections", fmt.Sprint(v))
		}
	}
	out, err := exec.Command(modelsplitBin, args...).Output()
	if err != nil {
		t.Fatalf("modelsplit %v: %v", args, err)
	}
	var want, got any
	if err := yaml.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(boot), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(want, got) {
		t.Errorf("the chart's Envoy bootstrap differs from `modelsplit %s`:\nchart:\n%s\nbinary:\n%s", strings.Join(args, " "), boot, out)
	}
	if !strings.Contains(strings.Join(ec.Args, " "), "--service-node $(POD_NAME)") {
		t.Errorf("envoy args %v: each pod needs its own node id", ec.Args)
	}
}

func checkServices(t *testing.T, o objects, ms *appsv1.Deployment, gateway bool) {
	t.Helper()
	pod := &ms.Spec.Template.Spec
	names := map[string]bool{}
	for _, s := range o.services {
		if len(s.Spec.Selector) == 0 || (!selects(s.Spec.Selector, ms.Spec.Template.Labels) && s.Spec.Selector["app.kubernetes.io/component"] != "redis") {
			t.Errorf("service %s selects %v, not the pods", s.Name, s.Spec.Selector)
		}
		if !selects(s.Spec.Selector, ms.Spec.Template.Labels) {
			continue
		}
		for _, p := range s.Spec.Ports {
			if _, ok := portNamed(pod, p.TargetPort.StrVal); !ok {
				t.Errorf("service %s port %s targets %v, which no container has", s.Name, p.Name, p.TargetPort)
			}
			names[p.TargetPort.StrVal] = true
		}
	}
	want := []string{"admin", "xds", "extproc"}
	if gateway {
		want = []string{"admin", "gateway"}
	}
	for _, n := range want {
		if !names[n] {
			t.Errorf("no Service exposes port %s", n)
		}
	}
}

func checkPolicies(t *testing.T, o objects, c renderCase, ms *appsv1.Deployment, gateway bool) {
	t.Helper()
	if np, ok := c.values["networkPolicy"].(map[string]any); ok && np["enabled"] == false {
		if len(o.policies) != 0 {
			t.Errorf("networkPolicy.enabled false, %d policies rendered", len(o.policies))
		}
		return
	}
	var mine *networkingv1.NetworkPolicy
	for _, p := range o.policies {
		if selects(p.Spec.PodSelector.MatchLabels, ms.Spec.Template.Labels) {
			mine = p
		}
	}
	if mine == nil {
		t.Fatal("no NetworkPolicy selects the modelsplit pods")
	}
	for _, r := range mine.Spec.Ingress {
		for _, p := range r.Ports {
			if _, ok := portNamed(&ms.Spec.Template.Spec, p.Port.StrVal); !ok {
				t.Errorf("policy port %v is not a container port", p.Port)
			}
			// The admin port is never open to everyone.
			if p.Port.StrVal == "admin" && len(r.From) == 0 {
				t.Errorf("the admin port is open to every source")
			}
		}
	}
}

// runBinary checks the config with `modelsplit validate`, then starts
// the container's command line on a copy of the mounts (config written
// the way the kubelet writes a ConfigMap: a ..data symlink swapped on
// update), probes it where the kubelet would, checks the token, and
// updates the ConfigMap to see it reload.
func runBinary(t *testing.T, pod *corev1.PodSpec, mc *corev1.Container, cfgFile, cfgText string, mounts map[string]corev1.VolumeSource) {
	t.Helper()
	root := t.TempDir()
	local := func(p string) string { return filepath.Join(root, p) }
	// Free ports, on the rendered hosts, for the rendered listeners.
	var cfg modelsplitConfig
	if err := yaml.Unmarshal([]byte(cfgText), &cfg); err != nil {
		t.Fatal(err)
	}
	text := cfgText
	freeAddr := map[string]string{}
	for _, a := range []string{cfg.Listen.XDS, cfg.Listen.ExtProc, cfg.Listen.Admin} {
		host, _, _ := net.SplitHostPort(a)
		freeAddr[a] = net.JoinHostPort(host, strconv.Itoa(freePort(t)))
		text = strings.Replace(text, a, freeAddr[a], 1)
	}
	for mp := range mounts {
		text = strings.ReplaceAll(text, mp+"/", local(mp)+"/")
	}
	// The rendered Redis (a Service name) becomes a local redis-server:
	// the test talks to nothing off this machine.
	if cfg.Store.Redis != "" {
		text = strings.Replace(text, cfg.Store.Redis, startRedis(t), 1)
	}
	token := "deploy-test-token"
	for mp, v := range mounts {
		if err := os.MkdirAll(local(mp), 0o755); err != nil {
			t.Fatal(err)
		}
		if v.Secret != nil {
			writeAtomic(t, local(mp), map[string]string{"token": token + "\n"}, "1")
		}
	}
	writeAtomic(t, local(filepath.Dir(cfgFile)), map[string]string{filepath.Base(cfgFile): text}, "1")
	cfgPath := local(cfgFile)

	if out, err := exec.Command(modelsplitBin, "validate", "-config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("modelsplit validate on the rendered config: %v\n%s\n%s", err, out, text)
	}
	args := append([]string(nil), mc.Args...)
	for i := range args {
		if args[i] == cfgFile {
			args[i] = cfgPath
		}
	}
	cmd := exec.Command(modelsplitBin, args...)
	cmd.Env = append(os.Environ(), "MODELSPLIT_ADMIN_TOKEN=")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("modelsplit %v:\n%s", args, logs.String())
		}
	})
	_, adminPort, _ := net.SplitHostPort(freeAddr[cfg.Listen.Admin])
	base := "http://127.0.0.1:" + adminPort
	for _, p := range []*corev1.Probe{mc.StartupProbe, mc.ReadinessProbe, mc.LivenessProbe} {
		waitHTTP(t, exited, base+p.HTTPGet.Path, "", http.StatusOK)
	}
	// The admin API off loopback wants the Secret's token; the console's
	// token prompt is served without it.
	waitHTTP(t, exited, base+"/v1/endpoints", "", http.StatusUnauthorized)
	waitHTTP(t, exited, base+"/v1/endpoints", token, http.StatusOK)
	waitHTTP(t, exited, base+"/", "", http.StatusOK)

	// A ConfigMap update (the kubelet swaps ..data) reloads the config.
	var before struct {
		Endpoints []struct {
			Variants []struct {
				Name   string `json:"name"`
				Weight int    `json:"weight"`
			} `json:"variants"`
		} `json:"endpoints"`
	}
	getJSON(t, base+"/v1/endpoints", token, &before)
	if len(before.Endpoints) == 0 || len(before.Endpoints[0].Variants) == 0 {
		t.Fatal("no endpoints served")
	}
	v := before.Endpoints[0].Variants[0]
	changed := regexp.MustCompile(fmt.Sprintf(`(?m)^(\s*)weight: %d$`, v.Weight)).ReplaceAllString(text, fmt.Sprintf("${1}weight: %d", v.Weight+7))
	if changed == text {
		t.Fatalf("could not change the weight of %s in the rendered config", v.Name)
	}
	writeAtomic(t, local(filepath.Dir(cfgFile)), map[string]string{filepath.Base(cfgFile): changed}, "2")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var after struct {
			Endpoints []struct {
				Variants []struct {
					Weight int `json:"weight"`
				} `json:"variants"`
			} `json:"endpoints"`
		}
		getJSON(t, base+"/v1/endpoints", token, &after)
		if after.Endpoints[0].Variants[0].Weight == v.Weight+7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ConfigMap update (weight %d -> %d) was not reloaded within 10s", v.Weight, v.Weight+7)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeAtomic lays files out as the kubelet does for a ConfigMap or
// Secret volume: dir/..<version>/<files>, dir/..data -> ..<version>, and
// dir/<file> -> ..data/<file>; a new version swaps ..data atomically.
func writeAtomic(t *testing.T, dir string, files map[string]string, version string) {
	t.Helper()
	ts := filepath.Join(dir, "..v"+version)
	if err := os.MkdirAll(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ts, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink("..v"+version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err != nil {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// startRedis runs a redis-server on a free loopback port for the test
// and returns its URL. make test-deps installs it; without it the test
// fails under CI=true and is skipped elsewhere.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is missing: run make test-deps")
		}
		t.Skip("redis-server is missing: run make test-deps")
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			return fmt.Sprintf("redis://127.0.0.1:%d/0", port)
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server not listening after 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func get(url, token string) (int, []byte, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}

func waitHTTP(t *testing.T, exited chan struct{}, url, token string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("modelsplit exited before %s answered %d", url, want)
		default:
		}
		code, body, err := get(url, token)
		if code == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %v %s, want %d", url, code, err, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func getJSON(t *testing.T, url, token string, out any) {
	t.Helper()
	code, body, err := get(url, token)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", url, code, err, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatal(err)
	}
}
