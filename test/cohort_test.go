package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelsplit/modelsplit/cohort/picktest"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/extproc/extproctest"
	"github.com/modelsplit/modelsplit/internal/testredis"
)

func redisConfig(p ports, redisURL string, wa, wb int) string {
	return p.listenYAML() + fmt.Sprintf(`store: {redis: %q}
endpoints:
  - name: face
    match: {path_prefix: /face}
    sticky: {header: x-user-id}
    variants:
      - {name: a, weight: %d, backends: ["10.0.0.1:80"]}
      - {name: b, weight: %d, backends: ["10.0.0.2:80"]}
`, redisURL, wa, wb)
}

// decideVia asks one modelsplit process, as Envoy would, for each user.
func decideVia(t *testing.T, extprocPort int, users []string) map[string]string {
	t.Helper()
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", extprocPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	md := map[string]string{config.ClientMetadataKey: "envoy", config.EndpointMetadataKey: "face"}
	out := make(map[string]string, len(users))
	for _, u := range users {
		res, err := extproctest.Do(context.Background(), conn, extproctest.Request{Metadata: md,
			Headers: []extproctest.Header{extproctest.H("x-user-id", u)}})
		if err != nil {
			t.Fatal(err)
		}
		v, ok := extproctest.Get(res.RequestHeaders, config.VariantHeader)
		if !ok || (v != "a" && v != "b") || !res.RouteCacheCleared {
			t.Fatalf("user %s: no decision (x-modelsplit-variant %q, set %v, route cache cleared %v)", u, v, ok, res.RouteCacheCleared)
		}
		out[u] = v
	}
	return out
}

// TestReplicasAndRestartShareRedis: two `modelsplit serve` processes on one
// Redis give every user the same variant; users keep it after the weights
// change from 90/10 to 50/50 and after a process restart.
func TestReplicasAndRestartShareRedis(t *testing.T) {
	r := testredis.Start(t)
	pa := newPorts(t)
	pb := newPorts(t)
	var err error
	if pb.xds, err = freePort(); err != nil { // the second replica needs its own xDS port
		t.Fatal(err)
	}
	users := make([]string, 1000)
	for i := range users {
		users[i] = fmt.Sprintf("user-%d", i)
	}
	cfgA := tempConfig(t, redisConfig(pa, r.URL(), 90, 10))
	srvA := startServe(t, cfgA, pa)
	first := decideVia(t, pa.extproc, users)
	nb := 0
	for _, v := range first {
		if v == "b" {
			nb++
		}
	}
	t.Logf("at 90/10: %d of %d users on b", nb, len(users))
	for _, u := range users {
		if want := picktest.Variant("", u, []string{"a", "b"}, []int{90, 10}); first[u] != want {
			t.Fatalf("user %s decided %s at 90/10, the rule says %s", u, first[u], want)
		}
	}
	srvA.stop() // graceful: flushes write-behind assignments to Redis

	srvA = startServe(t, cfgA, pa)
	srvB := startServe(t, tempConfig(t, redisConfig(pb, r.URL(), 50, 50)), pb)
	writeFile(t, cfgA, redisConfig(pa, r.URL(), 50, 50))
	srvA.waitLog(10*time.Second, "config reloaded")
	for name, port := range map[string]int{"restarted replica A": pa.extproc, "replica B": pb.extproc} {
		got := decideVia(t, port, users)
		var moved []string
		for _, u := range users {
			if got[u] != first[u] {
				moved = append(moved, u)
			}
		}
		if len(moved) > 0 {
			t.Errorf("%s at 50/50: %d users changed variant, e.g. %s", name, len(moved), strings.Join(moved[:min(3, len(moved))], ", "))
		}
	}
	_ = srvB
}
