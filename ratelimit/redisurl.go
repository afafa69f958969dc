package ratelimit

import (
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/store"
)

// NewRedisClient builds a go-redis UniversalClient from REDIS_URL, parsed by the one parser
// every component shares (store.ParseRedisURL: redis://, rediss://, host:port, Sentinel and
// Cluster forms). Unless the URL sets them: dialing gives up after 500ms (one dial retry),
// so an unreachable Redis fails fast and the limits fall back to their fail mode; reads and
// writes are bounded by the caller's deadline (RedisStore passes its callers' deadlines
// down), with 10s only as a backstop, so a slow but healthy Redis is waited for rather than
// turned into fail-mode answers; the protocol is RESP2 (the scripts need nothing from RESP3).
//
// Commands are never retried, whatever the URL says: a retry after a timeout or a dropped
// connection may run a script a second time, and the scripts charge counters (INCRBY,
// sliding-window and bucket updates), so a retry would charge a request twice. MaxRetries covers single
// nodes and Sentinel; go-redis's Cluster client re-sends a pipeline after a broken connection
// regardless, so the store marks each of its commands NoRetry (see noRetry). Dial retries stay (a
// connection that was never made carried nothing), and go-redis drops pooled connections
// that Redis closed before it writes to them, so a restart costs no failed calls.
func NewRedisClient(redisURL string) (redis.UniversalClient, error) {
	o, err := store.ParseRedisURL(redisURL)
	if err != nil {
		return nil, err
	}
	has := func(p string) bool { return strings.Contains(redisURL, p+"=") }
	if !has("dial_timeout") {
		o.DialTimeout = 500 * time.Millisecond
	}
	if !has("read_timeout") {
		o.ReadTimeout = 10 * time.Second
	}
	if !has("write_timeout") {
		o.WriteTimeout = 10 * time.Second
	}
	o.MaxRetries = -1 // no command retries (see above); -1 because 0 means go-redis's default, 3
	if !has("dialer_retries") {
		o.DialerRetries = 1
	}
	if !has("protocol") {
		o.Protocol = 2
	}
	o.ContextTimeoutEnabled = true
	return redis.NewUniversalClient(o), nil
}

// NewStore returns the store REDIS_URL selects: memory when empty, Redis otherwise, with
// fixed-window reservations when reserve is positive (RATE_LIMIT_RESERVE, see
// ReservingStore; not used with the memory store, which needs no round trip).
func NewStore(redisURL string, opts RedisOptions, reserve time.Duration) (Store, error) {
	if strings.TrimSpace(redisURL) == "" {
		return NewMemoryStore(), nil
	}
	c, err := NewRedisClient(redisURL)
	if err != nil {
		return nil, err
	}
	rs := NewRedisStore(c, opts)
	if reserve > 0 {
		return NewReservingStore(rs, ReserveOptions{Hold: reserve}), nil
	}
	return rs, nil
}
