// Package admin serves the operator HTTP API: health, readiness, Prometheus
// metrics and (in later handlers) live control. It binds to loopback by
// default; anywhere else a bearer token is mandatory.
//
// A loopback listener without a token is still reachable from any web page
// the operator's browser opens, so every request is also checked for what
// only a browser sends (see guard.go): a Host that is not an allowed name
// (DNS rebinding), another Origin or a cross-site Sec-Fetch-Site, and, for
// changes, a Content-Type other than application/json (a "simple"
// cross-site POST that needs no CORS preflight).
//
// Mutation testing (`make mutate PKGS=./admin`) leaves two mutants alive
// that no input can tell from the code: in SetAllowedHosts, either && of
// `err == nil && host != "" && net.ParseIP(host) == nil` turned into ||
// only adds "" or an IP literal to the allowed names, and allowed()
// refuses an empty host and accepts every IP literal before it looks at
// that list.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/modelsplit/modelsplit/metrics"
)

// Check is one readiness condition; it returns nil when ready.
type Check struct {
	Name string
	Fn   func() error
}

// Options configures the handler.
type Options struct {
	Metrics *metrics.Metrics
	// Token, when not empty, is required as "Authorization: Bearer <token>"
	// on every path except /healthz and /readyz.
	Token  string
	Checks []Check
	// ListenAddr is the admin listener's address: a host name in it is
	// an allowed Host.
	ListenAddr string
	// AllowedHosts are more names clients may use in Host besides the
	// loopback names and IP literals (admin.allowed_hosts).
	AllowedHosts []string
}

// Handler is the admin HTTP API.
type Handler struct {
	mux   *http.ServeMux
	token string
	hosts atomic.Pointer[hostSet]
	// public are the paths served without the token besides /healthz and
	// /readyz (HandlePublic): pages that carry no data.
	public map[string]bool
}

// New builds the handler with /healthz, /readyz and /metrics.
func New(opts Options) *Handler {
	h := &Handler{mux: http.NewServeMux(), token: opts.Token}
	h.SetAllowedHosts(opts.ListenAddr, opts.AllowedHosts)
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	h.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		status := map[string]string{}
		ready := true
		for _, c := range opts.Checks {
			if err := c.Fn(); err != nil {
				status[c.Name] = err.Error()
				ready = false
			} else {
				status[c.Name] = "ok"
			}
		}
		code := http.StatusOK
		if !ready {
			code = http.StatusServiceUnavailable
		}
		WriteJSON(w, code, map[string]any{"ready": ready, "checks": status})
	})
	if opts.Metrics != nil {
		h.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Metrics.Registry, promhttp.HandlerOpts{}))
	}
	return h
}

// Handle registers another route (method and path pattern, as in ServeMux).
func (h *Handler) Handle(pattern string, handler http.Handler) { h.mux.Handle(pattern, handler) }

// HandlePublic registers a GET route for exactly path that is served
// without the token (the browser guard still applies). Only for static
// pages that carry no data, such as the console's token prompt; call it
// before serving.
func (h *Handler) HandlePublic(path string, handler http.Handler) {
	if h.public == nil {
		h.public = map[string]bool{}
	}
	h.public[path] = true
	pattern := "GET " + path
	if strings.HasSuffix(path, "/") {
		pattern += "{$}" // exactly path, not the subtree under it
	}
	h.mux.Handle(pattern, handler)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if code, msg := h.refuse(r); code != 0 {
		WriteError(w, code, msg)
		return
	}
	if h.token != "" && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && !h.public[r.URL.Path] && !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="modelsplit"`)
		WriteError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <token>)")
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(h.token)) == 1
}

// WriteJSON writes v as an indented JSON response.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes {"error": msg} with the status code.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, map[string]string{"error": msg})
}

// ErrTokenRequired is returned when the admin listener is exposed beyond
// loopback without a token.
var ErrTokenRequired = errors.New("the admin listener is not on loopback: set admin.token_file or MODELSPLIT_ADMIN_TOKEN")

// ResolveToken returns the admin token from the token file or the
// environment value, and refuses an exposed listener without one.
func ResolveToken(addr, tokenFile, envToken string) (string, error) {
	token := strings.TrimSpace(envToken)
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return "", fmt.Errorf("admin token: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return "", fmt.Errorf("admin token file %s is empty", tokenFile)
		}
	}
	if token == "" && !IsLoopback(addr) {
		return "", ErrTokenRequired
	}
	return token, nil
}

// IsLoopback reports whether a listen address only accepts local
// connections. An empty host (all interfaces) is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
