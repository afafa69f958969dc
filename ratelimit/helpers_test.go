package ratelimit

import (
	"net"
	"sync"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// slowOK raises the client timeouts: a loaded CI machine must not turn a slow answer into
// a fail-open admission that breaks an exact count.
const slowOK = "?read_timeout=5s&write_timeout=5s"

// base is a whole second, so fixed windows start at offset 0.
var base = time.Unix(1_700_000_000, 0)

type storeKind string

func newTestStore(t testing.TB, kind storeKind) Store {
	t.Helper()
	switch kind {
	case "memory":
		return NewMemoryStore()
	case "redis":
		r := testutil.StartRedis(t)
		c, err := NewRedisClient(r.Addr + slowOK)
		if err != nil {
			t.Fatal(err)
		}
		s := NewRedisStore(c, RedisOptions{Timeout: 5 * time.Second})
		t.Cleanup(func() { s.Close() })
		return s
	}
	t.Fatalf("unknown store %s", kind)
	return nil
}

func newTestService(t testing.TB, store Store, clock Clock, domains ...ir.RateLimitDomain) *Service {
	t.Helper()
	s, err := New(Options{Store: store, Clock: clock, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := BuildRulesFromDomains(1, domains)
	if err != nil {
		t.Fatal(err)
	}
	s.SetRules(rules)
	return s
}

func oneRuleDomain(rule ir.RateLimitRule) ir.RateLimitDomain {
	return ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{
		Key: "k", Name: "lim", Limits: []ir.RateLimitRule{rule},
	}}}
}

func req(domain string, descs ...[]string) *rlsv3.RateLimitRequest {
	r := &rlsv3.RateLimitRequest{Domain: domain}
	for _, d := range descs {
		rd := &rlcommon.RateLimitDescriptor{}
		for i := 0; i+1 < len(d); i += 2 {
			rd.Entries = append(rd.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: d[i], Value: d[i+1]})
		}
		r.Descriptors = append(r.Descriptors, rd)
	}
	return r
}

// serve starts a gRPC server for svc on a free loopback port and returns a client.
func serve(t testing.TB, svc *Service) rlsv3.RateLimitServiceClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	svc.Register(g)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rlsv3.NewRateLimitServiceClient(conn)
}

func redisStoreFor(t testing.TB, c redis.UniversalClient) *RedisStore {
	s := NewRedisStore(c, RedisOptions{Timeout: 5 * time.Second})
	t.Cleanup(func() { s.Close() })
	return s
}

// clusterURL is the REDIS_URL of a test Redis Cluster (3 nodes), with the slow-OK timeouts.
func clusterURL(addrs []string) string {
	return "redis+cluster://" + addrs[0] + slowOK + "&addr=" + addrs[1] + "&addr=" + addrs[2]
}
