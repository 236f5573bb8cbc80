package rls

import (
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/modelsplit/modelsplit/cohort"
	"github.com/modelsplit/modelsplit/config"
	"github.com/modelsplit/modelsplit/metrics"
)

// parseConfig parses YAML with the real loader, so tests see what users get.
func parseConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// lookupEnv is a lookup server with the real engine and memory store,
// served over real gRPC on loopback.
type lookupEnv struct {
	engine  *cohort.Engine
	metrics *metrics.Metrics
	addr    string
	grpc    *grpc.Server
	client  *LookupClient
}

func startLookup(t testing.TB, cfg *config.Config) *lookupEnv {
	t.Helper()
	m := metrics.New()
	eng := cohort.NewEngine(cohort.NewMemoryStore(1_000_000), cohort.Options{Metrics: m, CacheSize: 1_000_000})
	eng.SetConfig(cfg)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	NewServer(eng, Options{Metrics: m}).RegisterStandalone(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &lookupEnv{engine: eng, metrics: m, addr: lis.Addr().String(), grpc: g, client: NewLookupClient(cc)}
}

const twoVariantYAML = `
endpoints:
  - name: scorer
    protocol: grpc
    match: {path_prefix: /grpc.testing.TestService/}
    sticky: {header: x-user-id}
    allow_target: true
    variants:
      - {name: a, weight: 70, backends: ["127.0.0.1:9001"]}
      - {name: b, weight: 30, backends: ["127.0.0.1:9002"]}
    rules:
      - {header: x-region, equals: eu, variant: b}
`
