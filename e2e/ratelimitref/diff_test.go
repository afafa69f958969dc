package ratelimitref

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ratelimit"
)

// diffConfig is an envoyproxy/ratelimit config exercising nested descriptors, wildcards,
// default values, unlimited, shadow mode and replaces.
const diffConfig = `
domain: diff
descriptors:
  - key: bulk
    rate_limit:
      unit: minute
      requests_per_unit: 90
  - key: api
    rate_limit:
      unit: minute
      requests_per_unit: 5
  - key: api
    value: special
    rate_limit:
      unit: minute
      requests_per_unit: 2
  - key: path
    value: /files*
    rate_limit:
      unit: minute
      requests_per_unit: 3
  - key: path
    value: /files/big*
    rate_limit:
      unit: minute
      requests_per_unit: 1
  - key: user
    descriptors:
      - key: plan
        value: free
        rate_limit:
          unit: hour
          requests_per_unit: 3
      - key: plan
        value: vip
        rate_limit:
          unlimited: true
      - key: plan
        rate_limit:
          unit: second
          requests_per_unit: 4
        descriptors:
          - key: region
            value: eu
            rate_limit:
              unit: minute
              requests_per_unit: 2
  - key: shadow
    shadow_mode: true
    rate_limit:
      unit: minute
      requests_per_unit: 1
  - key: tenant
    rate_limit:
      unit: minute
      requests_per_unit: 6
      name: tenant_default
  - key: tenant_strict
    rate_limit:
      unit: minute
      requests_per_unit: 2
      name: tenant_strict
      replaces:
        - name: tenant_default
  - key: nolimit
`

func d(kv ...string) *rlcommon.RateLimitDescriptor {
	out := &rlcommon.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		out.Entries = append(out.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return out
}

// requestTemplates are the requests replayed, picked at random.
var requestTemplates = [][]*rlcommon.RateLimitDescriptor{
	{d("api", "a")}, {d("api", "b")}, {d("api", "special")},
	{d("path", "/files/x")}, {d("path", "/files/big/y")}, {d("path", "/other")},
	{d("user", "u1", "plan", "free")}, {d("user", "u2", "plan", "vip")}, {d("user", "u3", "plan", "basic")},
	{d("user", "u3", "plan", "basic", "region", "eu")}, {d("user", "u4")},
	{d("shadow", "s")},
	{d("tenant", "t1")}, {d("tenant", "t1"), d("tenant_strict", "t1")},
	{d("nolimit", "x")}, {d("api", "a"), d("path", "/files/x"), d("nolimit", "y")},
	{d("unknown", "z")},
}

// TestSameDecisionsAsReference replays one request sequence through envoyproxy/ratelimit and
// ours on the same config and Redis: ours with the Redis store, and with fixed-window
// reservations (RATE_LIMIT_RESERVE; one instance answers as without them).
func TestSameDecisionsAsReference(t *testing.T) {
	r := testutil.StartRedis(t)
	for _, hold := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("reserve=%v", hold), func(t *testing.T) {
			c, err := ratelimit.NewRedisClient(r.Addr + "?read_timeout=5s&write_timeout=5s")
			if err != nil {
				t.Fatal(err)
			}
			if err := c.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			var st ratelimit.Store = ratelimit.NewRedisStore(c, ratelimit.RedisOptions{Timeout: 5 * time.Second})
			if hold > 0 {
				st = ratelimit.NewReservingStore(st.(*ratelimit.RedisStore), ratelimit.ReserveOptions{Hold: hold, Clock: clock})
			}
			ours := newOurs(t, diffConfig, st, clock)
			t.Cleanup(func() { ours.Close() })
			sameDecisions(t, newReference(t, diffConfig, r.Addr, clock, 0), ours, clock)
			if rs, ok := st.(*ratelimit.ReservingStore); ok {
				used := promtest.ToFloat64(rs.Collectors()[0].(*prometheus.CounterVec).WithLabelValues("used"))
				t.Logf("%v requests admitted from reservations", used)
				if used < 20 {
					t.Errorf("only %v requests admitted from reservations", used)
				}
			}
		})
	}
}

func sameDecisions(t *testing.T, ref, ours rlsv3.RateLimitServiceServer, clock *fakeClock) {

	rng := rand.New(rand.NewSource(42))
	start := clock.Now()
	at := time.Duration(0)
	overs, oks := 0, 0
	for i := 0; i < 600; i++ {
		at += time.Duration(rng.Intn(400)) * time.Millisecond
		clock.Set(start.Add(at))
		tmpl := requestTemplates[rng.Intn(len(requestTemplates))]
		if rng.Intn(2) == 0 {
			// Half the requests on one busy counter (limit 90 a minute): window edges, and
			// reservations on the way up to the limit.
			tmpl = []*rlcommon.RateLimitDescriptor{d("bulk", "b")}
		}
		req := &rlsv3.RateLimitRequest{Domain: "diff", Descriptors: tmpl}
		want, err := ref.ShouldRateLimit(context.Background(), req)
		if err != nil {
			t.Fatalf("reference: %v", err)
		}
		got, err := ours.ShouldRateLimit(context.Background(), req)
		if err != nil {
			t.Fatalf("ours: %v", err)
		}
		if got.OverallCode != want.OverallCode {
			t.Fatalf("request %d %v at +%v: overall %v, reference %v", i, tmpl, at, got.OverallCode, want.OverallCode)
		}
		for j := range want.Statuses {
			g, w := got.Statuses[j], want.Statuses[j]
			if g.Code != w.Code || g.LimitRemaining != w.LimitRemaining {
				t.Fatalf("request %d %v at +%v descriptor %d: ours %v/%d, reference %v/%d", i, tmpl, at, j,
					g.Code, g.LimitRemaining, w.Code, w.LimitRemaining)
			}
			if (g.CurrentLimit == nil) != (w.CurrentLimit == nil) ||
				(g.CurrentLimit != nil && fmt.Sprint(g.CurrentLimit.RequestsPerUnit, g.CurrentLimit.Unit) != fmt.Sprint(w.CurrentLimit.RequestsPerUnit, w.CurrentLimit.Unit)) {
				t.Fatalf("request %d descriptor %d: current limit %v, reference %v", i, j, g.CurrentLimit, w.CurrentLimit)
			}
		}
		if want.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
			overs++
		} else {
			oks++
		}
	}
	if overs < 50 || oks < 50 {
		t.Fatalf("sequence too one-sided: %d over, %d ok", overs, oks)
	}
}
