package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease decides which replica does the discovery work (sweeping, probing). It is an
// efficiency measure: every write the work makes is conditional on the object's revision,
// so two replicas that both believe they hold the lease (one paused past its TTL) still
// cannot overwrite a heartbeat or each other.
type Lease interface {
	// Hold takes the lease or renews it; it reports whether this replica holds it now.
	Hold(ctx context.Context) (bool, error)
	// Release gives the lease up if this replica holds it.
	Release(ctx context.Context) error
}

// Solo is the lease of a replica that runs alone (embedded store): always held.
type Solo struct{}

// Hold reports true.
func (Solo) Hold(context.Context) (bool, error) { return true, nil }

// Release does nothing.
func (Solo) Release(context.Context) error { return nil }

// RedisLease is a lease on one Redis key: SET key owner NX PX ttl takes it, and only the
// owner extends or deletes it (checked in a script).
type RedisLease struct {
	c     redis.UniversalClient
	key   string
	owner string
	ttl   time.Duration
}

// NewRedisLease returns a lease on key lasting ttl after each Hold. The owner id is the
// host name plus a random suffix, unique per process.
func NewRedisLease(c redis.UniversalClient, key string, ttl time.Duration) *RedisLease {
	host, _ := os.Hostname()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &RedisLease{c: c, key: key, owner: host + "-" + hex.EncodeToString(b[:]), ttl: ttl}
}

// Owner returns this process's owner id.
func (l *RedisLease) Owner() string { return l.owner }

var holdScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Hold takes or renews the lease.
func (l *RedisLease) Hold(ctx context.Context) (bool, error) {
	n, err := holdScript.Run(ctx, l.c, []string{l.key}, l.owner, l.ttl.Milliseconds()).Int()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// Release deletes the lease if this process holds it.
func (l *RedisLease) Release(ctx context.Context) error {
	return releaseScript.Run(ctx, l.c, []string{l.key}, l.owner).Err()
}
