package ratelimitref

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ratelimit"
)

// floor answers OK without looking: the gRPC cost every server pays.
type floor struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

func (floor) ShouldRateLimit(_ context.Context, r *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	st := make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(r.Descriptors))
	for i := range st {
		st[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	}
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: st}, nil
}

func benchConfig(alg string) string {
	extra := ""
	if alg != "" {
		extra = "\n      algorithm: " + alg
	}
	// A limit nobody reaches: every call is counted and admitted.
	return `
domain: bench
descriptors:
  - key: key
    rate_limit:
      unit: minute
      requests_per_unit: 4000000000` + extra + "\n"
}

// benchConns is the number of gRPC connections the callers share (Envoy keeps a few per
// upstream; one connection would measure a single HTTP/2 stream's framing, not the server).
const benchConns = 4

// serveRLS serves srv on a free port and returns a client that spreads calls round-robin
// over benchConns connections.
func serveRLS(b testing.TB, srv rlsv3.RateLimitServiceServer) rlsv3.RateLimitServiceClient {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(g, srv)
	go g.Serve(l)
	b.Cleanup(g.Stop)
	rr := &roundRobin{}
	for range benchConns {
		conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		rr.clients = append(rr.clients, rlsv3.NewRateLimitServiceClient(conn))
	}
	return rr
}

// roundRobin sends each call on the next of its clients.
type roundRobin struct {
	clients []rlsv3.RateLimitServiceClient
	next    atomic.Uint32
}

func (r *roundRobin) ShouldRateLimit(ctx context.Context, in *rlsv3.RateLimitRequest, opts ...grpc.CallOption) (*rlsv3.RateLimitResponse, error) {
	return r.clients[r.next.Add(1)%uint32(len(r.clients))].ShouldRateLimit(ctx, in, opts...)
}

var benchRequests = func() []*rlsv3.RateLimitRequest {
	out := make([]*rlsv3.RateLimitRequest, 1000)
	for i := range out {
		out[i] = &rlsv3.RateLimitRequest{Domain: "bench", Descriptors: []*rlcommon.RateLimitDescriptor{{
			Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "key", Value: "k" + strconv.Itoa(i)}}}}}
	}
	return out
}()

// closedLoop: 32 concurrent callers (parallelism 16 × GOMAXPROCS 2) over benchConns
// connections, one descriptor, 1,000 keys.
func closedLoop(b *testing.B, c rlsv3.RateLimitServiceClient) {
	var next atomic.Uint64
	b.SetParallelism(max(1, 32/max(1, runtimeProcs())))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := benchRequests[next.Add(1)%1000]
			resp, err := c.ShouldRateLimit(context.Background(), r)
			if err != nil {
				b.Error(err)
				return
			}
			if resp.OverallCode != rlsv3.RateLimitResponse_OK {
				b.Error("over limit")
				return
			}
		}
	})
}

type benchServer struct {
	name string
	make func(b *testing.B, redisAddr string) rlsv3.RateLimitServiceServer
}

func benchServers() []benchServer {
	out := []benchServer{{"floor", func(*testing.B, string) rlsv3.RateLimitServiceServer { return floor{} }}}
	for _, w := range []time.Duration{0, 150 * time.Microsecond} {
		out = append(out, benchServer{fmt.Sprintf("reference/window=%v", w), func(b *testing.B, addr string) rlsv3.RateLimitServiceServer {
			return newReference(b, benchConfig(""), addr, &fakeClock{t: time.Now()}, w)
		}})
	}
	for _, alg := range []string{"fixed_window", "sliding_window", "token_bucket", "leaky_bucket"} {
		out = append(out,
			benchServer{"ours/memory/" + alg, func(b *testing.B, _ string) rlsv3.RateLimitServiceServer {
				return newOurs(b, benchConfig(alg), ratelimit.NewMemoryStore(), ratelimit.SystemClock())
			}},
			benchServer{"ours/redis/" + alg, func(b *testing.B, addr string) rlsv3.RateLimitServiceServer {
				c, err := ratelimit.NewRedisClient(addr)
				if err != nil {
					b.Fatal(err)
				}
				s := newOurs(b, benchConfig(alg), ratelimit.NewRedisStore(c, ratelimit.RedisOptions{}), ratelimit.SystemClock())
				b.Cleanup(func() { s.Close() })
				return s
			}})
	}
	// Pipelining settings other than the defaults, for comparison.
	for _, v := range []struct {
		name string
		o    ratelimit.RedisOptions
	}{{"nogather", ratelimit.RedisOptions{Window: -1}}, {"workers1", ratelimit.RedisOptions{Workers: 1}}, {"workers1-window200us", ratelimit.RedisOptions{Workers: 1, Window: 200 * time.Microsecond}}} {
		out = append(out, benchServer{"ours/redis/fixed_window/" + v.name, func(b *testing.B, addr string) rlsv3.RateLimitServiceServer {
			c, err := ratelimit.NewRedisClient(addr)
			if err != nil {
				b.Fatal(err)
			}
			s := newOurs(b, benchConfig("fixed_window"), ratelimit.NewRedisStore(c, v.o), ratelimit.SystemClock())
			b.Cleanup(func() { s.Close() })
			return s
		}})
	}
	// Fixed-window reservations (RATE_LIMIT_RESERVE): most calls admitted without Redis.
	for _, hold := range []time.Duration{100 * time.Millisecond, time.Second} {
		out = append(out, benchServer{fmt.Sprintf("ours/redis/fixed_window/reserve=%v", hold), func(b *testing.B, addr string) rlsv3.RateLimitServiceServer {
			st, err := ratelimit.NewStore(addr, ratelimit.RedisOptions{}, hold)
			if err != nil {
				b.Fatal(err)
			}
			s := newOurs(b, benchConfig("fixed_window"), st, ratelimit.SystemClock())
			b.Cleanup(func() { s.Close() })
			return s
		}})
	}
	return out
}

// BenchmarkShouldRateLimit compares, in one run on one local redis-server: the floor server,
// envoyproxy/ratelimit (Redis, two pipelining settings) and ours (each algorithm, memory and
// Redis stores), closed loop over real gRPC on loopback.
func BenchmarkShouldRateLimit(b *testing.B) {
	r := testutil.StartRedis(b)
	for _, s := range benchServers() {
		b.Run(s.name, func(b *testing.B) {
			closedLoop(b, serveRLS(b, s.make(b, r.Addr)))
		})
	}
}

// BenchmarkOpenLoop5000 sends calls at 5,000/s, each on its own goroutine (the sender never
// waits for answers), and reports the p99 latency in microseconds.
func BenchmarkOpenLoop5000(b *testing.B) {
	r := testutil.StartRedis(b)
	for _, s := range benchServers() {
		if s.name != "floor" && s.name != "ours/memory/fixed_window" && s.name != "ours/redis/fixed_window" &&
			s.name != "ours/redis/sliding_window" && s.name != "ours/redis/token_bucket" && s.name != "ours/redis/fixed_window/reserve=1s" {
			continue
		}
		b.Run(s.name, func(b *testing.B) {
			c := serveRLS(b, s.make(b, r.Addr))
			for i := 0; i < 200; i++ { // warm up connections
				c.ShouldRateLimit(context.Background(), benchRequests[i])
			}
			lat := make([]time.Duration, b.N)
			var wg sync.WaitGroup
			interval := time.Second / 5000
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					t0 := time.Now()
					if _, err := c.ShouldRateLimit(context.Background(), benchRequests[i%1000]); err != nil {
						b.Error(err)
					}
					lat[i] = time.Since(t0)
				}(i)
			}
			wg.Wait()
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		})
	}
}
