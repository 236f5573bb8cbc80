package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/modelsplit/modelsplit/api"
)

func runRollout(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "rollout", "[flags] start|status|pause|resume|promote|abort [ENDPOINT]", `
Drive an endpoint's rollout plan (rollout: in the config):
  start    put the plan's first step in force; later steps follow by
           themselves once their bake time is over and every gate passes
  status   step, next step due, gate verdicts with their figures
           (without ENDPOINT: every endpoint with a plan)
  pause    hold the current step (the bake time left is kept)
  resume   continue a paused rollout
  promote  end now with the canary at 100%
  abort    end now with the weights the rollout started from
A failing gate rolls back by itself (audited as auto_rollback).`+adminHelp)
	c := adminFlags(env, fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want start|status|pause|resume|promote|abort ENDPOINT")
	}
	action := pos[0]
	switch action {
	case "status":
		if len(pos) > 2 {
			return usagef("unexpected argument %q", pos[2])
		}
		if len(pos) == 1 {
			var list api.RolloutList
			if err := c.call(ctx, http.MethodGet, "/v1/rollouts", nil, &list); err != nil || c.asJSON {
				return err
			}
			if len(list.Rollouts) == 0 {
				fmt.Fprintln(env.Stdout, "no endpoint has a rollout plan")
			}
			for i, st := range list.Rollouts {
				if i > 0 {
					fmt.Fprintln(env.Stdout)
				}
				printRollout(env.Stdout, st)
			}
			return nil
		}
		var st api.RolloutStatus
		if err := c.call(ctx, http.MethodGet, "/v1/endpoints/"+pos[1]+"/rollout", nil, &st); err != nil || c.asJSON {
			return err
		}
		printRollout(env.Stdout, st)
		return nil
	case "start", "pause", "resume", "promote", "abort":
		if len(pos) != 2 {
			return usagef("want rollout %s ENDPOINT", action)
		}
		var st api.RolloutStatus
		if err := c.call(ctx, http.MethodPost, "/v1/endpoints/"+pos[1]+"/rollout/"+action, nil, &st); err != nil || c.asJSON {
			return err
		}
		printRollout(env.Stdout, st)
		return nil
	default:
		return usagef("unknown rollout action %q (start, status, pause, resume, promote, abort)", action)
	}
}

func printRollout(w io.Writer, st api.RolloutStatus) {
	fmt.Fprintf(w, "%s: %s rollout of %s (baseline %s): %s", st.Endpoint, st.Strategy, st.Canary, st.Baseline, st.Phase)
	if st.Plan != "" {
		fmt.Fprintf(w, ", step %d of %d, plan %s", st.Step, st.Steps, st.Plan)
	}
	fmt.Fprintln(w)
	if len(st.Weights) > 0 {
		fmt.Fprintf(w, "  weights %s", formatWeights(st.Weights))
		if len(st.Before) > 0 {
			fmt.Fprintf(w, " (before the rollout %s)", formatWeights(st.Before))
		}
		fmt.Fprintln(w)
	}
	switch {
	case st.NextStepDue != nil:
		fmt.Fprintf(w, "  next step due %s (in %s), once every gate passes\n", st.NextStepDue.Format(time.RFC3339),
			time.Until(*st.NextStepDue).Round(time.Second))
	case st.Phase == api.PhasePaused:
		fmt.Fprintf(w, "  paused with %s of bake time left\n", time.Duration(st.BakeRemaining*float64(time.Second)).Round(time.Second))
	}
	if st.Reason != "" {
		fmt.Fprintf(w, "  %s\n", st.Reason)
	}
	if len(st.Gates) == 0 {
		if st.Phase == api.PhaseRunning && st.Driver == "" {
			fmt.Fprintln(w, "  gate verdicts: kept by the replica that drives the rollout")
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  GATE\tVERDICT\tCANARY\tBASELINE\tN (C/B)\tP\tDETAIL")
	for _, g := range st.Gates {
		p := "-"
		if g.PValue != nil {
			p = fmt.Sprintf("%.3g", *g.PValue)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%.4g\t%.4g\t%d/%d\t%s\t%s\n", g.Gate, g.Verdict, g.Canary, g.Baseline, g.CanaryN, g.BaseN, p, g.Detail)
	}
	_ = tw.Flush()
}
