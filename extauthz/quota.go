package extauthz

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// QuotaCounter counts API key usage for the per-day and per-month quotas (the rate-limit
// store). Incr adds one to key, sets its expiry when the key is new, and returns the count.
type QuotaCounter interface {
	Incr(ctx context.Context, key string, ttl time.Duration) (int64, error)
}

// MemoryQuota is an in-process QuotaCounter (single replica).
type MemoryQuota struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*memCount
}

type memCount struct {
	n   int64
	exp time.Time
}

// NewMemoryQuota returns an in-memory counter; clock may be nil (time.Now).
func NewMemoryQuota(clock func() time.Time) *MemoryQuota {
	if clock == nil {
		clock = time.Now
	}
	return &MemoryQuota{now: clock, m: map[string]*memCount{}}
}

// Incr implements QuotaCounter.
func (q *MemoryQuota) Incr(_ context.Context, key string, ttl time.Duration) (int64, error) {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.m[key]
	if c == nil || !now.Before(c.exp) {
		if len(q.m) > 100_000 {
			for k, v := range q.m {
				if !now.Before(v.exp) {
					delete(q.m, k)
				}
			}
		}
		c = &memCount{exp: now.Add(ttl)}
		q.m[key] = c
	}
	c.n++
	return c.n, nil
}

// RedisQuota counts in Redis, shared by every replica: one round trip per Incr.
type RedisQuota struct {
	client redis.UniversalClient
}

// NewRedisQuota returns a Redis-backed counter.
func NewRedisQuota(c redis.UniversalClient) *RedisQuota { return &RedisQuota{client: c} }

var incrScript = redis.NewScript(`local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`)

// Incr implements QuotaCounter.
func (q *RedisQuota) Incr(ctx context.Context, key string, ttl time.Duration) (int64, error) {
	return incrScript.Run(ctx, q.client, []string{key}, ttl.Milliseconds()).Int64()
}

// quotaKeys returns the day and month counter keys of a key at now (UTC calendar) and
// their lifetimes (to the end of the period, plus an hour).
func quotaKeys(keyID string, now time.Time) (day string, dayTTL time.Duration, month string, monthTTL time.Duration) {
	u := now.UTC()
	y, m, d := u.Date()
	day = "agw:quota:{" + keyID + "}:d:" + u.Format("20060102")
	month = "agw:quota:{" + keyID + "}:m:" + u.Format("200601")
	dayTTL = time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC).Sub(u) + time.Hour
	monthTTL = time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC).Sub(u) + time.Hour
	return
}
