// Command modelsplit-demo runs a complete local gateway for trying
// modelsplit: a demo model server on every backend address of the config,
// `modelsplit serve` and a real Envoy bootstrapped from `modelsplit
// bootstrap`. It waits until Envoy routes a request, prints what to try,
// and on Ctrl-C (SIGINT or SIGTERM) stops everything it started. `make run`
// runs it on config/example.yaml.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/envoybin"
	"github.com/modelsplit/modelsplit/service"
)

// Children are started from the main goroutine; locking it to the main
// thread makes Pdeathsig (proc_linux.go) fire only when the process dies.
func init() { runtime.LockOSThread() }

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usageText = `Usage: modelsplit-demo [flags]

Run a complete local gateway for trying modelsplit, with no other setup:

  1. a demo model server on every HTTP backend address of the config (one per
     variant and shadow; each answers GET/POST under its endpoint's path prefix
     with {"model":"<variant>","predictions":[...]} and GET /healthz);
  2. modelsplit serve on the config (in-memory store unless it names Redis);
  3. Envoy, bootstrapped from 'modelsplit bootstrap' (found like the tests find
     it: $ENVOY_BIN, .tools/bin/envoy from 'make envoy-install', envoy on PATH).

It waits until Envoy routes a request (one request per endpoint, user
"modelsplit-demo-probe"), prints the commands to try, passes the children's
logs through with a prefix, and on Ctrl-C (SIGINT or SIGTERM) stops Envoy,
modelsplit and the demo servers; a second Ctrl-C kills at once. If a child
exits on its own, everything else is stopped and the exit code is 1.

The gateway port and the backend addresses come from the config
(gateway.port, variants[].backends, shadows[].backends); the modelsplit
listen addresses from the config unless overridden below.

Flags:
`

type options struct {
	configPath     string
	modelsplit     string
	envoy          string
	xds            string
	extproc        string
	admin          string
	envoyAdminPort int
	concurrency    int
	envoyLogLevel  string
	logLevel       string
	nodeID         string
	backends       bool
	readyTimeout   time.Duration
	stopTimeout    time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("modelsplit-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.configPath, "config", "config/example.yaml", "modelsplit config `file` to serve")
	fs.StringVar(&o.modelsplit, "modelsplit", "", "modelsplit `binary` (default: modelsplit beside this program, else on PATH)")
	fs.StringVar(&o.envoy, "envoy", "", "Envoy `binary` (default: $ENVOY_BIN, .tools/bin/envoy, envoy on PATH)")
	fs.StringVar(&o.xds, "xds", "", "xDS listen `address`, overrides listen.xds")
	fs.StringVar(&o.extproc, "extproc", "", "ext_proc listen `address`, overrides listen.extproc")
	fs.StringVar(&o.admin, "admin", "", "admin API listen `address`, overrides listen.admin")
	fs.IntVar(&o.envoyAdminPort, "envoy-admin-port", 9901, "Envoy admin `port` on 127.0.0.1 (0: no admin)")
	fs.IntVar(&o.concurrency, "envoy-concurrency", 1, "Envoy worker `threads`")
	fs.StringVar(&o.envoyLogLevel, "envoy-log-level", "warn", "Envoy log `level` (trace, debug, info, warn, error, critical, off)")
	fs.StringVar(&o.logLevel, "log-level", "info", "modelsplit serve log `level` (debug, info, warn, error)")
	fs.StringVar(&o.nodeID, "node-id", "modelsplit-demo", "Envoy's xDS node `id`")
	fs.BoolVar(&o.backends, "backends", true, "start the demo model servers (false: your own servers listen on the config's backends)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 60*time.Second, "how long to wait for modelsplit and for Envoy to route a request")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 10*time.Second, "how long each child gets to stop after SIGTERM before SIGKILL")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.envoyAdminPort < 0 || o.envoyAdminPort > 65535 {
		return nil, fmt.Errorf("-envoy-admin-port must be 0..65535, got %d", o.envoyAdminPort)
	}
	if o.concurrency < 1 {
		return nil, fmt.Errorf("-envoy-concurrency must be at least 1, got %d", o.concurrency)
	}
	if o.readyTimeout <= 0 || o.stopTimeout <= 0 {
		return nil, errors.New("-ready-timeout and -stop-timeout must be positive")
	}
	return o, nil
}

// errStopped means a signal arrived before the gateway was up.
var errStopped = errors.New("stopped by signal")

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "modelsplit-demo: %v\nRun 'modelsplit-demo -h' for usage.\n", err)
		return 2
	}
	l := &launcher{o: o, stdout: stdout, logs: newLogMux(stderr), kill: make(chan struct{}), died: make(chan *child, 4)}

	stop := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		s := <-sigs
		l.say("%v: stopping Envoy, modelsplit and the demo model servers (again to kill at once)", s)
		close(stop)
		<-sigs
		l.say("second signal: killing")
		close(l.kill)
	}()

	err = l.start(stop)
	if err == nil {
		l.printReady()
		select {
		case <-stop:
		case c := <-l.exited():
			err = fmt.Errorf("%s exited on its own (%v); its log is above", c.name, c.err)
		}
	}
	l.shutdown()
	switch {
	case err == nil, errors.Is(err, errStopped):
		l.say("stopped")
		return 0
	default:
		fmt.Fprintf(stderr, "modelsplit-demo: %v\n", err)
		return 1
	}
}

// launcher holds everything one run started.
type launcher struct {
	o      *options
	stdout io.Writer
	logs   *logMux
	kill   chan struct{} // closed on a second signal
	died   chan *child   // children that exited

	cfg        *config.Config
	msBin      string
	envoyBin   string
	listen     config.Listen // effective modelsplit listen addresses
	tmpDir     string
	models     []*modelServer
	skipped    []string // endpoints without demo servers (gRPC)
	serve      *child
	envoy      *child
	probeCount int
}

func (l *launcher) say(format string, args ...any) {
	l.logs.line("modelsplit-demo", fmt.Sprintf(format, args...))
}

func (l *launcher) start(stop <-chan struct{}) error {
	o := l.o
	cfg, err := config.Load(o.configPath)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			lines := make([]string, len(errs))
			for i, e := range errs {
				lines[i] = e.Error()
			}
			return fmt.Errorf("config %s:\n%s", o.configPath, strings.Join(lines, "\n"))
		}
		return err
	}
	l.cfg = cfg
	l.listen = service.ApplyListenOverrides(cfg, config.Listen{XDS: o.xds, ExtProc: o.extproc, Admin: o.admin}).Listen
	if l.msBin, err = findModelsplit(o.modelsplit); err != nil {
		return err
	}
	if l.envoyBin, err = findEnvoy(o.envoy); err != nil {
		return err
	}
	if err := l.checkPorts(); err != nil {
		return err
	}
	if o.backends {
		l.models, l.skipped = plannedServers(cfg)
		var problems []string
		for _, s := range l.models {
			if err := s.listen(); err != nil {
				problems = append(problems, err.Error())
			}
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "\n"))
		}
		for _, s := range l.models {
			s.serve()
		}
	}
	if l.tmpDir, err = os.MkdirTemp("", "modelsplit-demo-"); err != nil {
		return err
	}

	// modelsplit serve, until its admin API says ready.
	serveArgs := []string{"serve", "-config", o.configPath, "-log-level", o.logLevel}
	for _, f := range [][2]string{{"-xds", o.xds}, {"-extproc", o.extproc}, {"-admin", o.admin}} {
		if f[1] != "" {
			serveArgs = append(serveArgs, f[0], f[1])
		}
	}
	if l.serve, err = l.startChild("modelsplit", l.msBin, serveArgs); err != nil {
		return err
	}
	readyz := "http://" + dialAddr(l.listen.Admin) + "/readyz"
	if err := l.waitFor(stop, "modelsplit serve to be ready ("+readyz+")", func() error {
		code, _, _, err := httpDo(http.MethodGet, readyz, nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("HTTP %d", code)
		}
		return err
	}); err != nil {
		return err
	}

	// Envoy, from `modelsplit bootstrap`, until it routes a request.
	boot, err := exec.Command(l.msBin, "bootstrap", "-node-id", o.nodeID,
		"-xds", dialAddr(l.listen.XDS), "-admin-port", strconv.Itoa(o.envoyAdminPort)).Output()
	if err != nil {
		return fmt.Errorf("modelsplit bootstrap: %w", exitDetail(err))
	}
	bootPath := filepath.Join(l.tmpDir, "envoy.yaml")
	if err := os.WriteFile(bootPath, boot, 0o644); err != nil {
		return err
	}
	if l.envoy, err = l.startChild("envoy", l.envoyBin, []string{"-c", bootPath,
		"--disable-hot-restart", "--concurrency", strconv.Itoa(o.concurrency), "--log-level", o.envoyLogLevel}); err != nil {
		return err
	}
	probes := l.probes()
	if len(probes) == 0 {
		// Nothing to send a request to (gRPC endpoints only): wait for Envoy's own readiness.
		if o.envoyAdminPort == 0 {
			return nil
		}
		ready := fmt.Sprintf("http://127.0.0.1:%d/ready", o.envoyAdminPort)
		return l.waitFor(stop, "Envoy to be ready ("+ready+")", func() error {
			code, _, body, err := httpDo(http.MethodGet, ready, nil)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("HTTP %d: %s", code, strings.TrimSpace(body))
			}
			return err
		})
	}
	for _, p := range probes {
		if err := l.waitFor(stop, "Envoy to route "+p.url, func() error {
			code, hdr, body, err := httpDo(http.MethodGet, p.url, p.header)
			if err != nil {
				return err
			}
			v := hdr.Get(config.VariantHeader)
			switch {
			case v == "":
				return fmt.Errorf("HTTP %d without %s (%s)", code, config.VariantHeader, strings.TrimSpace(body))
			case l.o.backends && code != http.StatusOK:
				return fmt.Errorf("HTTP %d from variant %s: %s", code, v, strings.TrimSpace(body))
			case code >= 500:
				return fmt.Errorf("HTTP %d from variant %s (is your backend up?): %s", code, v, strings.TrimSpace(body))
			}
			l.probeCount++
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// checkPorts reports every TCP port the run needs that is already taken,
// before anything starts.
func (l *launcher) checkPorts() error {
	type want struct{ addr, what string }
	wants := []want{
		{l.listen.XDS, "modelsplit xDS (listen.xds, -xds)"},
		{l.listen.Admin, "modelsplit admin API (listen.admin, -admin)"},
		{net.JoinHostPort(l.cfg.Gateway.Address, strconv.Itoa(l.cfg.Gateway.Port)), "Envoy gateway listener (gateway.port)"},
	}
	if !strings.HasPrefix(l.listen.ExtProc, "unix://") {
		wants = append(wants, want{l.listen.ExtProc, "modelsplit ext_proc (listen.extproc, -extproc)"})
	}
	if l.o.envoyAdminPort > 0 {
		wants = append(wants, want{fmt.Sprintf("127.0.0.1:%d", l.o.envoyAdminPort), "Envoy admin (-envoy-admin-port)"})
	}
	var problems []string
	for _, w := range wants {
		lis, err := net.Listen("tcp", w.addr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s cannot listen on %s: %v", w.what, w.addr, err))
			continue
		}
		lis.Close()
	}
	if len(problems) > 0 {
		return fmt.Errorf("ports in use (is another gateway running? stop it or pick other ports, see -h):\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// waitFor polls check every 100ms until it passes, a child exits, a signal
// arrives or -ready-timeout passes.
func (l *launcher) waitFor(stop <-chan struct{}, what string, check func() error) error {
	deadline := time.Now().Add(l.o.readyTimeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %v for %s; last answer: %v", l.o.readyTimeout, what, err)
		}
		select {
		case <-stop:
			return errStopped
		case c := <-l.exited():
			return fmt.Errorf("%s exited while waiting for %s (%v); its log is above", c.name, what, c.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type probe struct {
	url    string
	header http.Header
}

// probes is one request per HTTP endpoint with a path prefix, sent through
// Envoy as user "modelsplit-demo-probe".
func (l *launcher) probes() []probe {
	var out []probe
	for _, ep := range l.cfg.Endpoints {
		if ep.Protocol == config.ProtocolGRPC || ep.Match.PathPrefix == "" {
			continue
		}
		h := http.Header{}
		switch {
		case ep.Sticky.Header != "":
			h.Set(ep.Sticky.Header, "modelsplit-demo-probe")
		case ep.Sticky.Cookie != "":
			h.Set("Cookie", ep.Sticky.Cookie+"=modelsplit-demo-probe")
		}
		out = append(out, probe{url: "http://" + l.gatewayHostPort() + predictPath(ep.Match.PathPrefix), header: h})
	}
	return out
}

func predictPath(prefix string) string {
	return strings.TrimRight(prefix, "/") + "/predict"
}

// gatewayHostPort is where a local client reaches the gateway listener.
func (l *launcher) gatewayHostPort() string {
	return net.JoinHostPort(dialHost(l.cfg.Gateway.Address), strconv.Itoa(l.cfg.Gateway.Port))
}

// dialAddr turns a listen address into one a local client can dial.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	return net.JoinHostPort(dialHost(host), port)
}

func dialHost(host string) string {
	if host == "" || host == "0.0.0.0" || host == "::" {
		return "127.0.0.1"
	}
	return host
}

func httpDo(method, url string, h http.Header) (int, http.Header, string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, nil, "", err
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, string(b), nil
}

// shutdown stops what start started, Envoy first (so it never sees
// modelsplit gone), then modelsplit serve, then the demo model servers.
func (l *launcher) shutdown() {
	for _, c := range []*child{l.envoy, l.serve} {
		if c != nil {
			c.stop(l.o.stopTimeout, l.kill, l.say)
		}
	}
	if len(l.models) > 0 {
		var parts []string
		for _, s := range l.models {
			if s.srv != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				s.srv.Shutdown(ctx)
				cancel()
			} else if s.lis != nil {
				s.lis.Close()
			}
			for _, r := range s.roles {
				parts = append(parts, fmt.Sprintf("%s/%s %d", r.endpoint, r.label(), r.served.Load()))
			}
		}
		l.say("demo model servers answered: %s", strings.Join(parts, ", "))
	}
	if l.tmpDir != "" {
		os.RemoveAll(l.tmpDir)
	}
}

// exited delivers each child that exits, whether stopped or not.
func (l *launcher) exited() <-chan *child { return l.died }

func findModelsplit(flagValue string) (string, error) {
	if flagValue != "" {
		if _, err := os.Stat(flagValue); err != nil {
			return "", fmt.Errorf("-modelsplit: %w", err)
		}
		return flagValue, nil
	}
	name := "modelsplit"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", errors.New("no modelsplit binary beside this program or on PATH: run `make build`, or pass -modelsplit bin/modelsplit")
}

func findEnvoy(flagValue string) (string, error) {
	if flagValue != "" {
		if _, err := os.Stat(flagValue); err != nil {
			return "", fmt.Errorf("-envoy: %w", err)
		}
		return flagValue, nil
	}
	p, err := envoybin.Find("")
	if err != nil && os.Getenv("ENVOY_BIN") == "" {
		// Run from outside the checkout: look beside this program's module.
		if exe, e := os.Executable(); e == nil {
			if q, e := envoybin.Find(filepath.Dir(exe)); e == nil {
				return q, nil
			}
		}
	}
	return p, err
}

func exitDetail(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}

// printReady prints where everything is and what to try.
func (l *launcher) printReady() {
	w := l.stdout
	gw := l.gatewayHostPort()
	curlHost := gw
	if h, p, _ := net.SplitHostPort(gw); h == "127.0.0.1" && (l.cfg.Gateway.Address == "0.0.0.0" || l.cfg.Gateway.Address == "") {
		curlHost = "localhost:" + p
	}
	cli := displayPath(l.msBin)
	adminArg := "" // the CLI's default admin address is modelsplit's default
	if a := dialAddr(l.listen.Admin); a != config.DefaultAdminAddr {
		adminArg = " -admin http://" + a
	}

	fmt.Fprintf(w, "\nmodelsplit-demo: the gateway is up (config %s)\n\n", l.o.configPath)
	fmt.Fprintf(w, "  gateway (Envoy)    http://%s\n", curlHost)
	live := l.liveStatus()
	for i := range l.cfg.Endpoints {
		ep := &l.cfg.Endpoints[i]
		fmt.Fprintf(w, "    endpoint %-18s %s  %s\n", ep.Name, orDash(ep.Match.PathPrefix), describeWeights(ep, live[ep.Name]))
	}
	if len(l.models) > 0 {
		var parts []string
		for _, s := range l.models {
			parts = append(parts, s.names()+" "+s.addr)
		}
		fmt.Fprintf(w, "  demo models        %s\n", strings.Join(parts, ", "))
	}
	if len(l.skipped) > 0 {
		fmt.Fprintf(w, "  no demo models for gRPC endpoints: %s (bring your own backends)\n", strings.Join(l.skipped, ", "))
	}
	fmt.Fprintf(w, "  modelsplit serve   xDS %s, ext_proc %s, admin http://%s\n", l.listen.XDS, l.listen.ExtProc, dialAddr(l.listen.Admin))
	if l.o.envoyAdminPort > 0 {
		fmt.Fprintf(w, "  Envoy admin        http://127.0.0.1:%d  (/config_dump, /stats, /clusters)\n", l.o.envoyAdminPort)
	}
	fmt.Fprintf(w, "  Envoy              %s\n", l.envoyBin)

	var ep *config.Endpoint
	for i := range l.cfg.Endpoints {
		if e := &l.cfg.Endpoints[i]; e.Protocol != config.ProtocolGRPC && e.Match.PathPrefix != "" {
			ep = e
			break
		}
	}
	fmt.Fprintf(w, "\nTry, in another terminal:\n")
	if ep != nil {
		url := curlHost + predictPath(ep.Match.PathPrefix)
		user := func(name string) string {
			switch {
			case ep.Sticky.Header != "":
				return fmt.Sprintf("-H '%s: %s'", ep.Sticky.Header, name)
			case ep.Sticky.Cookie != "":
				return fmt.Sprintf("-b '%s=%s'", ep.Sticky.Cookie, name)
			}
			return ""
		}
		loopUser := user("user-$u")
		loopUser = strings.ReplaceAll(loopUser, "'", `"`)
		fmt.Fprintf(w, "  curl -si %s %s\n", user("alice"), url)
		fmt.Fprintf(w, "      # the %s response header names the variant that answered; ask again: same variant\n", config.VariantHeader)
		fmt.Fprintf(w, "  for u in $(seq 20); do curl -s %s %s; echo; done\n", loopUser, url)
		fmt.Fprintf(w, "      # 20 users split by weight (%s); each keeps its variant\n", describeWeights(ep, live[ep.Name]))
		fmt.Fprintf(w, "  curl -s -X POST -d '{\"image\":\"...\"}' %s %s\n", user("bob"), url)
		fmt.Fprintf(w, "  %s status%s\n", cli, adminArg)
		fmt.Fprintf(w, "      # weights, new-user and live shares, requests and users per variant (%d request so far: the launcher's probe)\n", l.probeCount)
		fmt.Fprintf(w, "  %s set-weights %s %s%s\n", cli, ep.Name, evenWeights(ep), adminArg)
		fmt.Fprintf(w, "      # live: new users follow at once, assigned users keep their variant; then curl and status again\n")
		fmt.Fprintf(w, "  %s rollback %s%s    # or: reset %s (back to the config file)\n", cli, ep.Name, adminArg, ep.Name)
		if l.cfg.Store.Redis == "" && l.cfg.Admin.StateFile == "" {
			fmt.Fprintf(w, "      # live changes are saved in %s and survive a restart\n", service.DefaultStateFile(l.o.configPath))
		}
	} else {
		fmt.Fprintf(w, "  %s status%s\n", cli, adminArg)
	}
	if l.o.envoyAdminPort > 0 {
		fmt.Fprintf(w, "  curl -s 127.0.0.1:%d/stats | grep ext_proc    # Envoy's view of the decisions\n", l.o.envoyAdminPort)
	}
	fmt.Fprintf(w, "\nCtrl-C stops Envoy, modelsplit and the demo model servers.\n\n")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// describeWeights is "stable 90, canary 10; shadow candidate 10%", with
// the weights in force when st (from the admin API) has them.
func describeWeights(ep *config.Endpoint, st *api.EndpointStatus) string {
	file := make([]string, len(ep.Variants))
	for i, v := range ep.Variants {
		file[i] = fmt.Sprintf("%s %d", v.Name, v.Weight)
	}
	s := strings.Join(file, ", ")
	if st != nil && st.Override {
		inForce := make([]string, len(st.Variants))
		for i, v := range st.Variants {
			inForce[i] = fmt.Sprintf("%s %d", v.Name, v.Weight)
		}
		s = strings.Join(inForce, ", ") + " (live override; the config file says " + s + ")"
	}
	if len(ep.Shadows) > 0 {
		sh := make([]string, len(ep.Shadows))
		for i, x := range ep.Shadows {
			sh[i] = fmt.Sprintf("%s %g%%", x.Name, x.Percent)
		}
		s += "; shadow " + strings.Join(sh, ", ")
	}
	return s
}

// liveStatus asks the admin API for the endpoints as served (live
// overrides from an earlier run included); nil entries when it cannot.
func (l *launcher) liveStatus() map[string]*api.EndpointStatus {
	out := map[string]*api.EndpointStatus{}
	code, _, body, err := httpDo(http.MethodGet, "http://"+dialAddr(l.listen.Admin)+"/v1/endpoints", nil)
	if err != nil || code != http.StatusOK {
		return out
	}
	var list api.EndpointList
	if json.Unmarshal([]byte(body), &list) != nil {
		return out
	}
	for i := range list.Endpoints {
		out[list.Endpoints[i].Name] = &list.Endpoints[i]
	}
	return out
}

// evenWeights is an even split over the variants, e.g. "stable=50 canary=50".
func evenWeights(ep *config.Endpoint) string {
	n := len(ep.Variants)
	parts := make([]string, n)
	for i, v := range ep.Variants {
		w := 100 / n
		if i == 0 {
			w += 100 % n
		}
		parts[i] = fmt.Sprintf("%s=%d", v.Name, w)
	}
	return strings.Join(parts, " ")
}

// displayPath is p relative to the working directory when it lies inside
// it (bin/modelsplit), else p.
func displayPath(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if rel, err := filepath.Rel(wd, abs); err == nil && !strings.HasPrefix(rel, "..") {
		if !strings.Contains(rel, string(filepath.Separator)) {
			return "." + string(filepath.Separator) + rel
		}
		return rel
	}
	return abs
}
