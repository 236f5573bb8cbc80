package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// PromQL answers a gate's query with one number.
type PromQL interface {
	Query(ctx context.Context, server, query string) (float64, error)
}

// httpPromQL asks a Prometheus server's /api/v1/query.
type httpPromQL struct{}

func (httpPromQL) Query(ctx context.Context, server, query string) (float64, error) {
	if server == "" {
		return 0, errors.New("no prometheus server set in the rollout plan")
	}
	u := strings.TrimSuffix(server, "/") + "/api/v1/query?query=" + url.QueryEscape(query)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("prometheus %s unreachable: %w", server, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("prometheus %s: reading the answer: %w", server, err)
	}
	var ans struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return 0, fmt.Errorf("prometheus %s answered %s, not a query result", server, resp.Status)
	}
	if ans.Status != "success" {
		return 0, fmt.Errorf("prometheus %s: query %q: %s", server, query, ans.Error)
	}
	var sample struct {
		Value [2]any `json:"value"`
	}
	switch {
	case ans.Data.ResultType == "scalar":
		var v [2]any
		if len(ans.Data.Result) != 2 {
			return 0, fmt.Errorf("prometheus %s: query %q: malformed scalar", server, query)
		}
		if err := json.Unmarshal(ans.Data.Result[1], &v[1]); err != nil {
			return 0, err
		}
		sample.Value = v
	case len(ans.Data.Result) != 1:
		return 0, fmt.Errorf("prometheus %s: query %q returned %d series; a gate needs exactly one (aggregate it, e.g. sum(...))", server, query, len(ans.Data.Result))
	default:
		if err := json.Unmarshal(ans.Data.Result[0], &sample); err != nil {
			return 0, fmt.Errorf("prometheus %s: query %q: %w", server, query, err)
		}
	}
	s, ok := sample.Value[1].(string)
	if !ok {
		return 0, fmt.Errorf("prometheus %s: query %q: no value", server, query)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("prometheus %s: query %q: value %q: %w", server, query, s, err)
	}
	return v, nil
}

// postWebhook POSTs ev as JSON; any answer but 2xx is an error.
func postWebhook(ctx context.Context, u string, ev Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
