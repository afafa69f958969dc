package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// A clean shutdown releases the discovery lease before serve returns, so another replica
// takes the sweeping over at once rather than after the lease's TTL: serve waits for its
// components' runs to end before it closes the store whose connection they use.
func TestServeReleasesTheDiscoveryLeaseOnShutdown(t *testing.T) {
	rs := testutil.StartRedis(t)
	cfg := gatewayConfig(t)
	cfg.RedisURL = "redis://" + rs.Addr
	c := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer c.Close()
	const key = "{agw}:lease:discovery"
	for round := 0; round < 3; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler)) }()
		deadline := time.Now().Add(30 * time.Second)
		for c.Exists(t.Context(), key).Val() == 0 {
			if time.Now().After(deadline) {
				cancel()
				t.Fatal("the gateway never took the discovery lease")
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("serve: %v", err)
		}
		if ttl := c.PTTL(t.Context(), key).Val(); ttl > 0 {
			t.Fatalf("round %d: serve returned with the discovery lease still held (%v left)", round, ttl)
		}
	}
}
