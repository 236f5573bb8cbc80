package bandit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/api"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/stats"
)

// Each limit of a rewards post at its edge: the largest batch, the
// longest id, user and request id are accepted, one more is refused.
func TestRewardsAPILimitsAtTheirEdges(t *testing.T) {
	cfg := banditConfig(t, "{reward: api}")
	r, e, _ := rewardsFor(t, cfg)
	if _, err := e.Decide(context.Background(), "rec", hdrs{"x-user-id": strings.Repeat("u", 256)}); err != nil {
		t.Fatal(err)
	}
	batch := make([]string, api.MaxRewardBatch)
	for i := range batch {
		batch[i] = fmt.Sprintf(`{"id": "b%d", "user": "nobody", "value": 1}`, i)
	}
	if res, err := post(t, r, cfg, `{"rewards": [`+strings.Join(batch, ",")+`]}`); err != nil || len(res.Refused) != api.MaxRewardBatch {
		t.Errorf("a batch of exactly %d: %v, want taken (each refused as an unknown user)", api.MaxRewardBatch, err)
	}
	for _, c := range []struct {
		reward string
		ok     bool
		want   string
	}{
		{`{"id": "` + strings.Repeat("i", 128) + `", "user": "` + strings.Repeat("u", 256) + `", "value": 1}`, true, ""},
		{`{"id": "` + strings.Repeat("i", 129) + `", "user": "u", "value": 1}`, false, "at most 128 bytes, got 129"},
		{`{"id": "a", "user": "` + strings.Repeat("u", 257) + `", "value": 1}`, false, "at most 256 bytes"},
		{`{"id": "a", "request_id": "` + strings.Repeat("r", 257) + `", "value": 1}`, false, "at most 256 bytes"},
		{`{"id": "b", "request_id": "` + strings.Repeat("r", 256) + `", "value": 1}`, true, ""},
	} {
		res, err := post(t, r, cfg, `{"rewards": [`+c.reward+`]}`)
		switch {
		case c.ok && err != nil:
			t.Errorf("%.60s: %v, want taken", c.reward, err)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%.60s: %+v %v, want refused with %q", c.reward, res, err, c.want)
		}
	}
	// A value too long to show is clipped in the message; one of 40 bytes
	// is shown whole.
	long := strings.Repeat("9", 41) + "x"
	if _, err := post(t, r, cfg, `{"rewards": [{"id": "a", "user": "u", "value": "`+long+`"}]}`); err == nil || !strings.Contains(err.Error(), strings.Repeat("9", 39)+`"…`) {
		t.Errorf("a 42-byte string value: %v, want it clipped to 40 bytes", err)
	}
	if got := clip(strings.Repeat("x", 40)); got != strings.Repeat("x", 40) {
		t.Errorf("clip of 40 bytes = %q", got)
	}
}

// A success reward counts an answer at exactly the latency budget; with
// no budget any 2xx counts.
func TestSuccessAtTheBudget(t *testing.T) {
	cfg := banditConfig(t, "{reward: success, latency_budget: 100ms}")
	r, _, m := rewardsFor(t, cfg)
	r.Observed("rec", "a", stats.Class2xx, 100*time.Millisecond, "", "", false, false)
	if n, sum := rewardSum(m, "a"); n != 1 || sum != 1 {
		t.Errorf("2xx at exactly the budget: %d rewards summing %v, want 1", n, sum)
	}
	cfg = banditConfig(t, "{reward: success}")
	r, _, m = rewardsFor(t, cfg)
	r.Observed("rec", "a", stats.Class2xx, time.Hour, "", "", false, false)
	if n, sum := rewardSum(m, "a"); n != 1 || sum != 1 {
		t.Errorf("2xx after an hour without a budget: %d rewards summing %v, want 1", n, sum)
	}
	r.Observed("nope", "a", stats.Class2xx, 0, "", "", false, false) // no bandit there: nothing
	if n, _ := rewardSum(m, "a"); n != 1 {
		t.Errorf("an answer of another endpoint was counted")
	}
}

// The bounded map keeps its newest entries in order past many wraps, and
// a remembered id counts as seen until its expiry.
func TestFIFOWrapsAndExpires(t *testing.T) {
	f := newFIFO[int](3, time.Hour)
	for i := range 10 {
		f.put(fmt.Sprint(i), i)
	}
	for i := range 10 {
		_, ok := f.get(fmt.Sprint(i))
		if ok != (i >= 7) {
			t.Errorf("after 10 puts in a fifo of 3, entry %d present: %v", i, ok)
		}
	}
	f.put("8", 80) // an update keeps its place
	f.put("10", 10)
	if v, ok := f.get("8"); !ok || v != 80 {
		t.Errorf("updated entry 8: %v %v", v, ok)
	}
	if _, ok := f.get("7"); ok {
		t.Error("entry 7 survived the next put")
	}
	d := newFIFO[struct{}](10, time.Hour)
	if !d.putIfAbsent("x", struct{}{}) || d.putIfAbsent("x", struct{}{}) {
		t.Error("putIfAbsent: first not added or second added")
	}
	expired := newFIFO[struct{}](10, 0)
	expired.put("x", struct{}{})
	if !expired.putIfAbsent("x", struct{}{}) {
		t.Error("an id past its expiry still counted as seen")
	}
	if _, ok := expired.get("x"); ok {
		t.Error("an entry past its expiry was returned")
	}
}

// A numeric bandit takes any finite number, not NaN or an infinity; the
// reward settings of every bandit endpoint are taken, whatever endpoints
// without a bandit come before it.
func TestNumericHeaderRewardsAndSettings(t *testing.T) {
	cfg, err := config.Parse("b.yaml", []byte(`endpoints:
  - name: plain
    match: {path_prefix: /plain}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
  - name: rec
    match: {path_prefix: /rec}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 1, backends: ["10.0.0.2:80"]}
    bandit: {reward: header, numeric: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	r, _, m := rewardsFor(t, cfg)
	if _, ok := r.RewardHeader("rec"); !ok {
		t.Fatal("the bandit after an endpoint without one has no reward settings")
	}
	for _, v := range []string{"NaN", "Inf", "-Inf", "1e999", "-2.5", " 7 "} {
		r.Observed("rec", "a", stats.Class2xx, 0, "", v, true, false)
	}
	if n, sum := rewardSum(m, "a"); n != 2 || sum != 4.5 {
		t.Errorf("numeric header rewards: %d summing %v, want -2.5 and 7 only", n, sum)
	}
}

// Reward ids shared through Redis count once: the first post of an id is
// new, the next a duplicate, another endpoint's same id new again.
func TestRedisDedup(t *testing.T) {
	srv := testredis.Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	d := redisDedup{c: c, prefix: "t:reward:"}
	ctx := context.Background()
	for i, want := range []bool{false, true} {
		if dup, err := d.seen(ctx, "rec", "r1"); err != nil || dup != want {
			t.Fatalf("post %d of r1: duplicate %v %v, want %v", i+1, dup, err, want)
		}
	}
	if dup, err := d.seen(ctx, "other", "r1"); err != nil || dup {
		t.Fatalf("r1 on another endpoint: duplicate %v %v, want new", dup, err)
	}
	srv.Kill()
	if dup, err := d.seen(ctx, "rec", "r2"); err == nil || dup {
		t.Fatalf("Redis down: duplicate %v %v, want an error and no duplicate", dup, err)
	}
}
