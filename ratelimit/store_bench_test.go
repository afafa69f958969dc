package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
)

func benchChecks(alg Algorithm) [][][]Check {
	out := make([][][]Check, 1000)
	for i := range out {
		c := Check{Key: "b:{k" + strconv.Itoa(i) + "}:" + string(rune(alg)), Alg: alg, Limit: 4_000_000_000, Period: 60_000_000, Burst: 4_000_000_000, Cost: 1, WindowEnd: 1 << 52}
		if alg == AlgTokenBucket || alg == AlgLeakyBucket {
			c.Period = 1
		}
		out[i] = [][]Check{{c}}
	}
	return out
}

// BenchmarkStoreEval measures the stores alone (no gRPC), 32 concurrent callers.
func BenchmarkStoreEval(b *testing.B) {
	r := itest.StartRedis(b)
	for _, kind := range []string{"memory", "redis"} {
		for _, alg := range []Algorithm{AlgFixedWindow, AlgSlidingWindow, AlgTokenBucket, AlgLeakyBucket} {
			b.Run(kind+"/"+string(rune(alg)), func(b *testing.B) {
				var s Store = NewMemoryStore()
				if kind == "redis" {
					c, _ := NewRedisClient(r.Addr)
					s = NewRedisStore(c, RedisOptions{})
					defer s.Close()
				}
				checks := benchChecks(alg)
				var n atomic.Uint64
				b.SetParallelism(16)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						i := n.Add(1)
						if _, err := s.Eval(context.Background(), time.Now().UnixMicro(), checks[i%1000]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkRedisStoreModes compares store settings in alternating rounds (so machine load
// hits all alike): packing a batch's groups into one script call (single node, Sentinel)
// versus one call per group (what Redis Cluster needs), and the number of workers.
func BenchmarkRedisStoreModes(b *testing.B) {
	r := itest.StartRedis(b)
	type mode struct {
		name     string
		perGroup bool
		workers  int
		window   time.Duration
	}
	modes := []mode{{"packed-w1", false, 1, 0}, {"packed-w2", false, 2, 0}, {"packed-w4", false, 4, 0},
		{"packed-w1-nogather", false, 1, -1}, {"packed-w2-nogather", false, 2, -1},
		{"per-group-w1", true, 1, 0}, {"per-group-w2", true, 2, 0}}
	stores := make([]*RedisStore, len(modes))
	for i, m := range modes {
		c, _ := NewRedisClient(r.Addr)
		stores[i] = NewRedisStore(c, RedisOptions{Workers: m.workers, Window: m.window})
		stores[i].cluster = m.perGroup
		b.Cleanup(func() { stores[i].Close() })
	}
	checks := benchChecks(AlgFixedWindow)
	rate := func(s *RedisStore, d time.Duration) float64 {
		var n atomic.Int64
		stop := time.Now().Add(d)
		done := make(chan struct{})
		for g := 0; g < 32; g++ {
			go func(g int) {
				for i := g; time.Now().Before(stop); i += 32 {
					if _, err := s.Eval(context.Background(), time.Now().UnixMicro(), checks[i%1000]); err != nil {
						b.Error(err)
						break
					}
					n.Add(1)
				}
				done <- struct{}{}
			}(g)
		}
		for g := 0; g < 32; g++ {
			<-done
		}
		return float64(n.Load()) / d.Seconds()
	}
	sum := make([]float64, len(modes))
	const rounds = 5
	for round := 0; round < rounds; round++ {
		for i := range modes {
			sum[i] += rate(stores[i], 200*time.Millisecond)
		}
	}
	for i, m := range modes {
		b.ReportMetric(sum[i]/rounds, m.name+"-calls/s")
	}
}
