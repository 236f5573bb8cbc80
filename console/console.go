// Package console serves the operators' web console from the admin
// listener: plain HTML, CSS and JavaScript embedded in the binary (no
// build step, nothing fetched from elsewhere), drawing everything from
// the admin JSON API, plus the one JSON route the API lacked for it,
// GET /v1/endpoints/{endpoint}/series (per-variant figures per stats
// window, for the charts).
//
// Tokens: the admin handler serves nothing but /healthz, /readyz and
// the routes registered with HandlePublic without the bearer token. The
// console registers only its shell that way: index.html (the token
// prompt), shell.js and style.css, which hold no data and no console
// code. shell.js asks the operator for the token when the listener
// needs one, keeps it in the tab's sessionStorage, and fetches
// /console/app.js (token-guarded like the API) with it as a bearer
// header; app.js then sends the same header on every API fetch. On a
// loopback listener without a token, app.js loads at once and no prompt
// is shown.
//
// Browser guard: the console's fetches are same-origin (Sec-Fetch-Site:
// same-origin, Origin the server's own), and every change carries
// Content-Type: application/json, bodyless ones included, so they pass
// admin's guard as the CLI's requests do; the page itself is a
// top-level navigation (Sec-Fetch-Site: none) on an allowed Host.
package console

import (
	"embed"
	"io/fs"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/modelsplit/modelsplit/admin"
	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/control/live"
	"github.com/modelsplit/modelsplit/statistics"
	"github.com/modelsplit/modelsplit/stats"
)

//go:embed assets
var assets embed.FS

// Options is what the console reads.
type Options struct {
	// Stats holds the per-variant windows the series route reads.
	Stats *stats.Recorder
	// Config is the config in force (file plus live changes).
	Config func() *config.Config
}

// public are the shell's files, served without the token: they hold no
// data and no console code (see the package doc).
var public = map[string]string{
	"/":                  "assets/index.html",
	"/console/shell.js":  "assets/shell.js",
	"/console/style.css": "assets/style.css",
}

// guarded are served only with the token (when the listener has one).
var guarded = map[string]string{
	"/console/app.js": "assets/app.js",
}

// csp allows the page its own origin only; app.js runs from a blob: URL
// because shell.js fetches it with the bearer header (a <script src>
// cannot send one).
const csp = "default-src 'none'; script-src 'self' blob:; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Register adds the console's routes to the admin handler.
func Register(h *admin.Handler, opts Options) {
	for path, file := range public {
		h.HandlePublic(path, serveFile(file))
	}
	for path, file := range guarded {
		h.Handle("GET "+path, serveFile(file))
	}
	h.Handle("GET /v1/endpoints/{endpoint}/series", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seconds := 300
		if s := r.URL.Query().Get("seconds"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 || n > 86400 {
				admin.WriteError(w, http.StatusBadRequest, "seconds: "+strconv.Quote(s)+" is not a whole number of seconds from 1 to 86400")
				return
			}
			seconds = n
		}
		cfg := opts.Config()
		if cfg == nil {
			cfg = &config.Config{}
		}
		name := r.PathValue("endpoint")
		e, ok := cfg.Endpoint(name)
		if !ok {
			admin.WriteError(w, http.StatusNotFound, live.UnknownEndpoint(cfg, name).Error())
			return
		}
		admin.WriteJSON(w, http.StatusOK, Series(opts.Stats, e, time.Now().Add(-time.Duration(seconds)*time.Second)))
	}))
}

func serveFile(name string) http.Handler {
	b, err := fs.ReadFile(assets, name)
	if err != nil {
		panic("console: " + name + " is not embedded: " + err.Error())
	}
	ctype := "text/html; charset=utf-8"
	switch {
	case len(name) > 3 && name[len(name)-3:] == ".js":
		ctype = "text/javascript; charset=utf-8"
	case len(name) > 4 && name[len(name)-4:] == ".css":
		ctype = "text/css; charset=utf-8"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Type", ctype)
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		// The binary is the version: revalidation costs nothing on the
		// admin listener, and a stale app.js after an upgrade would
		// misread the API.
		hd.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(b)
		}
	})
}

// Series is e's windows that ended after since, the open one last, as
// the series route answers them.
func Series(rec *stats.Recorder, e *config.Endpoint, since time.Time) api.Series {
	out := api.Series{Endpoint: e.Name, Windows: []api.SeriesWindow{}}
	for _, v := range e.Variants {
		out.Variants = append(out.Variants, v.Name)
	}
	if rec == nil {
		return out
	}
	out.WindowSeconds = rec.WindowLength().Seconds()
	ws := rec.Windows(e.Name, since)
	if cur, ok := rec.Current(e.Name); ok {
		ws = append(ws, cur)
	}
	for _, w := range ws {
		sw := api.SeriesWindow{Start: w.Start, End: w.End, Partial: w.Partial, Weights: w.Weights,
			Variants: make(map[string]api.SeriesPoint, len(w.Variants))}
		for name, c := range w.Variants {
			sw.Variants[name] = point(c)
		}
		out.Windows = append(out.Windows, sw)
	}
	return out
}

// bounds are stats.LatencyBuckets with the +Inf bucket.
var bounds = append(append([]float64(nil), stats.LatencyBuckets[:]...), math.Inf(1))

func point(c stats.VariantCounts) api.SeriesPoint {
	p := api.SeriesPoint{Requests: c.Requests, Decisions: c.Decisions, NewUsers: c.Assigned,
		Errors: c.Responses[stats.Class5xx] + c.Responses[stats.ClassNone]}
	if c.Requests > 0 {
		r := float64(p.Errors) / float64(c.Requests)
		p.ErrorRatio = &r
	}
	q := func(x float64) *float64 {
		v, err := statistics.HistogramQuantile(x, bounds, c.Latency.Counts[:])
		if err != nil {
			return nil
		}
		return &v
	}
	p.P50, p.P90, p.P99 = q(0.5), q(0.9), q(0.99)
	return p
}
