package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/api-gateway/api-gateway/ir"
)

// BenchmarkServiceMemory measures ShouldRateLimit itself (no gRPC) on the memory store:
// what the service adds to each call.
func BenchmarkServiceMemory(b *testing.B) {
	for _, alg := range []ir.RateLimitAlgorithm{ir.FixedWindow, ir.SlidingWindow, ir.TokenBucket, ir.LeakyBucket} {
		b.Run(string(alg), func(b *testing.B) {
			svc := newTestService(b, NewMemoryStore(), SystemClock(), oneRuleDomain(ir.RateLimitRule{Algorithm: alg, Requests: 4_000_000_000, Period: time.Minute}))
			reqs := make([]*rlsv3.RateLimitRequest, 1000)
			for i := range reqs {
				reqs[i] = req("test", []string{"k", strconv.Itoa(i)})
			}
			var n atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := svc.ShouldRateLimit(context.Background(), reqs[n.Add(1)%1000]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
