package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelsplit/modelsplit/config"
)

// role is one variant or shadow that a demo model server plays.
type role struct {
	endpoint string // endpoint name
	prefix   string // the endpoint's path prefix
	model    string // variant or shadow name
	shadow   bool
	served   atomic.Int64
}

// modelServer is one demo model server: it listens on one backend address
// of the config and answers for every role listed there.
type modelServer struct {
	addr  string
	roles []*role
	srv   *http.Server
	lis   net.Listener
}

// plannedServers lists a demo server for every HTTP backend address in cfg
// (variants and shadows), and the endpoints it cannot serve (gRPC).
func plannedServers(cfg *config.Config) (servers []*modelServer, skipped []string) {
	byAddr := map[string]*modelServer{}
	add := func(ep *config.Endpoint, name string, shadow bool, backends []config.Backend) {
		for _, b := range backends {
			addr := b.String()
			s := byAddr[addr]
			if s == nil {
				s = &modelServer{addr: addr}
				byAddr[addr] = s
				servers = append(servers, s)
			}
			s.roles = append(s.roles, &role{endpoint: ep.Name, prefix: ep.Match.PathPrefix, model: name, shadow: shadow})
		}
	}
	for i := range cfg.Endpoints {
		ep := &cfg.Endpoints[i]
		if ep.Protocol == config.ProtocolGRPC {
			skipped = append(skipped, ep.Name)
			continue
		}
		for _, v := range ep.Variants {
			if ep.VariantProtocol(&v) != config.ProtocolGRPC {
				add(ep, v.Name, false, v.Backends)
			}
		}
		for _, s := range ep.Shadows {
			if ep.ShadowProtocol(&s) != config.ProtocolGRPC {
				add(ep, s.Name, true, s.Backends)
			}
		}
	}
	for _, s := range servers {
		// Longest prefix first, so /a/b wins over /a on a shared address.
		sort.SliceStable(s.roles, func(i, j int) bool { return len(s.roles[i].prefix) > len(s.roles[j].prefix) })
	}
	return servers, skipped
}

// listen binds the server's address; an address in use is reported with the
// roles that wanted it.
func (s *modelServer) listen() error {
	lis, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("demo model server for %s: %w (free the port, change the backend in the config, or run with -backends=false to use your own servers)", s.names(), err)
	}
	s.lis = lis
	return nil
}

func (s *modelServer) serve() {
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	// Envoy talks HTTP/1.1 or, for http2 variants, h2c with prior knowledge.
	s.srv.Protocols = new(http.Protocols)
	s.srv.Protocols.SetHTTP1(true)
	s.srv.Protocols.SetUnencryptedHTTP2(true)
	go func() {
		if err := s.srv.Serve(s.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Printf("demo model server %s: %v\n", s.addr, err)
		}
	}()
}

func (s *modelServer) names() string {
	parts := make([]string, len(s.roles))
	for i, r := range s.roles {
		parts[i] = r.label()
	}
	return strings.Join(parts, ", ")
}

func (r *role) label() string {
	if r.shadow {
		return r.model + " (shadow)"
	}
	return r.model
}

// prediction is what a demo model answers.
type prediction struct {
	Model       string  `json:"model"`
	Endpoint    string  `json:"endpoint"`
	Shadow      bool    `json:"shadow,omitempty"`
	Predictions []label `json:"predictions"`
}

type label struct {
	Label string  `json:"label"`
	Score float64 `json:"score"`
}

// score is a fixed score per model name, so variants answer differently
// and a shadow's answer can be told apart from the primary's.
func score(model string) float64 {
	switch model {
	case "stable":
		return 0.91
	case "canary":
		return 0.94
	}
	h := fnv.New32a()
	h.Write([]byte(model))
	return 0.80 + float64(h.Sum32()%19)/100
}

func (s *modelServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		json.NewEncoder(w).Encode(map[string]any{"status": "ok", "models": s.names()})
		return
	}
	var match *role
	for _, ro := range s.roles {
		if strings.HasPrefix(r.URL.Path, ro.prefix) {
			match = ro
			break
		}
	}
	if match == nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf("no model under %s on %s (%s)", r.URL.Path, s.addr, s.names())})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		w.WriteHeader(http.StatusMethodNotAllowed)
		json.NewEncoder(w).Encode(map[string]string{"error": "use GET or POST"})
		return
	}
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20)) // the demo ignores its input
	match.served.Add(1)
	json.NewEncoder(w).Encode(prediction{
		Model: match.model, Endpoint: match.endpoint, Shadow: match.shadow,
		Predictions: []label{{Label: "cat", Score: score(match.model)}},
	})
}
