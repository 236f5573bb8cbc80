package bandit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/stats"
)

func banditConfig(t *testing.T, bandit string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("b.yaml", []byte(`endpoints:
  - name: rec
    match: {path_prefix: /rec}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 1, backends: ["10.0.0.2:80"]}
      - {name: c, weight: 1, backends: ["10.0.0.3:80"]}
    bandit: `+bandit+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// rewardsFor is the reward path on a real decision engine (memory store).
func rewardsFor(t *testing.T, cfg *config.Config) (*Rewards, *cohort.Engine, *metrics.Metrics) {
	m := metrics.New()
	e := cohort.NewEngine(cohort.NewMemoryStore(0), cohort.Options{Metrics: m})
	e.SetConfig(cfg)
	r := NewRewards(m, e, nil, "")
	r.SetConfig(cfg)
	return r, e, m
}

func rewardSum(m *metrics.Metrics, arm string) (n uint64, sum float64) {
	c := m.Stats.Totals("rec").Variants[arm]
	return c.Rewards, c.RewardSum
}

type hdrs map[string]string

func (h hdrs) Get(k string) (string, bool) { v, ok := h[k]; return v, ok }

func post(t *testing.T, r *Rewards, cfg *config.Config, body string) (api.RewardsResult, error) {
	t.Helper()
	var req api.RewardsRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatalf("test body %s: %v", body, err)
	}
	return r.Post(context.Background(), cfg, "rec", req)
}

func TestRewardsAPIJoinsUsersAndRequests(t *testing.T) {
	cfg := banditConfig(t, "{reward: api}")
	r, e, m := rewardsFor(t, cfg)
	d, err := e.Decide(context.Background(), "rec", hdrs{"x-user-id": "u1"})
	if err != nil {
		t.Fatal(err)
	}
	other := "a" // the request's variant, not the user's
	if d.Variant == "a" {
		other = "b"
	}
	r.Observed("rec", other, stats.Class2xx, time.Millisecond, "req-7", "", false, false)
	res, err := post(t, r, cfg, `{"rewards": [
		{"id": "r1", "user": "u1", "value": 1},
		{"id": "r2", "request_id": "req-7", "value": 0},
		{"id": "r1", "user": "u1", "value": 1},
		{"id": "r3", "user": "nobody", "value": 1},
		{"id": "r4", "request_id": "req-unknown", "value": 1}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 2 || res.Duplicates != 1 || len(res.Refused) != 2 || res.Refused[0].Index != 3 || res.Refused[1].Index != 4 {
		t.Fatalf("result %+v", res)
	}
	if n, sum := rewardSum(m, d.Variant); n != 1 || sum != 1 {
		t.Errorf("user u1's variant %s: %d rewards summing %v, want 1 and 1", d.Variant, n, sum)
	}
	if n, sum := rewardSum(m, other); n != 1 || sum != 0 {
		t.Errorf("request req-7 (served by %s): %d rewards summing %v, want 1 and 0", other, n, sum)
	}
	if got := testutil.ToFloat64(m.BanditRewards.WithLabelValues("rec", "api", "unknown")); got != 2 {
		t.Errorf("unknown rewards counted %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.BanditRewards.WithLabelValues("rec", "api", "duplicate")); got != 1 {
		t.Errorf("duplicates counted %v, want 1", got)
	}
	// The same id again in a later post still counts once.
	res, _ = post(t, r, cfg, `{"rewards": [{"id": "r2", "request_id": "req-7", "value": 1}]}`)
	if res.Accepted != 0 || res.Duplicates != 1 {
		t.Errorf("a re-posted id: %+v", res)
	}
}

// Bad rewards refuse the whole batch with a 4xx naming the reward and the
// problem; nothing of it is counted.
func TestRewardsAPIRefusesBadInput(t *testing.T) {
	cfg := banditConfig(t, "{reward: api}")
	r, _, m := rewardsFor(t, cfg)
	big := make([]string, api.MaxRewardBatch+1)
	for i := range big {
		big[i] = fmt.Sprintf(`{"id": "x%d", "user": "u", "value": 1}`, i)
	}
	cases := []struct{ body, want string }{
		{`{"rewards": []}`, `"rewards" is required`},
		{`{"rewards": [{"id": "a", "user": "u", "value": -1}]}`, "rewards[0].value: must be 0 or 1 (the endpoint's rewards are binary), got -1"},
		{`{"rewards": [{"id": "a", "user": "u", "value": 0.5}]}`, "rewards[0].value: must be 0 or 1"},
		{`{"rewards": [{"id": "a", "user": "u", "value": 1}, {"id": "b", "user": "u", "value": "yes"}]}`, "rewards[1].value: must be a JSON number, got the string"},
		{`{"rewards": [{"id": "a", "user": "u", "value": 1e999}]}`, "rewards[0].value: must be a finite number"},
		{`{"rewards": [{"id": "a", "value": 1}]}`, "rewards[0]: give exactly one of user and request_id"},
		{`{"rewards": [{"id": "a", "user": "u", "request_id": "r", "value": 1}]}`, "exactly one of user and request_id"},
		{`{"rewards": [{"user": "u", "value": 1}]}`, "rewards[0].id: required"},
		{`{"rewards": [{"id": "a", "user": "u"}]}`, "rewards[0].value: required"},
		{`{"rewards": [` + strings.Join(big, ",") + `]}`, "1001 in one batch, at most 1000"},
	}
	for _, tc := range cases {
		_, err := post(t, r, cfg, tc.body)
		re, ok := err.(*RequestError)
		if !ok || re.Status/100 != 4 || !strings.Contains(re.Msg, tc.want) {
			t.Errorf("body %.80s: %v, want a 4xx containing %q", tc.body, err, tc.want)
		}
	}
	if n, _ := rewardSum(m, "a"); n != 0 {
		t.Errorf("refused batches counted %d rewards", n)
	}
	// Numeric bandits take negative numbers.
	num := banditConfig(t, "{reward: api, numeric: true}")
	rn, e, _ := rewardsFor(t, num)
	if _, err := e.Decide(context.Background(), "rec", hdrs{"x-user-id": "u"}); err != nil {
		t.Fatal(err)
	}
	if res, err := post(t, rn, num, `{"rewards": [{"id": "a", "user": "u", "value": -2.5}]}`); err != nil || res.Accepted != 1 {
		t.Errorf("numeric -2.5: %+v %v", res, err)
	}
	// A bandit fed by headers takes no posted rewards.
	hc := banditConfig(t, "{reward: header}")
	rh, _, _ := rewardsFor(t, hc)
	if _, err := post(t, rh, hc, `{"rewards": [{"id": "a", "user": "u", "value": 1}]}`); err == nil || !strings.Contains(err.Error(), "from header, not the API") {
		t.Errorf("rewards to a header bandit: %v", err)
	}
}

// Answers become rewards: success is a 2xx within the budget; a header's
// number is read, a missing or malformed one counted and ignored; the
// answer of a request the bandit did not place earns nothing.
func TestObservedAnswersBecomeRewards(t *testing.T) {
	cfg := banditConfig(t, "{reward: success, latency_budget: 100ms}")
	r, _, m := rewardsFor(t, cfg)
	r.Observed("rec", "a", stats.Class2xx, 50*time.Millisecond, "", "", false, false)
	r.Observed("rec", "a", stats.Class2xx, 150*time.Millisecond, "", "", false, false)
	r.Observed("rec", "a", stats.Class5xx, time.Millisecond, "", "", false, false)
	r.Observed("rec", "a", stats.Class2xx, time.Millisecond, "", "", false, true) // unsampled
	if n, sum := rewardSum(m, "a"); n != 3 || sum != 1 {
		t.Errorf("success rewards: %d summing %v, want 3 and 1", n, sum)
	}
	hc := banditConfig(t, "{reward: header}")
	rh, _, mh := rewardsFor(t, hc)
	if h, ok := rh.RewardHeader("rec"); !ok || h != config.RewardHeader {
		t.Fatalf("reward header %q %v", h, ok)
	}
	rh.Observed("rec", "b", stats.Class2xx, 0, "", "1", true, false)
	rh.Observed("rec", "b", stats.Class2xx, 0, "", "0", true, false)
	rh.Observed("rec", "b", stats.Class2xx, 0, "", "0.7", true, false) // binary: invalid
	rh.Observed("rec", "b", stats.Class2xx, 0, "", "NaN", true, false)
	rh.Observed("rec", "b", stats.Class2xx, 0, "", "", false, false)
	rh.Observed("rec", "b", stats.Class2xx, 0, "", "1", true, true) // unsampled
	if n, sum := rewardSum(mh, "b"); n != 2 || sum != 1 {
		t.Errorf("header rewards: %d summing %v, want 2 and 1", n, sum)
	}
	for result, want := range map[string]float64{"invalid": 2, "missing": 1, "unsampled": 1, "counted": 2} {
		if got := testutil.ToFloat64(mh.BanditRewards.WithLabelValues("rec", "header", result)); got != want {
			t.Errorf("header rewards %s: %v, want %v", result, got, want)
		}
	}
}

func TestRequestJoinIsBounded(t *testing.T) {
	f := newFIFO[string](3, time.Minute)
	for i := range 5 {
		f.put(fmt.Sprint(i), "v")
	}
	if f.len() != 3 {
		t.Fatalf("fifo of 3 holds %d", f.len())
	}
	if _, ok := f.get("0"); ok {
		t.Error("the oldest entry survived")
	}
	if _, ok := f.get("4"); !ok {
		t.Error("the newest entry is gone")
	}
	short := newFIFO[string](3, time.Nanosecond)
	short.put("x", "v")
	time.Sleep(time.Millisecond)
	if _, ok := short.get("x"); ok {
		t.Error("an expired entry was returned")
	}
}
