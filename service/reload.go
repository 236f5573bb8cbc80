package service

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/config"
)

// fileSignature identifies one version of the config file's content.
type fileSignature [sha256.Size]byte

func signature(path string) (fileSignature, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return fileSignature{}, err
	}
	return sha256.Sum256(b), nil
}

// watch polls the config file and reloads it when its content changes.
// Polling (not inotify) also sees editors that replace the file and
// Kubernetes ConfigMap symlink swaps.
func (s *Service) watch(ctx context.Context) {
	t := time.NewTicker(s.opts.ReloadInterval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sig, err := signature(s.opts.ConfigPath)
			if err != nil {
				// One miss can be an editor's rename in flight; two in a
				// row is a file that is gone, unreadable or a directory.
				// Said once per state change, never per tick.
				misses++
				if misses == 2 {
					s.metrics.ConfigFileOK.Set(0)
					s.log.Error("config file unreadable; the config in force stays until it can be read again",
						zap.String("file", s.opts.ConfigPath), zap.Error(err))
				}
				continue
			}
			if misses >= 2 {
				s.log.Info("config file readable again", zap.String("file", s.opts.ConfigPath))
			}
			misses = 0
			s.metrics.ConfigFileOK.Set(1)
			s.reloadMu.Lock()
			changed := sig != s.fileSig
			s.reloadMu.Unlock()
			if changed {
				_ = s.Reload()
			}
		}
	}
}

// Reload re-reads the config file and applies it. On any problem the
// previous config stays in force everywhere, and the error (with file, line
// and field for config errors) is logged, counted and returned.
func (s *Service) Reload() error {
	if s.opts.ConfigPath == "" {
		return errors.New("no config file to reload")
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	sig, _ := signature(s.opts.ConfigPath)
	s.fileSig = sig // a bad file is reported once, not on every tick
	cfg, err := config.Load(s.opts.ConfigPath)
	if err == nil {
		cfg = ApplyListenOverrides(cfg, s.opts.ListenOverrides)
		err = s.checkListenUnchanged(cfg)
	}
	if err == nil {
		err = s.apply(cfg)
	}
	if err != nil {
		s.metrics.ConfigReloads.WithLabelValues("error").Inc()
		var errs config.Errors
		if errors.As(err, &errs) {
			lines := make([]string, len(errs))
			for i, e := range errs {
				lines[i] = e.Error()
			}
			s.log.Error("config reload refused; the previous config stays in force", zap.Strings("problems", lines))
		} else {
			s.log.Error("config reload refused; the previous config stays in force", zap.Error(err))
		}
		return err
	}
	s.metrics.ConfigReloads.WithLabelValues("ok").Inc()
	s.log.Info("config reloaded", zap.Int("endpoints", len(cfg.Endpoints)))
	return nil
}

// apply installs a validated config file; live changes from the admin
// API stay on top of it unless the file changed the same setting.
// Callers hold reloadMu.
func (s *Service) apply(cfg *config.Config) error {
	if _, err := s.control.SetFileConfig(cfg); err != nil {
		return err
	}
	if s.adminHandler != nil {
		s.adminHandler.SetAllowedHosts(cfg.Listen.Admin, cfg.Admin.AllowedHosts)
	}
	return nil
}

// checkListenUnchanged refuses reloads that move listeners: they need a
// restart, and half-applying them would be surprising.
func (s *Service) checkListenUnchanged(cfg *config.Config) error {
	old := s.opts.Config
	if cfg.Listen != old.Listen || cfg.TLS.Listeners() != old.TLS.Listeners() || cfg.Store.Redis != old.Store.Redis {
		return fmt.Errorf("%s: listen, tls and store.redis changes need a restart", s.opts.ConfigPath)
	}
	return nil
}

// ApplyListenOverrides replaces the config's listen addresses with the
// non-empty ones in o (command-line flags win over the file).
func ApplyListenOverrides(cfg *config.Config, o config.Listen) *config.Config {
	if o == (config.Listen{}) {
		return cfg
	}
	c := cfg.Clone()
	if o.XDS != "" {
		c.Listen.XDS = o.XDS
	}
	if o.ExtProc != "" {
		c.Listen.ExtProc = o.ExtProc
	}
	if o.Admin != "" {
		c.Listen.Admin = o.Admin
	}
	return c
}
