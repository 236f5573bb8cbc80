package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisLease is the rollout lease in Redis: a key holding the driving
// replica's id with an expiry. The holder renews it at every tick; when
// it dies the key expires and another replica takes it within one
// period.
type RedisLease struct {
	Client redis.UniversalClient
	Key    string
	Period time.Duration
	id     string
}

// NewRedisLease returns a lease under key with a fresh replica id.
func NewRedisLease(client redis.UniversalClient, key string, period time.Duration) *RedisLease {
	var b [4]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	return &RedisLease{Client: client, Key: key, Period: period, id: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))}
}

// ID is this replica's id in the lease.
func (l *RedisLease) ID() string { return l.id }

// renew extends the lease only if this replica still holds it, in one
// step, so a replica that lost it (paused past the period) never extends
// another's.
var renew = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// release deletes the lease only if this replica holds it.
var release = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// Hold renews the lease or takes a free one.
func (l *RedisLease) Hold(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.Period/3)
	defer cancel()
	n, err := renew.Run(ctx, l.Client, []string{l.Key}, l.id, l.Period.Milliseconds()).Int()
	if err != nil {
		return false, err
	}
	if n == 1 {
		return true, nil
	}
	return l.Client.SetNX(ctx, l.Key, l.id, l.Period).Result()
}

// Release gives the lease up if held.
func (l *RedisLease) Release(ctx context.Context) {
	_ = release.Run(ctx, l.Client, []string{l.Key}, l.id).Err()
}
