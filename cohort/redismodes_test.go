package cohort_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/internal/testredis"
	"github.com/modelsplit/modelsplit/metrics"
)

// Each URL form reaches a real server: a decision is stored through one
// store and read back, as a stored assignment, through a second one.
func TestRedisURLForms(t *testing.T) {
	single := testredis.Start(t)
	cluster := testredis.Start(t, testredis.Cluster())
	master := testredis.Start(t)
	sentinel := testredis.StartSentinel(t, master, "models")
	// A port nothing listens on: the multi-address forms must get past it
	// to the server named by addr=.
	gone := testredis.Start(t)
	gone.Kill()
	forms := map[string]string{
		"single":                 single.URL(),
		"cluster":                "redis://" + cluster.Addr() + "?cluster=true",
		"cluster, second seed":   "redis://" + gone.Addr() + "?cluster=true&addr=" + cluster.Addr(),
		"sentinel":               "redis://" + sentinel.Addr() + "/0?master_name=models",
		"sentinel, second addr=": "redis://" + gone.Addr() + "/0?master_name=models&addr=" + sentinel.Addr(),
	}
	for name, url := range forms {
		t.Run(name, func(t *testing.T) {
			cfg := splitConfig(t, "", 50, 50)
			cfg.Store.Timeout = config.Duration(time.Second)
			// A client whose first seed is dead may start down (and recover by
			// itself): wait for it, as this test is about where data lands.
			s1 := redisStore(t, url, metrics.New())
			waitHealthy(t, s1)
			e1, _ := newEngine(t, s1, cfg)
			first := decide(t, e1, user("form-user"))
			flush(t, e1)
			// Weights changed so the hash alone would answer v1 for everyone:
			// only a stored assignment keeps v0 users on v0.
			cfg2 := splitConfig(t, "", 1, 1_000_000)
			cfg2.Store.Timeout = config.Duration(time.Second)
			s2 := redisStore(t, url, metrics.New())
			waitHealthy(t, s2)
			e2, _ := newEngine(t, s2, cfg2)
			if d := decide(t, e2, user("form-user")); d.Variant != first.Variant || d.Source != cohort.SourceStore {
				t.Fatalf("second store: %s by %s, first %s", d.Variant, d.Source, first.Variant)
			}
		})
	}
}

func TestRedisURLErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		store config.Store
		want  string
	}{
		{config.Store{Redis: "redis://u:secret@127.0.0.1:1/x"}, "database"},
		{config.Store{Redis: "redis://u:secret@[::1"}, "invalid URL"},
		{config.Store{Redis: "redis://127.0.0.1:1?cluster=maybe"}, "cluster"},
		{config.Store{Redis: "redis://127.0.0.1:1?cluster=true&master_name=m"}, "exclude"},
		{config.Store{Redis: "redis://127.0.0.1:1?no_such_option=1"}, "no_such_option"},
		// go-redis panics on these; they must come back as errors.
		{config.Store{Redis: "redis://u:secret@127.0.0.1:1?master_name=m&route_by_latency=true"}, "route_by_latency"},
		{config.Store{Redis: "redis://u:secret@127.0.0.1:1?master_name=m&route_randomly=true"}, "route_randomly"},
		{config.Store{Redis: "redis://u:secret@127.0.0.1:1?pool_size=99999999999"}, "pool_size"},
		{config.Store{Redis: "redis://u:secret@127.0.0.1:1?master_name=m&max_idle_conns=99999999999"}, "max_idle_conns"},
		{config.Store{Redis: "redis://u:secret@127.0.0.1:1?cluster=true&max_active_conns=99999999999"}, "max_active_conns"},
		{config.Store{Redis: "redis://127.0.0.1:1?master_name=m&replica_only=true"}, "replica_only"},
		{config.Store{Redis: "rediss://127.0.0.1:1", CAFile: filepath.Join(dir, "missing.pem")}, "store.ca_file"},
		{config.Store{Redis: "rediss://127.0.0.1:1", CAFile: notPEM}, "no PEM"},
	}
	for _, c := range cases {
		s, err := cohort.NewRedisStore(c.store, nil, metrics.New())
		if err == nil {
			s.Close()
			t.Errorf("%q: no error", c.store.Redis)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: error %q, want it to mention %q and not the password", c.store.Redis, err, c.want)
		}
	}
}

// A store that cannot reach Redis at start is not an error: it starts
// down, decisions fall back, and it comes up when Redis does.
func TestRedisStoreStartsDownAndRecovers(t *testing.T) {
	r := testredis.Start(t)
	r.Kill()
	m := metrics.New()
	store := redisStore(t, r.URL(), m)
	if store.Healthy() {
		t.Fatal("healthy with no server")
	}
	e, _ := newEngine(t, store, splitConfig(t, r.URL(), 50, 50))
	if d := decide(t, e, user("early")); d.Source != cohort.SourceFallback {
		t.Fatalf("decision with redis down: %s, want fallback", d.Source)
	}
	r.Restart()
	waitHealthy(t, store)
	flush(t, e)
	if k := redisKeys(t, r); k != 1 {
		t.Errorf("%d assignment keys after recovery, want the 1 made while down", k)
	}
}

// Without store.timeout the store's probes get the default budget, not
// none: a store that starts down still comes up once Redis answers.
func TestRedisStoreWithoutTimeoutRecovers(t *testing.T) {
	r := testredis.Start(t)
	r.Kill()
	store, err := cohort.NewRedisStore(config.Store{Redis: r.URL(), KeyPrefix: "t:"}, nil, metrics.New())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if store.Healthy() {
		t.Fatal("healthy with no server")
	}
	r.Restart()
	waitHealthy(t, store)
}

func waitHealthy(t *testing.T, s cohort.Store) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !s.Healthy() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !s.Healthy() {
		t.Fatal("store did not recover within 5s of redis starting")
	}
}

// A Redis older than 6.2 answers GETEX "unknown command": the store reads
// with GET from then on, through Get or the pipelined Lookup alike, says so
// once, and counts no error.
func TestRedisWithoutGETEX(t *testing.T) {
	r := testredis.Start(t, testredis.Without("GETEX"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := redisClient(t, r).Set(ctx, "t:a:stored", "v1", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	redisAdd(t, r, "t:list:l", "u")
	// One store meets the refusal in a Lookup, the other in a Get.
	for _, first := range []string{"lookup", "get"} {
		t.Run(first, func(t *testing.T) {
			core, logs := observer.New(zap.WarnLevel)
			m := metrics.New()
			store, err := cohort.NewRedisStore(config.Store{Redis: r.URL(), KeyPrefix: "t:", Timeout: config.Duration(time.Second)}, zap.New(core), m)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			for i := 0; i < 3; i++ {
				order := []string{"lookup", "get"}
				if first == "get" {
					order = []string{"get", "lookup"}
				}
				for _, read := range order {
					switch read {
					case "lookup":
						l := &cohort.Lookup{Key: "t:a:stored", TTL: time.Hour, Member: "u", Lists: []string{"t:list:l"}}
						store.Lookup(ctx, l)
						if l.Err != nil || l.ListErr != nil || !l.Found || l.Variant != "v1" || !l.In[0] {
							t.Fatalf("Lookup %d: %+v, want v1 found and u in the list", i, l)
						}
					case "get":
						if v, ok, err := store.Get(ctx, "t:a:stored", time.Hour); err != nil || !ok || v != "v1" {
							t.Fatalf("Get %d: %q %v %v, want v1", i, v, ok, err)
						}
					}
				}
			}
			if said := logs.FilterMessageSnippet("GETEX").Len(); said != 1 {
				t.Errorf("GETEX refusal logged %d times, want once", said)
			}
			if got := testutil.ToFloat64(m.StoreErrors.WithLabelValues("get")); got != 0 || !store.Healthy() {
				t.Errorf("errors{op=get} %v, healthy %v: want no error, up", got, store.Healthy())
			}
		})
	}
}

// The prober keeps watching while Redis is up, and keeps probing while
// its probes fail: a store that has been up for several probe intervals,
// then down for several, still comes back.
func TestRedisStoreRecoversAfterBeingUp(t *testing.T) {
	r := testredis.Start(t)
	store := redisStore(t, r.URL(), metrics.New())
	// Let the prober find Redis up a few times (it probes every 200ms); on
	// a slow machine it may have done so fewer times, which only makes the
	// test weaker, never wrong.
	time.Sleep(time.Second)
	r.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 10 && store.Healthy(); i++ {
		store.Get(ctx, "t:a:k", 0)
	}
	if store.Healthy() {
		t.Fatal("still up after 10 reads from a killed redis")
	}
	// Probes fail meanwhile (same caveat); the prober keeps probing.
	time.Sleep(time.Second)
	r.Restart()
	waitHealthy(t, store)
}

// selfSignedPEM writes a self-signed CA certificate to a file.
func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// The client the store builds: store.ca_file verifies a rediss:// server
// (at TLS 1.2 or later) and leaves a plain URL plain; one dial attempt and
// 4 idle connections unless the URL says otherwise, no retries.
func TestRedisClientOptions(t *testing.T) {
	ca := selfSignedPEM(t)
	client := func(url, caFile string) redis.UniversalClient {
		t.Helper()
		s, err := cohort.NewRedisStore(config.Store{Redis: url, CAFile: caFile, Timeout: config.Duration(50 * time.Millisecond)}, nil, metrics.New())
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		t.Cleanup(func() { s.Close() })
		return s.(interface{ Client() redis.UniversalClient }).Client()
	}
	checkTLS := func(name string, c *tls.Config) {
		t.Helper()
		if c == nil || c.RootCAs == nil || c.MinVersion != tls.VersionTLS12 || c.ServerName != "127.0.0.1" {
			t.Errorf("%s: TLS config %+v, want store.ca_file's roots, TLS 1.2 at least, server name 127.0.0.1", name, c)
		}
	}
	single := client("rediss://127.0.0.1:1", ca).(*redis.Client).Options()
	checkTLS("rediss://", single.TLSConfig)
	cluster := client("rediss://127.0.0.1:1?cluster=true", ca).(*redis.ClusterClient).Options()
	checkTLS("rediss://?cluster=true", cluster.TLSConfig)
	if o := client("redis://127.0.0.1:1", ca).(*redis.Client).Options(); o.TLSConfig != nil {
		t.Errorf("redis:// with store.ca_file: TLS config %+v, want none", o.TLSConfig)
	}
	// max_retries -1 (none) reads back as 0 once go-redis has built the client.
	if single.DialerRetries != 1 || single.MinIdleConns != 4 || single.MaxRetries != 0 {
		t.Errorf("defaults: dialer_retries %d, min_idle_conns %d, max_retries %d; want 1, 4, 0", single.DialerRetries, single.MinIdleConns, single.MaxRetries)
	}
	if cluster.DialerRetries != 1 {
		t.Errorf("cluster: dialer_retries %d, want 1", cluster.DialerRetries)
	}
	if o := client("redis://127.0.0.1:1?min_idle_conns=0", "").(*redis.Client).Options(); o.MinIdleConns != 0 {
		t.Errorf("min_idle_conns=0 in the URL: %d idle connections", o.MinIdleConns)
	}
}
