package ratelimit

import (
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/xds/store"
)

// NewRedisClient builds a go-redis UniversalClient from REDIS_URL, parsed by the one parser
// every component shares (store.ParseRedisURL: redis://, rediss://, host:port, Sentinel and
// Cluster forms). Unless the URL sets them, timeouts are 500ms with one retry, so an
// unreachable Redis fails fast (and the limits fall back to their fail mode) instead of
// stalling requests, and the protocol is RESP2 (the scripts need nothing from RESP3).
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
		o.ReadTimeout = 500 * time.Millisecond
	}
	if !has("write_timeout") {
		o.WriteTimeout = 500 * time.Millisecond
	}
	if !has("max_retries") {
		o.MaxRetries = 1
	}
	if !has("dialer_retries") {
		o.DialerRetries = 1
	}
	if !has("protocol") {
		o.Protocol = 2
	}
	o.ContextTimeoutEnabled = true
	return redis.NewUniversalClient(o), nil
}

// NewStore returns the store REDIS_URL selects: memory when empty, Redis otherwise.
func NewStore(redisURL string, opts RedisOptions) (Store, error) {
	if strings.TrimSpace(redisURL) == "" {
		return NewMemoryStore(), nil
	}
	c, err := NewRedisClient(redisURL)
	if err != nil {
		return nil, err
	}
	return NewRedisStore(c, opts), nil
}
