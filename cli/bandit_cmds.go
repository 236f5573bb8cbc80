package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelsplit/modelsplit/api"
)

func runBandit(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "bandit", "[flags] status [ENDPOINT]", `
Show bandits (bandit: in the config): per arm the rewards counted, mean
reward with a 95% interval, probability of being best, and the weight in
force (basis points of 10,000); the next update time.`+adminHelp)
	c := adminFlags(env, fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 || pos[0] != "status" || len(pos) > 2 {
		return usagef("want bandit status [ENDPOINT]")
	}
	var list api.BanditList
	if len(pos) == 2 {
		var one api.BanditStatus
		if err := c.call(ctx, http.MethodGet, "/v1/endpoints/"+pos[1]+"/bandit", nil, &one); err != nil || c.asJSON {
			return err
		}
		list.Bandits = []api.BanditStatus{one}
	} else if err := c.call(ctx, http.MethodGet, "/v1/bandits", nil, &list); err != nil || c.asJSON {
		return err
	}
	if len(list.Bandits) == 0 {
		fmt.Fprintln(env.Stdout, "no endpoint has a bandit")
	}
	for i, b := range list.Bandits {
		if i > 0 {
			fmt.Fprintln(env.Stdout)
		}
		printBandit(env.Stdout, b)
	}
	return nil
}

func printBandit(w io.Writer, b api.BanditStatus) {
	fmt.Fprintf(w, "%s: bandit (%s rewards, floor %.3g%%): %s, %d updates", b.Endpoint, b.Reward, b.Floor, b.Phase, b.Updates)
	if b.NextUpdate != nil {
		fmt.Fprintf(w, ", next %s", b.NextUpdate.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ARM\tREWARDS\tMEAN\t95% INTERVAL\tP(BEST)\tWEIGHT")
	for _, a := range b.Arms {
		if a.Control {
			fmt.Fprintf(tw, "  %s (control)\t-\t-\t-\t-\t%.2f%%\n", a.Name, float64(a.Weight)/100)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%d\t%.4g\t[%.4g, %.4g]\t%.3f\t%.2f%%\n", a.Name, a.Pulls, a.Mean, a.Lower, a.Upper, a.ProbBest, float64(a.Weight)/100)
	}
	_ = tw.Flush()
}

func runReward(ctx context.Context, env Env, args []string) error {
	fs := newFlags(env, "reward", "[flags] ENDPOINT (-user U | -request-id R) -value X [-id ID] | ENDPOINT -file F", `
Post rewards to an endpoint's bandit (bandit.reward: api). A reward joins
the variant that served the user (sticky key) or the request (x-request-id,
answered in the last 15 minutes on that replica). -id makes a retried post
count once (default: user or request id plus the current second). -file
posts a batch: a JSON array of {"id", "user" or "request_id", "value"}
(at most 1,000), "-" for standard input.`+adminHelp)
	c := adminFlags(env, fs)
	user := fs.String("user", "", "the user's sticky key")
	reqID := fs.String("request-id", "", "the request's x-request-id")
	value := fs.String("value", "", "the reward: 0 or 1, or any number for numeric bandits")
	id := fs.String("id", "", "reward `id` (a retry with the same id counts once)")
	file := fs.String("file", "", "JSON array of rewards (`file`, - for stdin)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want ENDPOINT")
	}
	var body api.RewardsRequest
	if *file != "" {
		var b []byte
		if *file == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(*file)
		}
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &body.Rewards); err != nil {
			return usagef("-file %s: want a JSON array of rewards: %v", *file, err)
		}
	} else {
		if (*user == "") == (*reqID == "") || *value == "" {
			return usagef("give -value and exactly one of -user and -request-id (or -file)")
		}
		if *id == "" {
			*id = fmt.Sprintf("%s%s@%d", *user, *reqID, time.Now().Unix())
		}
		body.Rewards = []api.Reward{{ID: *id, User: *user, RequestID: *reqID, Value: json.RawMessage(strings.TrimSpace(*value))}}
	}
	var res api.RewardsResult
	if err := c.call(ctx, http.MethodPost, "/v1/endpoints/"+pos[0]+"/rewards", body, &res); err != nil || c.asJSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "%d accepted, %d duplicates, %d refused\n", res.Accepted, res.Duplicates, len(res.Refused))
	for _, r := range res.Refused {
		fmt.Fprintf(env.Stdout, "  rewards[%d] (id %s): %s\n", r.Index, r.ID, r.Reason)
	}
	return nil
}
