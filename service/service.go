// Package service runs one modelsplit process: it loads the config, starts
// the xDS, ext_proc and admin listeners, reloads the config on change, and
// shuts everything down gracefully. End-to-end tests start it on :0.
package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/modelsplit/modelsplit/accesslog"
	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/bandit"
	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/console"
	"github.com/modelsplit/modelsplit/control"
	"github.com/modelsplit/modelsplit/extproc"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/rls"
	"github.com/modelsplit/modelsplit/rollout"
	"github.com/modelsplit/modelsplit/shadow"
	"github.com/modelsplit/modelsplit/stats"
	"github.com/modelsplit/modelsplit/xds"
)

// Options configures a Service.
type Options struct {
	// ConfigPath is watched for changes; empty disables reloading.
	ConfigPath string
	// Config is the already loaded and validated config, with
	// ListenOverrides already applied.
	Config *config.Config
	// ListenOverrides (from flags) are re-applied to every reloaded config.
	ListenOverrides config.Listen
	Logger          *zap.Logger
	// AdminToken is the MODELSPLIT_ADMIN_TOKEN value ("" when unset).
	AdminToken string
	// ReloadInterval is how often the config file is checked for changes;
	// 0 disables polling (reload on SIGHUP only, see cli).
	ReloadInterval time.Duration
	// ShutdownGrace bounds the graceful stop (default 10s).
	ShutdownGrace time.Duration
	// ResultsWindow is the length of the per-variant results windows
	// (stats); default 10s.
	ResultsWindow time.Duration
}

// Addrs are the bound listen addresses (useful with :0).
type Addrs struct {
	XDS, ExtProc, Admin string
}

// Service is a running modelsplit process.
type Service struct {
	opts    Options
	log     *zap.Logger
	metrics *metrics.Metrics

	xds     *xds.Server
	store   cohort.Store
	engine  *cohort.Engine
	extproc *extproc.Server
	logs    *accesslog.Server
	shadows *shadow.Manager
	control *control.Controller
	// rollouts drives rollout plans (on the replica holding the lease).
	rollouts *rollout.Manager
	// bandits updates bandit weights (lease holder); rewards feeds them.
	bandits *bandit.Manager
	rewards *bandit.Rewards

	xdsGRPC     *grpc.Server
	extprocGRPC *grpc.Server
	adminHTTP   *http.Server
	// adminHandler takes admin.allowed_hosts from every reload.
	adminHandler *admin.Handler
	addrs        Addrs

	reloadMu sync.Mutex
	current  atomic.Pointer[config.Config] // effective: file plus live changes
	fileSig  fileSignature

	cancel context.CancelFunc
	done   chan struct{}
	errc   chan error
}

// Start binds every listener and starts serving. The returned Service runs
// until ctx is cancelled or Close is called.
func Start(ctx context.Context, opts Options) (*Service, error) {
	if opts.Config == nil {
		return nil, errors.New("service: no config")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	cfg := opts.Config
	ctx, cancel := context.WithCancel(ctx)
	s := &Service{opts: opts, log: opts.Logger, metrics: metrics.NewWithStats(stats.Options{Window: opts.ResultsWindow}),
		cancel: cancel, done: make(chan struct{}), errc: make(chan error, 3)}
	s.current.Store(cfg)
	s.metrics.ConfigFileOK.Set(1) // the config in hand was read (or given) just now
	ok := false
	defer func() {
		if !ok {
			cancel()
			s.stop()
		}
	}()

	token, err := admin.ResolveToken(cfg.Listen.Admin, cfg.Admin.TokenFile, opts.AdminToken)
	if err != nil {
		return nil, err
	}
	creds, err := serverCredentials(cfg.TLS)
	if err != nil {
		return nil, err
	}

	// Decision side.
	if cfg.Store.Redis != "" {
		s.store, err = cohort.NewRedisStore(cfg.Store, s.log.Named("store"), s.metrics)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	} else {
		s.store = cohort.NewMemoryStore(cfg.Store.CacheSize * 10)
		s.metrics.StoreUp.Set(1)
	}
	s.engine = cohort.NewEngine(s.store, cohort.Options{Logger: s.log.Named("cohort"), Metrics: s.metrics, CacheSize: cfg.Store.CacheSize})
	s.shadows = shadow.NewManager(shadow.Options{Logger: s.log.Named("shadow"), Metrics: s.metrics})
	var redisClient redis.UniversalClient
	if rc, ok := s.store.(interface{ Client() redis.UniversalClient }); ok {
		redisClient = rc.Client()
	}
	s.rewards = bandit.NewRewards(s.metrics, s.engine, redisClient, cfg.Store.KeyPrefix)
	s.extproc = extproc.NewServer(s.engine, extproc.Options{Logger: s.log.Named("extproc"), Metrics: s.metrics, Shadows: s.shadows,
		Limits: cfg.ExtProc, Rewards: s.rewards})
	s.logs = accesslog.NewServer(accesslog.Options{Logger: s.log.Named("accesslog"), Metrics: s.metrics})

	// Control plane, then live state on top of the file's config.
	// A burst of changes (a file edit and API calls within a few ms) is
	// served to clients as one version.
	s.xds = xds.NewServer(ctx, xds.ServerOptions{Logger: s.log.Named("xds"), Metrics: s.metrics, Debounce: xds.DefaultDebounce})
	persister, err := s.persister(cfg)
	if err != nil {
		return nil, err
	}
	s.control = control.New(ctx, control.Options{Logger: s.log.Named("control"), Metrics: s.metrics,
		Persister: persister, Apply: s.serveConfig, Users: s.engine, Shadows: shadowReader{s.shadows}})
	if _, err := s.control.SetFileConfig(cfg); err != nil {
		return nil, fmt.Errorf("initial config: %w", err)
	}

	// Listeners: bind all before serving any, so a port conflict fails fast.
	xdsLis, err := net.Listen("tcp", cfg.Listen.XDS)
	if err != nil {
		return nil, fmt.Errorf("listen.xds: %w", err)
	}
	extLis, err := extproc.Listen(cfg.Listen.ExtProc)
	if err != nil {
		xdsLis.Close()
		return nil, fmt.Errorf("listen.extproc: %w", err)
	}
	adminLis, err := net.Listen("tcp", cfg.Listen.Admin)
	if err != nil {
		xdsLis.Close()
		extLis.Close()
		return nil, fmt.Errorf("listen.admin: %w", err)
	}
	s.addrs = Addrs{XDS: xdsLis.Addr().String(), ExtProc: listenerAddr(extLis), Admin: adminLis.Addr().String()}

	watch := newTLSWatch(s.log.Named("tls"), s.metrics)
	s.xdsGRPC = grpc.NewServer(grpcServerOptions(watch.creds("xds", creds))...)
	s.xds.Register(s.xdsGRPC)
	s.extprocGRPC = grpc.NewServer(append(grpcServerOptions(watch.creds("extproc", creds)), extprocServerOptions()...)...)
	s.extproc.Register(s.extprocGRPC)
	// Proxyless gRPC clients ask the same engine through the Route Lookup
	// Service, on the same listener (their xDS names it as lookup_service).
	rls.NewServer(s.engine, rls.Options{Logger: s.log.Named("rls"), Metrics: s.metrics}).Register(s.extprocGRPC, nil)
	// Envoy's access log (TTFB, duration, tokens per variant) comes over
	// the same cluster as ext_proc.
	s.logs.Register(s.extprocGRPC)

	adminHandler := admin.New(admin.Options{Metrics: s.metrics, Token: token,
		ListenAddr: cfg.Listen.Admin, AllowedHosts: cfg.Admin.AllowedHosts, Checks: []admin.Check{
			{Name: "xds", Fn: func() error {
				if !s.xds.Ready() {
					return errors.New("no snapshot served yet")
				}
				return nil
			}},
			{Name: "store", Fn: s.storeCheck},
			{Name: "live_state", Fn: s.control.Check},
		}})
	s.control.Register(adminHandler)
	// Profiles for finding where time goes (GET only; behind the token
	// whenever the admin listener is not on loopback).
	adminHandler.Handle("GET /debug/pprof/", http.HandlerFunc(pprof.Index))
	adminHandler.Handle("GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile))
	adminHandler.Handle("GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	var lease rollout.Lease
	if rc, ok := s.store.(interface{ Client() redis.UniversalClient }); ok {
		lease = rollout.NewRedisLease(rc.Client(), cfg.Store.KeyPrefix+"rollout:lease", rolloutLeasePeriod)
	}
	s.rollouts = rollout.New(rollout.Options{Controller: s.control, Results: statsResults{s.metrics.Stats}, Lease: lease,
		Logger: s.log.Named("rollout"), Metrics: s.metrics})
	s.rollouts.Register(adminHandler)
	var banditLease bandit.Lease
	if lease != nil {
		banditLease = lease
	}
	s.bandits = bandit.New(bandit.Options{Controller: s.control, Lease: banditLease, Logger: s.log.Named("bandit"), Metrics: s.metrics,
		Results: banditResults{r: s.metrics.Stats, client: redisClient, prefix: cfg.Store.KeyPrefix}})
	bandit.Register(adminHandler, s.bandits, s.rewards, s.control.Effective)
	// The web console at / (and its series route) on the same listener.
	console.Register(adminHandler, console.Options{Stats: s.metrics.Stats, Config: s.control.Effective})
	s.adminHandler = adminHandler
	s.adminHTTP = &http.Server{Handler: adminHandler, ReadHeaderTimeout: 5 * time.Second}
	go s.control.Run(ctx)
	go s.rollouts.Run(ctx)
	go s.bandits.Run(ctx)
	go s.metrics.Stats.Run(ctx)
	if rc, ok := s.store.(interface{ Client() redis.UniversalClient }); ok {
		// Replicas share their closed windows (stats.Recorder.MergedWindows).
		s.metrics.Stats.Publish(ctx, rc.Client(), cfg.Store.KeyPrefix)
	}

	go func() { s.errc <- serveErr("xds", s.xdsGRPC.Serve(xdsLis)) }()
	go func() { s.errc <- serveErr("extproc", s.extprocGRPC.Serve(extLis)) }()
	go func() { s.errc <- serveErr("admin", s.adminHTTP.Serve(adminLis)) }()
	if opts.ConfigPath != "" {
		s.fileSig, _ = signature(opts.ConfigPath)
		if opts.ReloadInterval > 0 {
			go s.watch(ctx)
		}
	}
	go func() {
		<-ctx.Done()
		s.stop()
		close(s.done)
	}()
	ok = true
	s.log.Info("serving",
		zap.String("xds", s.addrs.XDS), zap.String("extproc", s.addrs.ExtProc), zap.String("admin", s.addrs.Admin),
		zap.Int("endpoints", len(cfg.Endpoints)), zap.Bool("redis", cfg.Store.Redis != ""),
		zap.String("version", s.xds.Version(xds.KindEnvoy)))
	return s, nil
}

func (s *Service) storeCheck() error {
	if h, ok := s.store.(interface{ Healthy() bool }); ok && !h.Healthy() {
		return errors.New("store unreachable: decisions fall back to hashing")
	}
	return nil
}

// Addrs returns the bound listen addresses.
func (s *Service) Addrs() Addrs { return s.addrs }

// Metrics returns the process's metrics.
func (s *Service) Metrics() *metrics.Metrics { return s.metrics }

// XDS returns the control-plane server.
func (s *Service) XDS() *xds.Server { return s.xds }

// Engine returns the decision engine.
func (s *Service) Engine() *cohort.Engine { return s.engine }

// Config returns the config in force: the file's, with live changes
// from the admin API applied.
func (s *Service) Config() *config.Config { return s.current.Load() }

// Control returns the live-control state.
func (s *Service) Control() *control.Controller { return s.control }

// serveConfig pushes an effective config to the control plane first (it
// is the step that can refuse), then to decisions and shadows.
func (s *Service) serveConfig(cfg *config.Config) error {
	if err := s.xds.Apply(cfg); err != nil {
		return err
	}
	s.engine.SetConfig(cfg)
	s.extproc.SetLimits(cfg.ExtProc)
	s.shadows.SetConfig(cfg)
	s.logs.SetConfig(cfg)
	s.rewards.SetConfig(cfg)
	// Each stats window records one set of weights: a change closes the
	// endpoint's window (unchanged weights are a no-op).
	for i := range cfg.Endpoints {
		e := &cfg.Endpoints[i]
		w := make(map[string]int, len(e.Variants))
		for _, v := range e.Variants {
			w[v.Name] = v.Weight
		}
		s.metrics.Stats.SetWeights(e.Name, w)
	}
	s.current.Store(cfg)
	return nil
}

// persister picks where live changes are kept: admin.state_file when
// set, else Redis when the assignment store is Redis, else a state file
// beside the config file (none for a config built in code).
func (s *Service) persister(cfg *config.Config) (control.Persister, error) {
	switch {
	case cfg.Admin.StateFile != "":
		if err := control.CheckStateFile(cfg.Admin.StateFile); err != nil {
			return nil, fmt.Errorf("admin.state_file: %w; refusing to start so that no live change overwrites it "+
				"(set admin.state_file to a new path, or move the file away)", err)
		}
		return control.FilePersister{Path: cfg.Admin.StateFile}, nil
	case cfg.Store.Redis != "":
		if rc, ok := s.store.(interface{ Client() redis.UniversalClient }); ok {
			return control.RedisPersister{Client: rc.Client(), Key: cfg.Store.KeyPrefix + "control"}, nil
		}
		return nil, errors.New("store: the Redis store exposes no client for live state")
	case s.opts.ConfigPath != "":
		path := DefaultStateFile(s.opts.ConfigPath)
		if err := control.CheckStateFile(path); err != nil {
			return nil, fmt.Errorf("live state file (the default beside %s; admin.state_file chooses another): %w; refusing to start so that no live change overwrites it",
				s.opts.ConfigPath, err)
		}
		return control.FilePersister{Path: path}, nil
	}
	return nil, nil
}

// DefaultStateFile is where live changes go without Redis or
// admin.state_file: beside the config, named after it.
func DefaultStateFile(configPath string) string {
	ext := filepath.Ext(configPath)
	return strings.TrimSuffix(configPath, ext) + ".state.json"
}

// shadowReader adapts the shadow manager to the admin API.
type shadowReader struct{ m *shadow.Manager }

func (r shadowReader) Samples(endpoint, sh string) ([]api.Sample, bool) {
	return r.m.Samples(endpoint, sh)
}

func (r shadowReader) Stats(endpoint, sh string) (compared, agreed, errs, dropped uint64, ok bool) {
	st, ok := r.m.Stats(endpoint, sh)
	return st.Compared, st.Agreed, st.Errors, st.Dropped, ok
}

// Wait blocks until the service has stopped, returning the first serving
// error if a listener failed.
func (s *Service) Wait() error {
	select {
	case <-s.done:
		return nil
	case err := <-s.errc:
		if err != nil {
			s.cancel()
			<-s.done
			return err
		}
		<-s.done
		return nil
	}
}

// Close stops the service gracefully and waits for it.
func (s *Service) Close() {
	s.cancel()
	<-s.done
}

func (s *Service) stop() {
	grace, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownGrace)
	defer cancel()
	if s.logs != nil {
		s.logs.Close() // Envoy's access log streams never end on their own
	}
	var wg sync.WaitGroup
	for _, g := range []*grpc.Server{s.xdsGRPC, s.extprocGRPC} {
		if g == nil {
			continue
		}
		wg.Add(1)
		go func(g *grpc.Server) {
			defer wg.Done()
			stopped := make(chan struct{})
			go func() { g.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-grace.Done():
				g.Stop()
			}
		}(g)
	}
	if s.adminHTTP != nil {
		_ = s.adminHTTP.Shutdown(grace)
	}
	wg.Wait()
	if s.shadows != nil {
		s.shadows.Close()
	}
	if s.engine != nil {
		_ = s.engine.Close()
	}
	if s.store != nil {
		if c, ok := s.store.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	}
	if s.log != nil {
		_ = s.log.Sync()
	}
}

func serveErr(name string, err error) error {
	if err == nil || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s listener: %w", name, err)
}

func listenerAddr(l net.Listener) string {
	if l.Addr().Network() == "unix" {
		return "unix://" + l.Addr().String()
	}
	return l.Addr().String()
}

func grpcServerOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		// Envoy opens one ext_proc stream per request and every xDS client
		// keeps one ADS stream: never let the stream limit queue them.
		grpc.MaxConcurrentStreams(1 << 20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Envoy pings its xDS and ext_proc connections every 5s (+ jitter)
		// to notice a modelsplit that stopped answering; a client pinging
		// faster than MinTime would be sent away (GOAWAY too_many_pings).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 2 * time.Second, PermitWithoutStream: true}),
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	return opts
}

// extprocServerOptions: fixed flow-control windows, which also turn off
// grpc-go's bandwidth-delay probing. With probing on, a busy ext_proc
// connection carries a PING and its answer every round trip: two more
// system calls and wake-ups per few requests, for windows that only need
// to hold one request's messages (1 MiB per stream, 16 MiB per
// connection; larger bodies still flow, paced by the window).
func extprocServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(1 << 20),
		grpc.InitialConnWindowSize(16 << 20),
	}
}

func serverCredentials(t config.TLS) (credentials.TransportCredentials, error) {
	if !t.Enabled() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.client_ca_file %s: no PEM certificates", t.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(tc), nil
}
