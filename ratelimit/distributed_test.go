package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

// exactlyN runs 4 service instances (own gRPC servers) over the clients' shared Redis, 50
// concurrent callers, 2,000 calls against a limit of 1,000 per minute, and counts admissions.
func exactlyN(t *testing.T, newClient func() redis.UniversalClient) {
	algs := [][]ir.RateLimitRule{
		{{Algorithm: ir.FixedWindow, Requests: 1000, Period: time.Minute}},
		{{Algorithm: ir.SlidingWindow, Requests: 1000, Period: time.Minute}},
		{{Algorithm: ir.TokenBucket, Requests: 1000, Period: time.Minute, Burst: 1000}},
		{{Algorithm: ir.LeakyBucket, Requests: 1000, Period: time.Minute, Burst: 1000}},
		// A group: the limit, a looser spike arrest and a daily quota, one script call.
		{{Algorithm: ir.SlidingWindow, Requests: 1000, Period: time.Minute},
			{Algorithm: ir.LeakyBucket, Requests: 100, Period: time.Second, Burst: 5000},
			{Algorithm: ir.FixedWindow, Requests: 5000, Calendar: ir.CalendarDay}},
	}
	clock := newFakeClock(base) // frozen: no refill during the test, so exactly 1,000 fit
	for _, rules := range algs {
		name := string(rules[0].Algorithm)
		if len(rules) > 1 {
			name = "group"
		}
		t.Run(name, func(t *testing.T) {
			d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{Key: "k", Name: "lim", Limits: rules}}}
			var clients []rlsv3.RateLimitServiceClient
			for i := 0; i < 4; i++ {
				svc := newTestService(t, redisStoreFor(t, newClient()), clock, d)
				svc.prefix = "dist:" + name + ":" // counters of one subtest only
				clients = append(clients, serve(t, svc))
			}
			var admitted, denied atomic.Int64
			var wg sync.WaitGroup
			for c := 0; c < 50; c++ {
				wg.Add(1)
				go func(c int) {
					defer wg.Done()
					cl := clients[c%4]
					for i := 0; i < 40; i++ {
						resp, err := cl.ShouldRateLimit(context.Background(), req("test", []string{"k", "shared"}))
						if err != nil {
							t.Error(err)
							return
						}
						if resp.OverallCode == rlsv3.RateLimitResponse_OK {
							admitted.Add(1)
						} else {
							denied.Add(1)
						}
					}
				}(c)
			}
			wg.Wait()
			if admitted.Load() != 1000 || denied.Load() != 1000 {
				t.Fatalf("admitted %d, denied %d; want exactly 1000/1000", admitted.Load(), denied.Load())
			}
		})
	}
}

func TestDistributedExactRedis(t *testing.T) {
	r := itest.StartRedis(t)
	exactlyN(t, func() redis.UniversalClient {
		c, err := NewRedisClient(r.Addr + slowOK)
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

func TestDistributedExactRedisCluster(t *testing.T) {
	cl := itest.StartRedisCluster(t)
	addrs := cl.Addrs()
	exactlyN(t, func() redis.UniversalClient {
		c, err := NewRedisClient(clusterURL(addrs))
		if err != nil {
			t.Fatal(err)
		}
		return c
	})
}

// TestRedisDown: with Redis killed, fail_mode open allows (and counts), closed denies; once
// Redis is back the service counts again by itself (reconnects, reloads its script).
func TestRedisDown(t *testing.T) {
	r := itest.StartRedis(t)
	c, err := NewRedisClient(r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	store := redisStoreFor(t, c)
	clock := newFakeClock(base)
	reg := prometheus.NewRegistry()
	svc, err := New(Options{Store: store, Clock: clock, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	rule := []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: 2, Period: time.Minute}}
	rules, err := BuildRulesFromDomains(1, []ir.RateLimitDomain{{Name: "test", Descriptors: []ir.RateLimitDescriptor{
		{Key: "open", Limits: rule, FailMode: "open"},
		{Key: "closed", Limits: rule, FailMode: "closed"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRules(rules)
	call := func(key string) rlsv3.RateLimitResponse_Code {
		resp, err := svc.ShouldRateLimit(context.Background(), req("test", []string{key, "x"}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.OverallCode
	}
	if call("open") != rlsv3.RateLimitResponse_OK || call("closed") != rlsv3.RateLimitResponse_OK {
		t.Fatal("first calls should pass")
	}
	r.Stop()
	for i := 0; i < 3; i++ {
		if got := call("open"); got != rlsv3.RateLimitResponse_OK {
			t.Fatalf("fail open: got %v", got)
		}
		if got := call("closed"); got != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Fatalf("fail closed: got %v", got)
		}
	}
	if n := testutil.ToFloat64(svc.metrics.failOpen.WithLabelValues("test")); n != 3 {
		t.Fatalf("fail-open counter %v, want 3", n)
	}
	r.Restart() // empty: counters and scripts are gone
	deadline := time.Now().Add(10 * time.Second)
	for call("closed") != rlsv3.RateLimitResponse_OK {
		if time.Now().After(deadline) {
			t.Fatal("service did not recover after Redis came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Counting again: the limit of 2 holds.
	if call("closed") != rlsv3.RateLimitResponse_OK || call("closed") != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatal("not counting after recovery")
	}
}
