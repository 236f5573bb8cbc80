package cohort

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/modelsplit/modelsplit/config"
)

// Redis URL forms (store.redis). go-redis v9 parses each form itself
// (ParseURL, ParseFailoverURL, ParseClusterURL, including their query
// options such as dial_timeout or pool_size); modelsplit only chooses the
// parser, because a cluster URL is otherwise indistinguishable from a
// single-server one:
//
//	redis://[user:pass@]host:port[/db]              single server
//	rediss://[user:pass@]host:port[/db]             single server over TLS; store.ca_file verifies it
//	unix:///path/redis.sock[?db=N]                  single server on a unix socket
//	redis://host:port[/db]?master_name=M[&addr=h:p] Sentinel: host:port (and each addr) is a
//	                                                Sentinel, M the master's name
//	redis://host:port?cluster=true[&addr=h:p]       Cluster: seed node(s)
//
// rediss:// works in every form. Refused, because they cannot work with a
// store that writes (or make go-redis panic): Sentinel replica_only,
// route_by_latency, route_randomly, and pool sizes beyond int32. Errors
// never repeat the URL, which may hold a password.
func newUniversalClient(cfg config.Store) (redis.UniversalClient, error) {
	u, err := url.Parse(cfg.Redis)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("store.redis: invalid URL: %w", err)
	}
	roots, err := caPool(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	cluster := false
	if q.Has("cluster") {
		if cluster, err = strconv.ParseBool(q.Get("cluster")); err != nil {
			return nil, fmt.Errorf("store.redis: cluster=%q is not true or false", q.Get("cluster"))
		}
		q.Del("cluster") // ours, not a go-redis option
		u.RawQuery = q.Encode()
	}
	sentinel := q.Get("master_name") != ""
	switch {
	case cluster && sentinel:
		return nil, errors.New("store.redis: cluster=true and master_name (Sentinel) exclude each other")
	case sentinel:
		o, err := redis.ParseFailoverURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("store.redis (Sentinel form): %w", err)
		}
		switch {
		case o.RouteByLatency || o.RouteRandomly:
			// go-redis panics on these outside its failover cluster client.
			return nil, errors.New("store.redis (Sentinel form): route_by_latency and route_randomly are not supported; assignments go to the master")
		case o.ReplicaOnly:
			return nil, errors.New("store.redis (Sentinel form): replica_only cannot work: assignments are written, and replicas are read-only")
		}
		if err := checkPoolSizes(o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, o.PipelinePoolSize); err != nil {
			return nil, err
		}
		o.TLSConfig = withRoots(o.TLSConfig, roots)
		o.ContextTimeoutEnabled = true
		o.DialerRetries = dialAttempts(q, o.DialerRetries)
		return redis.NewFailoverClient(o), nil
	case cluster:
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("store.redis (Cluster form): %w", err)
		}
		if err := checkPoolSizes(o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, o.PipelinePoolSize); err != nil {
			return nil, err
		}
		o.TLSConfig = withRoots(o.TLSConfig, roots)
		o.ContextTimeoutEnabled = true
		o.DialerRetries = dialAttempts(q, o.DialerRetries)
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("store.redis: %w", err)
		}
		if err := checkPoolSizes(o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, o.PipelinePoolSize); err != nil {
			return nil, err
		}
		o.TLSConfig = withRoots(o.TLSConfig, roots)
		// The decision path bounds every read with its own budget; a retry
		// could not finish within it anyway.
		o.MaxRetries = -1
		// Without this go-redis ignores context deadlines and waits its own
		// 3s read timeout: a hung Redis would stall decisions.
		o.ContextTimeoutEnabled = true
		o.DialerRetries = dialAttempts(q, o.DialerRetries)
		// A read over the budget costs its connection (go-redis cannot
		// reuse one with a reply still due), and a new one costs a
		// handshake: keep a few dialled in the background, so a slow
		// Redis does not also fail the reads after a late one.
		if !q.Has("min_idle_conns") {
			o.MinIdleConns = defaultMinIdleConns
		}
		return redis.NewClient(o), nil
	}
}

// defaultMinIdleConns is the store's min_idle_conns unless the URL sets it.
const defaultMinIdleConns = 4

// dialAttempts is 1 unless the URL sets dialer_retries: go-redis otherwise
// dials 5 times 100ms apart, so against a Redis that refuses connections
// every read would spend its whole budget retrying instead of failing at
// once. Retrying is the prober's job, off the decision path.
func dialAttempts(q url.Values, parsed int) int {
	if q.Has("dialer_retries") {
		return parsed
	}
	return 1
}

// checkPoolSizes refuses pool sizes go-redis cannot hold (it keeps them
// as int32 and panics when it builds a pool — for Cluster only when it
// first meets a node, in the middle of serving): pool_size,
// min_idle_conns, max_idle_conns, max_active_conns, pipeline_pool_size.
func checkPoolSizes(sizes ...int) error {
	names := [...]string{"pool_size", "min_idle_conns", "max_idle_conns", "max_active_conns", "pipeline_pool_size"}
	for i, n := range sizes {
		if n > math.MaxInt32 || n < math.MinInt32 {
			return fmt.Errorf("store.redis: %s=%d is too large", names[i], n)
		}
	}
	return nil
}

// caPool reads store.ca_file; nil without one (system roots).
func caPool(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("store.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("store.ca_file %s: no PEM certificate found", file)
	}
	return pool, nil
}

// withRoots adds the CA pool to the TLS config go-redis derived from a
// rediss:// URL (which carries the server name); plain URLs stay plain.
func withRoots(c *tls.Config, roots *x509.CertPool) *tls.Config {
	if c == nil || roots == nil {
		return c
	}
	c = c.Clone()
	c.RootCAs = roots
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}
