package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/xds/translate"
)

// applied is what the last successful Apply served.
type applied struct {
	// cfg is a deep copy of the config, so the caller may go on editing
	// its own.
	cfg *config.Config
	// sum is the fingerprint of the resources served.
	sum *[sha256.Size]byte
}

// Apply builds and checks the resources for every node kind and, only if
// all are valid, serves them under one new version. Otherwise it counts and
// logs the refusal, returns an error naming the problem, and the last good
// snapshots stay served.
//
// Applying what is already served (a SIGHUP without an edit, an edit of
// comments only) keeps the version: no client is sent anything. An equal
// config costs a comparison; equal resources cost translate.Build but not translate.Check.
func (s *Server) Apply(cfg *config.Config) error {
	if cfg == nil {
		return s.refuse("", errors.New("no config"))
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	// translate.Build is pure: an equal config gives the served resources.
	if s.last.cfg != nil && reflect.DeepEqual(cfg, s.last.cfg) {
		s.log.Debug("config unchanged; version kept", zap.String("version", s.Version(translate.KindEnvoy)))
		return nil
	}
	built := make(map[translate.NodeKind]translate.Resources, len(translate.Kinds))
	for _, kind := range translate.Kinds {
		res, err := translate.Build(cfg, kind)
		if err != nil {
			return s.refuse(kind, err)
		}
		built[kind] = res
	}
	sum, err := fingerprint(built)
	if err != nil {
		return s.refuse("", err)
	}
	if s.last.sum != nil && *s.last.sum == sum {
		s.last.cfg = cfg.Clone()
		s.log.Debug("resources unchanged; version kept", zap.String("version", s.Version(translate.KindEnvoy)))
		return nil
	}
	for _, kind := range translate.Kinds {
		if err := translate.Check(built[kind]); err != nil {
			return s.refuse(kind, err)
		}
	}
	version := s.versions.next()
	snaps := make(map[translate.NodeKind]*cachev3.Snapshot, len(translate.Kinds))
	for kind, res := range built {
		snap, err := cachev3.NewSnapshot(version, res)
		if err != nil {
			return s.refuse(kind, err)
		}
		snaps[kind] = snap
	}
	if err := s.serve(version, snaps, len(cfg.Endpoints)); err != nil {
		s.last = applied{}
		return err
	}
	s.last = applied{cfg: cfg.Clone(), sum: &sum}
	return nil
}

// fingerprint digests every kind's resources, in translate.Kinds and translate.Build order
// (deterministic), through their deterministic encoding: two equal
// fingerprints mean nothing served would change. Encoding and hashing cost
// a fraction of what proto.Equal's reflection does. Any payloads are bytes
// encoded by translate.Build; were their encoding ever to vary for equal content,
// the cost would be a redundant push, never a missed one.
func fingerprint(built map[translate.NodeKind]translate.Resources) ([sha256.Size]byte, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	for _, kind := range translate.Kinds {
		res := built[kind]
		types := slices.Sorted(maps.Keys(res))
		for _, typ := range types {
			fmt.Fprintf(h, "%s|%s|%d|", kind, typ, len(res[typ]))
			for _, r := range res[typ] {
				var err error
				if buf, err = opts.MarshalAppend(buf[:0], r); err != nil {
					return [sha256.Size]byte{}, fmt.Errorf("encode %s resource: %w", typ, err)
				}
				// The length keeps adjacent resources from running together.
				fmt.Fprintf(h, "%d|", len(buf))
				h.Write(buf)
			}
		}
	}
	return [sha256.Size]byte(h.Sum(nil)), nil
}

// setResources serves resources without translate.Build or translate.Check. Tests use it to
// hand clients a snapshot they will reject.
func (s *Server) setResources(res map[translate.NodeKind]translate.Resources) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	// What is served no longer follows from a config: the next Apply must
	// not be taken for a repeat.
	s.last = applied{}
	version := s.versions.next()
	snaps := make(map[translate.NodeKind]*cachev3.Snapshot, len(res))
	for kind, r := range res {
		snap, err := cachev3.NewSnapshot(version, r)
		if err != nil {
			return err
		}
		snaps[kind] = snap
	}
	return s.serve(version, snaps, -1)
}

// serve sets the snapshots. Callers hold applyMu.
func (s *Server) serve(version string, snaps map[translate.NodeKind]*cachev3.Snapshot, endpoints int) error {
	for _, kind := range translate.Kinds {
		if snaps[kind] == nil {
			continue
		}
		if err := s.caches[kind].SetSnapshot(context.Background(), string(kind), snaps[kind]); err != nil {
			// Only a cache bug gets here; the other kind may already serve
			// the new version.
			s.log.Error("setting snapshot failed", zap.String("node_kind", string(kind)), zap.Error(err))
			return fmt.Errorf("set snapshot for %s nodes: %w", kind, err)
		}
		s.setServed(kind, version)
	}
	s.log.Info("serving snapshot", zap.String("version", version), zap.Int("endpoints", endpoints))
	return nil
}

func (s *Server) refuse(kind translate.NodeKind, err error) error {
	s.metrics.XDSSnapshotRefused.Inc()
	s.log.Warn("refusing config; still serving the last good snapshot",
		zap.String("node_kind", string(kind)), zap.String("version", s.Version(translate.KindEnvoy)), zap.Error(err))
	if kind == "" {
		return fmt.Errorf("refused: %w", err)
	}
	return fmt.Errorf("refused: resources for %s nodes: %w", kind, err)
}
