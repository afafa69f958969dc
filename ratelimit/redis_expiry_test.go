package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
)

// TestFixedCountersKeepExpiry: a counter is never left without an expiry, even one created
// over the limit (a counter without one would deny forever). Every interleaving of the native path (SET NX PX, then INCRBY, possibly with other
// commands in between), fixed1, group() and give-backs (returnScript) leaves each counter
// with an expiry, and with the count of what was admitted.
func TestFixedCountersKeepExpiry(t *testing.T) {
	r := itest.StartRedis(t)
	now := base.UnixMicro()
	s := redisStoreFor(t, mustClient(t, r.Addr))
	rc := mustClient(t, r.Addr)
	defer rc.Close()
	ctx := context.Background()
	eval := func(gs ...[]Check) [][]Result {
		t.Helper()
		res, err := s.Eval(ctx, now, gs)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	ttlOK := func(step, key string) {
		t.Helper()
		if d := rc.PTTL(ctx, key).Val(); d == -1 {
			t.Errorf("%s: %s has no expiry (value %d)", step, key, counter(t, rc, key))
		}
	}
	for i, seq := range []string{"fixed1-over,native", "native-set,fixed1-over,native-incr", "native-set,fixed1,native-incr",
		"native-set,giveback,native-incr", "native-set,group,native-incr", "fixed1-over,giveback,group", "group-over,native"} {
		key := fmt.Sprintf("ttl:%d:{k}", i)
		c := fixedCheck(key, 3, now)
		over := c
		over.Cost = 5
		ttl := (c.WindowEnd-now+999)/1000 + 60000
		for _, step := range strings.Split(seq, ",") {
			switch step {
			case "native":
				eval([]Check{c})
			case "native-set": // the first half of a native check
				rc.SetNX(ctx, key, 0, time.Duration(ttl)*time.Millisecond)
			case "native-incr": // its second half
				rc.IncrBy(ctx, key, 1)
			case "fixed1":
				c2 := c
				c2.Cost = 2
				eval([]Check{c2})
			case "fixed1-over":
				if eval([]Check{over})[0][0].Allowed {
					t.Fatal("cost 5 admitted on a limit of 3")
				}
			case "giveback":
				s.returnUnits(ctx, []Refund{{Key: key, N: 1}})
			case "group":
				eval([]Check{c, {Key: key + "s", Alg: AlgSlidingWindow, Limit: 10, Period: 60_000_000, Cost: 1}})
			case "group-over":
				eval([]Check{over, {Key: key + "s", Alg: AlgSlidingWindow, Limit: 10, Period: 60_000_000, Cost: 1}})
			}
			ttlOK(seq+" after "+step, key)
		}
	}
}
