package ratelimitref

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ratelimit"
)

// cpuSeconds returns this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// redisCPU returns redis-server's used_cpu_user + used_cpu_sys.
func redisCPU(c *redis.Client) float64 {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		return 0
	}
	total := 0.0
	for _, line := range strings.Split(info, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}

// median returns the median of v (0 for none).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// meanBatch returns calls per pipeline.
func meanBatch(calls float64, hist []uint64) float64 {
	var n uint64
	for _, v := range hist {
		n += v
	}
	if n == 0 {
		return 0
	}
	return calls / float64(n)
}

// throughput runs 32 closed-loop callers against c for d and returns calls per second.
func throughput(c rlsv3.RateLimitServiceClient, d time.Duration) (float64, error) {
	var n atomic.Int64
	var next atomic.Uint64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				r := benchRequests[next.Add(1)%1000]
				resp, err := c.ShouldRateLimit(context.Background(), r)
				if err == nil && resp.OverallCode != rlsv3.RateLimitResponse_OK {
					err = context.Canceled
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return 0, e
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// BenchmarkRatios measures every server in interleaved rounds (so a busy machine slows all
// of them alike) and reports each one's throughput as a ratio: ours over the reference's
// best setting, and over the floor server.
func BenchmarkRatios(b *testing.B) {
	ratios(b, benchServers(), 5, 300*time.Millisecond, 0)
}

// BenchmarkRatiosSteady compares the floor, the reference, and ours in memory, in Redis and
// in Redis with fixed-window reservations under continuous load: each round of a server
// follows 1.5 s of the same load, not counted, so what is measured is its steady state
// (reservations follow each counter's rate, which takes a moment to learn). On a machine
// whose load changes (other jobs on shared cores), read the median of each round's ratio to
// the floor, and the ratio of CPU per call (floor's over the server's, this process and
// redis-server together): what the throughput ratio is when the machine is not shared.
func BenchmarkRatiosSteady(b *testing.B) {
	var servers []benchServer
	for _, s := range benchServers() {
		switch s.name {
		case "floor", "reference/window=0s", "reference/window=150µs", "ours/memory/fixed_window", "ours/redis/fixed_window", "ours/redis/fixed_window/reserve=1s":
			servers = append(servers, s)
		}
	}
	ratios(b, servers, 5, time.Second, 1500*time.Millisecond)
}

// ratios measures servers in rounds of d each (after warm of unmeasured load) and prints
// their throughputs as ratios.
func ratios(b *testing.B, servers []benchServer, rounds int, d, warm time.Duration) {
	r := testutil.StartRedis(b)
	clients := make([]rlsv3.RateLimitServiceClient, len(servers))
	srvs := make([]rlsv3.RateLimitServiceServer, len(servers))
	for i := range servers {
		srvs[i] = servers[i].make(b, r.Addr)
		clients[i] = serveRLS(b, srvs[i])
		if _, err := throughput(clients[i], 100*time.Millisecond); err != nil { // warm up
			b.Fatal(err)
		}
	}
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	sum := make([]float64, len(servers))
	perRound := make([][]float64, len(servers)) // each round's calls/s over the floor's in that round
	goCPU := make([]float64, len(servers))
	redCPU := make([]float64, len(servers))
	calls := make([]float64, len(servers))
	batches := make([][]uint64, len(servers))
	batchSizes := func(i int) []uint64 {
		if svc, ok := srvs[i].(*ratelimit.Service); ok {
			switch rs := svc.Store().(type) {
			case *ratelimit.RedisStore:
				return rs.BatchSizes()
			case *ratelimit.ReservingStore:
				return rs.Inner().(*ratelimit.RedisStore).BatchSizes()
			}
		}
		return nil
	}
	b.ResetTimer()
	for round := 0; round < rounds; round++ {
		qpsRound := make([]float64, len(servers))
		for i := range servers {
			if warm > 0 {
				if _, err := throughput(clients[i], warm); err != nil {
					b.Fatalf("%s: %v", servers[i].name, err)
				}
			}
			g0, r0, b0 := cpuSeconds(), redisCPU(rc), batchSizes(i)
			qps, err := throughput(clients[i], d)
			if err != nil {
				b.Fatalf("%s: %v", servers[i].name, err)
			}
			goCPU[i] += cpuSeconds() - g0
			redCPU[i] += redisCPU(rc) - r0
			calls[i] += qps * d.Seconds()
			if b1 := batchSizes(i); b1 != nil {
				if batches[i] == nil {
					batches[i] = make([]uint64, len(b1))
				}
				for j := range b1 {
					batches[i][j] += b1[j] - b0[j]
				}
			}
			sum[i] += qps
			qpsRound[i] = qps
		}
		for i, s := range servers {
			if s.name == "floor" {
				for j := range servers {
					perRound[j] = append(perRound[j], qpsRound[j]/qpsRound[i])
				}
			}
		}
	}
	b.StopTimer()
	var floorQPS, refQPS float64
	for i, s := range servers {
		switch {
		case s.name == "floor":
			floorQPS = sum[i] / float64(rounds)
		case len(s.name) > 9 && s.name[:9] == "reference":
			refQPS = max(refQPS, sum[i]/float64(rounds))
		}
	}
	// CPU per call (this process: callers + server; plus redis-server) does not depend on
	// how busy the machine is, so it is the steadier comparison on a shared machine.
	floorCPU := 0.0
	for i, s := range servers {
		if s.name == "floor" {
			floorCPU = (goCPU[i] + redCPU[i]) / calls[i]
		}
	}
	for i, s := range servers {
		qps := sum[i] / float64(rounds)
		fmt.Printf("ratio: %-28s %7.0f calls/s %5.2fx reference %6.1f%% of floor (median of rounds %5.1f%%) | CPU/call: process %5.1fµs redis %4.1fµs, floor's over it %5.1f%%\n",
			s.name, qps, qps/refQPS, 100*qps/floorQPS, 100*median(perRound[i]), 1e6*goCPU[i]/calls[i], 1e6*redCPU[i]/calls[i],
			100*floorCPU/((goCPU[i]+redCPU[i])/calls[i]))
		if batches[i] != nil {
			fmt.Printf("       %-28s pipelines by calls carried (1,2,3-4,5-8,..,129-256): %v, mean %.1f\n", "", batches[i], meanBatch(calls[i], batches[i]))
		}
	}
	b.ReportMetric(floorQPS, "floor-calls/s")
	b.ReportMetric(refQPS, "reference-calls/s")
}
