package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
)

// Commands that talk to a running server's admin API.

const adminHelp = `
The admin API is found at -admin (default $MODELSPLIT_ADMIN, else
http://` + config.DefaultAdminAddr + `). A bearer token, when the server
requires one, comes from -token-file or $MODELSPLIT_ADMIN_TOKEN.`

// adminClient is one admin API call's settings.
type adminClient struct {
	env       Env
	base      string
	tokenFile string
	asJSON    bool
	timeout   time.Duration
}

func adminFlags(env Env, fs *flag.FlagSet) *adminClient {
	c := &adminClient{env: env}
	def := env.Getenv("MODELSPLIT_ADMIN")
	if def == "" {
		def = "http://" + config.DefaultAdminAddr
	}
	fs.StringVar(&c.base, "admin", def, "admin API `URL` of the modelsplit server")
	fs.StringVar(&c.tokenFile, "token-file", "", "`file` holding the admin bearer token (default $MODELSPLIT_ADMIN_TOKEN)")
	fs.BoolVar(&c.asJSON, "json", false, "print the API's JSON instead of a table")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for the server")
	return c
}

// parseInterleaved parses flags that may come before, between or after
// positional arguments (modelsplit promote scorer b --json).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func (c *adminClient) token() (string, error) {
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return "", fmt.Errorf("admin token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(c.env.Getenv("MODELSPLIT_ADMIN_TOKEN")), nil
}

// call sends one request; a non-2xx answer becomes an error carrying the
// server's message.
func (c *adminClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.base, "/")+path, rd)
	if err != nil {
		return usagef("-admin %q: %v", c.base, err)
	}
	req.Header.Set("User-Agent", "modelsplit-cli/"+Version)
	if body != nil || method != http.MethodGet {
		// The server refuses changes without it, bodyless ones included
		// (a browser cannot send it cross-site without a CORS preflight).
		req.Header.Set("Content-Type", "application/json")
	}
	tok, err := c.token()
	if err != nil {
		return err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("admin API at %s: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.ErrorBody
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	if c.asJSON {
		_, err := c.env.Stdout.Write(raw)
		return err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("admin API answered something that is not modelsplit's JSON: %w", err)
		}
	}
	return nil
}

func runStatus(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "status", "[flags] [ENDPOINT]", `
Show each endpoint's variants: configured weight, weight in force (live
changes included), new-user share, live traffic share over the last minute,
requests, users assigned, and shadows with their comparison results.`+adminHelp)
	c := adminFlags(env, fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("unexpected argument %q", pos[1])
	}
	var list api.EndpointList
	if len(pos) == 1 {
		var one api.EndpointStatus
		if err := c.call(ctx, http.MethodGet, "/v1/endpoints/"+pos[0], nil, &one); err != nil || c.asJSON {
			return err
		}
		list.Endpoints = []api.EndpointStatus{one}
	} else if err := c.call(ctx, http.MethodGet, "/v1/endpoints", nil, &list); err != nil || c.asJSON {
		return err
	}
	printStatus(env.Stdout, list)
	// Rollouts in progress or ended, under the table (a server without
	// rollouts answers 404: nothing to add).
	var rl api.RolloutList
	if err := c.call(ctx, http.MethodGet, "/v1/rollouts", nil, &rl); err == nil {
		for _, st := range rl.Rollouts {
			if len(pos) == 1 && st.Endpoint != pos[0] {
				continue
			}
			if st.Plan == "" {
				continue // a plan never started
			}
			fmt.Fprintln(env.Stdout)
			printRollout(env.Stdout, st)
		}
	}
	var bl api.BanditList
	if err := c.call(ctx, http.MethodGet, "/v1/bandits", nil, &bl); err == nil {
		for _, b := range bl.Bandits {
			if len(pos) == 1 && b.Endpoint != pos[0] {
				continue
			}
			fmt.Fprintln(env.Stdout)
			printBandit(env.Stdout, b)
		}
	}
	return nil
}

func printStatus(w io.Writer, list api.EndpointList) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, e := range list.Endpoints {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		mode := "config file"
		if e.Override {
			mode = "live override"
			if e.OverrideSince != nil {
				mode += " since " + e.OverrideSince.Format(time.RFC3339)
			}
		}
		fmt.Fprintf(tw, "ENDPOINT %s\t(weights: %s; rollback depth %d)\n", e.Name, mode, e.RollbackDepth)
		fmt.Fprintf(tw, "VARIANT\tCONFIGURED\tWEIGHT\tNEW USERS\tLIVE (%s)\tREQUESTS\tDECISIONS\tUSERS\n", e.LiveSource)
		for _, v := range e.Variants {
			live := "-"
			if v.LiveShare != nil {
				live = fmt.Sprintf("%.1f%% / %.0fs", *v.LiveShare*100, v.LiveWindowSeconds)
			}
			users := "-"
			if v.Users != nil {
				users = strconv.FormatInt(*v.Users, 10)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f%%\t%s\t%d\t%d\t%s\n", v.Name, v.ConfiguredWeight, v.Weight, v.WeightShare*100, live, v.Requests, v.Decisions, users)
		}
		if len(e.Shadows) > 0 {
			fmt.Fprintln(tw, "SHADOW\tSAMPLE\tMODE\tSTATE\tCOMPARED\tAGREEMENT\tERRORS\tDROPPED")
			for _, s := range e.Shadows {
				sample := fmt.Sprintf("%g%% users", s.Percent)
				if s.PerRequest {
					sample = fmt.Sprintf("%g%% requests", s.Percent)
				}
				mode, state, agreement := "mirror", "active", "-"
				if s.Compare {
					mode = "compare"
				}
				if s.Paused {
					state = "paused"
				}
				if s.Agreement != nil {
					agreement = fmt.Sprintf("%.2f%%", *s.Agreement*100)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\n", s.Name, sample, mode, state, s.Compared, agreement, s.Errors, s.Dropped)
			}
		}
	}
	tw.Flush()
}

func printChange(env Env, res api.ChangeResult) {
	fmt.Fprintf(env.Stdout, "%s: %s done (was %s, now %s)\n", res.Endpoint, res.Audit.Action, formatWeights(res.Previous), formatWeights(res.Weights))
	if len(res.Paused) > 0 {
		fmt.Fprintf(env.Stdout, "paused shadows: %s\n", strings.Join(res.Paused, ", "))
	}
	if !res.Persisted {
		fmt.Fprintf(env.Stderr, "warning: in force but not persisted yet (a restart would lose it until the server retries): %s\n", res.Warning)
	}
}

func formatWeights(w map[string]int) string {
	names := make([]string, 0, len(w))
	for n := range w {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, w[n])
	}
	return strings.Join(parts, " ")
}

func runSetWeights(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "set-weights", "[flags] ENDPOINT VARIANT=WEIGHT...", `
Set an endpoint's weights live: every variant, e.g.
  modelsplit set-weights scorer a=90 b=10
New users follow the new weights at once (decisions) and in Envoy through
xDS; assigned users keep their variant unless it drops to 0. The change is
persisted and audited, and rollback restores the previous weights.`+adminHelp)
	c := adminFlags(env, fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("want ENDPOINT VARIANT=WEIGHT..., e.g. set-weights scorer a=90 b=10")
	}
	weights := map[string]int{}
	for _, kv := range pos[1:] {
		name, val, ok := strings.Cut(kv, "=")
		w, err := strconv.Atoi(val)
		if !ok || name == "" || err != nil {
			return usagef("%q is not VARIANT=WEIGHT (a whole number)", kv)
		}
		if _, dup := weights[name]; dup {
			return usagef("variant %q given twice", name)
		}
		weights[name] = w
	}
	var res api.ChangeResult
	if err := c.call(ctx, http.MethodPut, "/v1/endpoints/"+pos[0]+"/weights", api.SetWeightsRequest{Weights: weights}, &res); err != nil || c.asJSON {
		return err
	}
	printChange(env, res)
	return nil
}

func runPromote(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "promote", "[flags] ENDPOINT VARIANT", `
Send all traffic of an endpoint to one variant (a blue-green switch): it
gets the whole weight and the others 0, so users assigned elsewhere move
too. rollback restores the previous split and brings them back.`+adminHelp)
	c := adminFlags(env, fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("want ENDPOINT VARIANT")
	}
	var res api.ChangeResult
	if err := c.call(ctx, http.MethodPost, "/v1/endpoints/"+pos[0]+"/promote", api.PromoteRequest{Variant: pos[1]}, &res); err != nil || c.asJSON {
		return err
	}
	printChange(env, res)
	return nil
}

func runRollback(ctx context.Context, env Env, args []string) error {
	return simpleChange(ctx, env, args, "rollback", http.MethodPost, "/rollback", `
Restore the weights an endpoint had before its last live change (repeat to
go further back).`)
}

func runReset(ctx context.Context, env Env, args []string) error {
	return simpleChange(ctx, env, args, "reset", http.MethodDelete, "/override", `
Drop an endpoint's live overrides (weights, shadow pauses): the config
file's settings are in force again.`)
}

func simpleChange(ctx context.Context, env Env, args []string, name, method, suffix, help string) error {
	fs := newFlags(env, name, "[flags] ENDPOINT", help+adminHelp)
	c := adminFlags(env, fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want ENDPOINT")
	}
	var res api.ChangeResult
	if err := c.call(ctx, method, "/v1/endpoints/"+pos[0]+suffix, nil, &res); err != nil || c.asJSON {
		return err
	}
	printChange(env, res)
	return nil
}

func runShadow(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "shadow", "[flags] pause|resume|disagreements ENDPOINT SHADOW", `
Pause or resume a shadow (no traffic is mirrored or compared while paused),
or list a compare-mode shadow's recent disagreements with the primary
(configured fields redacted).`+adminHelp)
	c := adminFlags(env, fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 {
		return usagef("want pause|resume|disagreements ENDPOINT SHADOW")
	}
	path := "/v1/endpoints/" + pos[1] + "/shadows/" + pos[2]
	switch pos[0] {
	case "pause", "resume":
		var res api.ChangeResult
		if err := c.call(ctx, http.MethodPost, path+"/"+pos[0], nil, &res); err != nil || c.asJSON {
			return err
		}
		fmt.Fprintf(env.Stdout, "%s/%s: %sd\n", pos[1], pos[2], pos[0])
		if !res.Persisted {
			fmt.Fprintf(env.Stderr, "warning: in force but not persisted yet: %s\n", res.Warning)
		}
		return nil
	case "disagreements":
		var d api.Disagreements
		if err := c.call(ctx, http.MethodGet, path+"/disagreements", nil, &d); err != nil || c.asJSON {
			return err
		}
		if len(d.Samples) == 0 {
			fmt.Fprintln(env.Stdout, "no disagreements recorded")
			return nil
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tREQUEST ID\tREASON\tSTATUS P/S\tLATENCY P/S\tPRIMARY\tSHADOW")
		for _, s := range d.Samples {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%.0fms/%.0fms\t%s\t%s\n", s.Time.Format(time.RFC3339), s.RequestID, s.Reason,
				s.PrimaryStatus, s.ShadowStatus, s.PrimaryLatency*1000, s.ShadowLatency*1000, clip(s.Primary, 60), clip(s.Shadow, 60))
		}
		return tw.Flush()
	default:
		return usagef("unknown shadow action %q (pause, resume or disagreements)", pos[0])
	}
}

func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func runAudit(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "audit", "[flags]", `
List recent live changes, newest first: what changed, when, and from where.`+adminHelp)
	c := adminFlags(env, fs)
	limit := fs.Int("limit", 20, "how many entries")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	var list api.AuditList
	if err := c.call(ctx, http.MethodGet, fmt.Sprintf("/v1/audit?limit=%d", *limit), nil, &list); err != nil || c.asJSON {
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTION\tENDPOINT\tBEFORE\tAFTER\tFROM\tDETAIL")
	for _, a := range list.Entries {
		ep := a.Endpoint
		if a.Shadow != "" {
			ep += "/" + a.Shadow
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Time.Format(time.RFC3339), a.Action, ep, formatWeights(a.Before), formatWeights(a.After), a.Remote, a.Detail)
	}
	return tw.Flush()
}
