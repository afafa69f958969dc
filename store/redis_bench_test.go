package store_test

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// BenchmarkRedis compares a store write (one Lua transaction: checks, revision bump,
// object + mod revision, publish) and a store read (MULTI of two HGETs) against the
// baseline of one plain HSET round trip on the same server.
func BenchmarkRedis(b *testing.B) {
	rs := testutil.StartRedis(b)
	data := []byte(`{"id":"r","path_pattern":"/api/v1/users/*","targets":[{"service":"users"}]}`)
	b.Run("baseline_HSET", func(b *testing.B) {
		c := redis.NewClient(&redis.Options{Addr: rs.Addr})
		defer c.Close()
		for i := 0; b.Loop(); i++ {
			if err := c.HSet(b.Context(), "bench", fmt.Sprint(i%100), data).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	s, err := store.OpenRedis(b.Context(), "redis://"+rs.Addr+"?prefix=bench", quietLog())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Run("Txn_put", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := store.Put(b.Context(), s, model.KindRoutes, fmt.Sprint(i%100), data, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := s.Get(b.Context(), model.KindRoutes, fmt.Sprint(i%100)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Load_100_routes", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.Load(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
