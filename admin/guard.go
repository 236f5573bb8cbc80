package admin

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// hostSet is the names a request's Host may carry.
type hostSet struct {
	exact    map[string]bool // lower-case names
	suffixes []string        // ".example.com" for "*.example.com"
}

// SetAllowedHosts replaces the names allowed in Host besides the loopback
// names and IP literals: the host of listenAddr when it is a name, and
// each of hosts ("name" or "*.domain"). Safe while serving (a config
// reload calls it).
func (h *Handler) SetAllowedHosts(listenAddr string, hosts []string) {
	set := &hostSet{exact: map[string]bool{"localhost": true}}
	if host, _, err := net.SplitHostPort(listenAddr); err == nil && host != "" && net.ParseIP(host) == nil {
		set.exact[strings.ToLower(host)] = true
	}
	for _, name := range hosts {
		name = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
		if rest, ok := strings.CutPrefix(name, "*."); ok {
			set.suffixes = append(set.suffixes, "."+rest)
		} else if name != "" {
			set.exact[name] = true
		}
	}
	h.hosts.Store(set)
}

// allowed reports whether a request's Host names this server. An IP
// literal always does: DNS rebinding needs a name the attacker controls,
// and a page whose origin is an IP address is this server's own page.
func (s *hostSet) allowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "" {
		return false
	}
	if net.ParseIP(host) != nil || s.exact[host] || strings.HasSuffix(host, ".localhost") {
		return true
	}
	for _, suf := range s.suffixes {
		if strings.HasSuffix(host, suf) {
			return true
		}
	}
	return false
}

// refuse returns the status and message for a request that a browser made
// on behalf of another site, or 0 for one to serve:
//
//   - Host must be an allowed name (else 403): DNS rebinding;
//   - Sec-Fetch-Site, when sent, must be same-origin or none (a typed URL),
//     and Origin, when sent, must be this server's own origin (else 403);
//   - a change (any method but GET, HEAD, OPTIONS) must say
//     Content-Type: application/json (else 415): browsers send
//     text/plain, form and multipart bodies cross-site without asking
//     first, but never application/json without a CORS preflight, which
//     this server does not answer.
//
// Clients that are not browsers (the CLI, curl, Prometheus, probes) send
// neither Origin nor Sec-Fetch-Site and use an allowed Host.
func (h *Handler) refuse(r *http.Request) (int, string) {
	if !h.hosts.Load().allowed(r.Host) {
		return http.StatusForbidden, fmt.Sprintf("Host %q is not an allowed name for the admin API: use a loopback address or localhost, "+
			"or add the name to admin.allowed_hosts (this refuses DNS-rebinding requests from web pages)", r.Host)
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return http.StatusForbidden, fmt.Sprintf("cross-origin browser request refused (Sec-Fetch-Site: %s): "+
			"the admin API only answers its own origin and clients such as the modelsplit CLI", site)
	}
	if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r) {
		return http.StatusForbidden, fmt.Sprintf("cross-origin browser request refused (origin %q is not %s): "+
			"the admin API only answers its own origin and clients such as the modelsplit CLI", origin, ownOrigin(r))
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return 0, ""
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		if ct == "" {
			ct = "none"
		}
		return http.StatusUnsupportedMediaType, fmt.Sprintf("changes need Content-Type: application/json (got %s), even without a body", ct)
	}
	return 0, ""
}

func ownOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// sameOrigin reports whether origin is this server as the request
// reached it (scheme, host and port; "null" never is).
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	want, _ := url.Parse(ownOrigin(r))
	return strings.EqualFold(u.Scheme, want.Scheme) && strings.EqualFold(withPort(u), withPort(want))
}

func withPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
