package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/service"
)

func runServe(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "serve", "-config FILE [flags]", `
Serve a config: the xDS server Envoy and proxyless gRPC clients connect to,
the ext_proc decision server, and the admin/metrics HTTP API. The config file
is reloaded when it changes and on SIGHUP; a config with errors is refused and
the previous one stays in force. SIGINT/SIGTERM stop gracefully.

Without store.redis in the config, assignments live in memory (one replica).`)
	path := fs.String("config", "", "config `file` (required)")
	var over config.Listen
	fs.StringVar(&over.XDS, "xds", "", "xDS listen `address`, overrides listen.xds (default "+config.DefaultXDSAddr+")")
	fs.StringVar(&over.ExtProc, "extproc", "", "ext_proc listen `address` (host:port or unix:///path), overrides listen.extproc (default "+config.DefaultExtProcAddr+")")
	fs.StringVar(&over.Admin, "admin", "", "admin/metrics HTTP listen `address`, overrides listen.admin (default "+config.DefaultAdminAddr+")")
	watch := fs.Duration("watch-interval", time.Second, "how often to check the config file for changes (0: reload only on SIGHUP)")
	window := fs.Duration("results-window", 10*time.Second, "length of the per-variant results windows that rollout gates, bandits and status read (1s-1m)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	format := fs.String("log-format", "console", "log `format`: console or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return usagef("-config is required")
	}
	if *window < time.Second || *window > time.Minute {
		return usagef("-results-window must be between 1s and 1m, got %v", *window)
	}
	if *watch < 0 {
		return usagef("-watch-interval must not be negative")
	}
	log, err := newLogger(env, *level, *format)
	if err != nil {
		return usagef("%v", err)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigError(env, err)
		return errReported
	}
	cfg = service.ApplyListenOverrides(cfg, over)
	if err := cfg.Validate(); err != nil {
		printConfigError(env, err)
		return errReported
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	svc, err := service.Start(ctx, service.Options{
		ConfigPath: *path, Config: cfg, ListenOverrides: over, Logger: log, ReloadInterval: *watch,
		AdminToken: env.Getenv("MODELSPLIT_ADMIN_TOKEN"), ResultsWindow: *window,
	})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = svc.Reload() // logs its own outcome
			}
		}
	}()
	err = svc.Wait()
	log.Info("stopped")
	return err
}

func newLogger(env Env, level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, fmt.Errorf("-log-format must be console or json, got %q", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(env.Stderr), lvl)), nil
}
