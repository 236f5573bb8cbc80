package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/zap"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// Changes is what Apply hands the caches: per node kind, type and name.
type Changes = translate.Changes

// Apply translates the config for every node kind and, only if all of it
// is valid, serves it under one new version. Otherwise it counts and logs
// the refusal, returns an error naming the problem, and the last good
// resources stay served.
//
// Translation is incremental (translate.Translator): only endpoints whose
// inputs changed are built, checked and encoded again, and only resources
// whose bytes changed are handed to the caches. Applying what is already
// served (a SIGHUP without an edit, an edit of comments only, a change no
// resource shows) keeps the version: no client is sent anything.
//
// With ServerOptions.Debounce, the new version is served when the
// debounce ends, together with every change applied meanwhile.
func (s *Server) Apply(cfg *config.Config) error {
	if cfg == nil {
		return s.refuse("", errors.New("no config"))
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	// The translator compares every endpoint with the copy it kept, so an
	// unchanged config costs those comparisons and gives no changes.
	changes, _, err := s.translator.Update(cfg)
	if err != nil {
		return s.refuse("", err)
	}
	if s.dirty == nil {
		s.dirty = Changes{}
	}
	s.dirty.Merge(changes)
	if s.debounce <= 0 {
		return s.serveDirty(len(cfg.Endpoints))
	}
	if s.timer == nil {
		endpoints := len(cfg.Endpoints)
		s.timer = time.AfterFunc(s.debounce, func() {
			s.applyMu.Lock()
			defer s.applyMu.Unlock()
			s.timer = nil
			_ = s.serveDirty(endpoints)
		})
	}
	return nil
}

// Flush serves the changes waiting for the debounce now.
func (s *Server) Flush() {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if len(s.dirty) > 0 {
		_ = s.serveDirty(-1)
	}
}

// serveDirty serves the gathered changes under one new version for every
// node kind, if any resource's bytes differ from what is served. Callers
// hold applyMu.
func (s *Server) serveDirty(endpoints int) error {
	dirty := s.dirty
	s.dirty = nil
	next := map[translate.NodeKind]pending{}
	differs := false
	for _, kind := range translate.Kinds {
		p := pendingFor(s.translator.Set(kind), dirty[kind])
		next[kind] = p
		differs = differs || s.caches[kind].differs(p)
	}
	if !differs {
		s.log.Debug("resources unchanged; version kept", zap.String("version", s.servedVersion(translate.KindEnvoy)))
		return nil
	}
	for _, kind := range translate.Kinds {
		for _, o := range s.translator.Oversized(kind, translate.GRPCDefaultReceiveLimit) {
			s.log.Warn("xDS resource larger than a default grpc-go client accepts", zap.String("problem", o.String()),
				zap.String("node_kind", string(kind)), zap.String("type", o.Type), zap.String("resource", o.Name),
				zap.Int("bytes", o.Bytes), zap.Int("client_limit_bytes", o.Limit))
		}
	}
	version := s.versions.next()
	for _, kind := range translate.Kinds {
		s.caches[kind].set(version, next[kind])
		s.setServed(kind, version)
	}
	s.log.Info("serving snapshot", zap.String("version", version), zap.Int("endpoints", endpoints))
	if s.onServe != nil {
		s.onServe(version)
	}
	return nil
}

// pendingFor looks the changed names up in the translator's set: present
// is put, absent is removed.
func pendingFor(set translate.Set, changed map[resource.Type]map[string]struct{}) pending {
	p := pending{put: map[resource.Type]map[string]*translate.Encoded{}, remove: map[resource.Type]map[string]bool{}}
	for typ, names := range changed {
		for n := range names {
			if enc := set[typ][n]; enc != nil {
				if p.put[typ] == nil {
					p.put[typ] = map[string]*translate.Encoded{}
				}
				p.put[typ][n] = enc
			} else {
				if p.remove[typ] == nil {
					p.remove[typ] = map[string]bool{}
				}
				p.remove[typ][n] = true
			}
		}
	}
	return p
}

// setResources serves resources without translation or checks. Tests use
// it to hand clients a snapshot they will reject.
func (s *Server) setResources(res map[translate.NodeKind]translate.Resources) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	// What is served no longer follows from a config: the next Apply
	// builds everything again and replaces it.
	s.translator.Reset()
	s.dirty = nil
	version := s.versions.next()
	for kind, r := range res {
		p := pending{put: map[resource.Type]map[string]*translate.Encoded{}, remove: map[resource.Type]map[string]bool{}}
		c := s.caches[kind]
		c.mu.Lock()
		for typ, byName := range c.res {
			for n := range byName {
				if p.remove[typ] == nil {
					p.remove[typ] = map[string]bool{}
				}
				p.remove[typ][n] = true
			}
		}
		c.mu.Unlock()
		for typ, list := range r {
			p.put[typ] = map[string]*translate.Encoded{}
			for _, m := range list {
				enc, err := translate.Encode(m)
				if err != nil {
					return err
				}
				p.put[typ][enc.Name] = enc
				delete(p.remove[typ], enc.Name)
			}
		}
		c.set(version, p)
		s.setServed(kind, version)
	}
	return nil
}

func (s *Server) refuse(kind translate.NodeKind, err error) error {
	s.metrics.XDSSnapshotRefused.Inc()
	s.log.Warn("refusing config; still serving the last good snapshot",
		zap.String("node_kind", string(kind)), zap.String("version", s.servedVersion(translate.KindEnvoy)), zap.Error(err))
	if kind == "" {
		return fmt.Errorf("refused: %w", err)
	}
	return fmt.Errorf("refused: resources for %s nodes: %w", kind, err)
}

// servedVersion is Version without serving pending changes first.
func (s *Server) servedVersion(kind translate.NodeKind) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[kind]
}
