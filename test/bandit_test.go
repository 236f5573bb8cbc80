package test

import (
	"strings"
	"testing"
)

// The rewards API and `modelsplit reward` on a real server: a reward for a
// decided user is counted once however often it is posted, one for an
// unknown user is refused in the answer, and bad values or bodies get a
// 4xx naming the problem.
func TestRewardsAPIAndCLI(t *testing.T) {
	p := newPorts(t)
	srv := startServe(t, tempConfig(t, p.listenYAML()+`endpoints:
  - name: face
    match: {path_prefix: /face}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: 1, backends: ["10.0.0.1:80"]}
      - {name: b, weight: 1, backends: ["10.0.0.2:80"]}
    bandit: {reward: api, interval: 1s}
`), p)
	decideVia(t, p.extproc, []string{"u1"})
	if out := mustCLI(t, srv.admin, "reward", "face", "-user", "u1", "-value", "1", "-id", "r1"); !strings.Contains(out, "1 accepted, 0 duplicates, 0 refused") {
		t.Errorf("first reward: %q", out)
	}
	if out := mustCLI(t, srv.admin, "reward", "face", "-user", "u1", "-value", "1", "-id", "r1"); !strings.Contains(out, "0 accepted, 1 duplicates") {
		t.Errorf("the same id again: %q", out)
	}
	if out := mustCLI(t, srv.admin, "reward", "face", "-user", "stranger", "-value", "0", "-id", "r2"); !strings.Contains(out, "1 refused") || !strings.Contains(out, "unknown user") {
		t.Errorf("a reward for an unknown user: %q", out)
	}
	if out, err := cli(t, srv.admin, "reward", "face", "-user", "u1", "-value", "-1", "-id", "r3"); err == nil || !strings.Contains(out+err.Error(), "rewards[0].value: must be 0 or 1") {
		t.Errorf("a negative binary reward: %v %s", err, out)
	}
	for body, want := range map[string]string{
		`{"rewards": [{"id": "x", "user": "u1", "value": NaN}]}`:  "malformed JSON",
		`{"rewards": [{"id": "x", "user": "u1", "value": "1"}]}`:  "must be a JSON number",
		`{"rewards": [{"id": "x", "user": "u1", "valeu": 1}]}`:    `unknown field "valeu"`,
		`{"rewards": [{"id": "x", "user": "u1", "value": 1}]} {}`: "unexpected data after",
	} {
		code, resp := send(t, "POST", "http://"+srv.admin+"/v1/endpoints/face/rewards", "", body)
		if code != 400 || !strings.Contains(resp, want) {
			t.Errorf("POST %s: %d %s, want 400 containing %q", body, code, resp, want)
		}
	}
	if v, _ := srv.metric(`modelsplit_bandit_rewards_total{endpoint="face",result="counted",source="api"}`); v != 1 {
		t.Errorf("rewards counted %v, want 1", v)
	}
}
