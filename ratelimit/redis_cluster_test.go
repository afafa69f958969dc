package ratelimit

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
)

// TestRedisClusterDenialGiveBackRunsOnce: the plain Redis store on a Cluster, the same
// re-send as TestReservingClusterGiveBackRunsOnce applied to the unit a denial gives back
// (run: "s.returnUnits(ctx, back)"): the 4th request on a limit of 3 is denied, its give-back's
// reply is lost after it ran, go-redis runs it again, and the counter drops below what was
// admitted: a 5th request is admitted.
func TestRedisClusterDenialGiveBackRunsOnce(t *testing.T) {
	cl := itest.StartRedisCluster(t)
	addrs := cl.Addrs()
	c0, err := NewRedisClient(clusterURL(addrs))
	if err != nil {
		t.Fatal(err)
	}
	drop := &replyDropper{marker: []byte("EXISTS")}
	c0.(*redis.ClusterClient).Options().Dialer = drop.dial
	s := redisStoreFor(t, c0)
	now := base.UnixMicro()
	c := fixedCheck("r2cl:deny:{k}", 3, now)
	var admitted int
	for i := 0; i < 6; i++ {
		if i == 3 {
			drop.armed.Store(true) // the denial's give-back
		}
		rs, err := s.Eval(context.Background(), now, [][]Check{{c}})
		if err != nil {
			t.Fatal(err)
		}
		if rs[0][0].Allowed {
			admitted++
		}
	}
	if drop.fired.Load() != 1 {
		t.Fatalf("no reply dropped (fired %d)", drop.fired.Load())
	}
	if admitted > 3 {
		t.Errorf("limit 3: admitted %d (a denial's give-back ran twice; counter now %d)", admitted, counter(t, c0, c.Key))
	}
}

// clusterNode is a direct client to one cluster node.
type clusterNode struct {
	addr, host, port, id string
	c                    *redis.Client
}

func clusterNodes(t testing.TB, cl *itest.RedisCluster) []*clusterNode {
	t.Helper()
	var out []*clusterNode
	for _, n := range cl.Nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2})
		t.Cleanup(func() { c.Close() })
		id, err := c.Do(context.Background(), "cluster", "myid").Text()
		if err != nil {
			t.Fatal(err)
		}
		host, port, _ := strings.Cut(n.Addr, ":")
		out = append(out, &clusterNode{addr: n.Addr, host: host, port: port, id: id, c: c})
	}
	return out
}

func nodeDo(t testing.TB, n *clusterNode, args ...any) any {
	t.Helper()
	v, err := n.c.Do(context.Background(), args...).Result()
	if err != nil {
		t.Fatalf("%s %v: %v", n.addr, args, err)
	}
	return v
}

// slotOwner returns the node that serves slot.
func slotOwner(t testing.TB, nodes []*clusterNode, key string) (src *clusterNode, slot int64) {
	t.Helper()
	slot = nodeDo(t, nodes[0], "cluster", "keyslot", key).(int64)
	// The owner answers a key command on the slot without redirect.
	for _, n := range nodes {
		if err := n.c.Do(context.Background(), "exists", key).Err(); err == nil {
			return n, slot
		}
	}
	t.Fatal("no owner")
	return nil, 0
}

// TestRedisClusterMovedAndAsk: with every command wrapped in noRetry and the scripts sent
// as evalCmd, the store still follows ASK (slot migrating, the keys already on the target:
// SET NX/INCRBY, EVALSHA of the group script, which the target has not loaded: NOSCRIPT
// then ASK again, and the EVAL of a give-back) and MOVED (slot moved, the client's map
// stale), and nothing runs twice: every counter equals what was admitted.
func TestRedisClusterMovedAndAsk(t *testing.T) {
	cl := itest.StartRedisCluster(t)
	addrs := cl.Addrs()
	url := clusterURL(addrs)
	clock := newFakeClock(base)
	now := base.UnixMicro()
	c0, err := NewRedisClient(url)
	if err != nil {
		t.Fatal(err)
	}
	rs := NewReservingStore(NewRedisStore(c0, RedisOptions{Timeout: 5 * time.Second}), ReserveOptions{Hold: 200 * time.Millisecond, Clock: clock})
	t.Cleanup(func() { rs.Close() })
	plain := rs.Inner()
	nodes := clusterNodes(t, cl)
	const tag = "{mv}"
	fixed := fixedCheck("mv:f:"+tag, 1000, now)
	fixed2 := fixedCheck("mv:f2:"+tag, 1000, now)
	sliding := Check{Key: "mv:s:" + tag, Alg: AlgSlidingWindow, Limit: 1000, Period: 60_000_000, Cost: 1}
	group := []Check{{Key: "mv:g1:" + tag, Alg: AlgSlidingWindow, Limit: 1000, Period: 60_000_000, Cost: 1},
		{Key: "mv:g2:" + tag, Alg: AlgFixedWindow, Limit: 1000, Period: 60_000_000, WindowEnd: fixed.WindowEnd, Cost: 2}}
	want := map[string]int64{}
	call := func(s Store, gs ...[]Check) {
		t.Helper()
		res, err := s.Eval(context.Background(), now, gs)
		if err != nil {
			t.Fatalf("eval %v: %v", gs, err)
		}
		for gi, g := range gs {
			ok := allAllowed(res[gi])
			if !ok {
				t.Fatalf("denied: %v %+v", g, res[gi])
			}
			for _, c := range g {
				want[c.Key] += int64(c.Cost)
			}
		}
	}
	round := func() {
		t.Helper()
		for i := 0; i < 20; i++ {
			call(rs, []Check{fixed})
		}
		call(plain, []Check{fixed2}, []Check{sliding}, group)
	}
	round()
	src, slot := slotOwner(t, nodes, fixed.Key)
	var dst *clusterNode
	for _, n := range nodes {
		if n != src {
			dst = n
			break
		}
	}
	// ASK: the slot migrates from src to dst; every key is on dst already.
	nodeDo(t, dst, "cluster", "setslot", slot, "importing", src.id)
	nodeDo(t, src, "cluster", "setslot", slot, "migrating", dst.id)
	keys, err := src.c.Do(context.Background(), "cluster", "getkeysinslot", slot, 100).StringSlice()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys in slot: %v %v", keys, err)
	}
	args := []any{"migrate", dst.host, dst.port, "", 0, 5000, "keys"}
	for _, k := range keys {
		args = append(args, k)
	}
	nodeDo(t, src, args...)
	nodeDo(t, dst, "script", "flush") // the target has not loaded the group script
	round()
	rs.Sweep(now + 300_000) // the give-back (EVAL) goes by ASK too
	// MOVED: the slot is dst's; the client still thinks src.
	for _, n := range nodes {
		nodeDo(t, n, "cluster", "setslot", slot, "node", dst.id)
	}
	nodeDo(t, dst, "script", "flush")
	round()
	rs.Sweep(now + 600_000)
	// Every counter equals what was admitted (the reserving store holds nothing now).
	rs.mu.Lock()
	held := uint64(0)
	for _, l := range rs.leases {
		held += l.avail
	}
	rs.mu.Unlock()
	want[fixed.Key] += int64(held)
	// The redirections did happen.
	var stats strings.Builder
	stats.WriteString(src.c.Info(context.Background(), "errorstats").Val())
	for _, e := range []string{"errorstat_ASK", "errorstat_MOVED"} {
		if !strings.Contains(stats.String(), e) {
			t.Errorf("no %s seen:\n%s", e, stats.String())
		}
	}
	stats.WriteString(dst.c.Info(context.Background(), "errorstats").Val())
	for _, e := range []string{"errorstat_NOSCRIPT"} {
		if !strings.Contains(stats.String()[strings.LastIndex(stats.String(), "# Errorstats"):], e) {
			t.Errorf("no %s seen:\n%s", e, stats.String())
		}
	}
	t.Log(stats.String())
	for k, w := range want {
		var got int64
		switch {
		case strings.HasPrefix(k, "mv:s:") || strings.HasPrefix(k, "mv:g1:"):
			got = slidingUnits(t, dst.c.Get(context.Background(), k).Val())
		default:
			got, _ = dst.c.Get(context.Background(), k).Int64()
		}
		if got != w {
			t.Errorf("%s: %d in Redis, %d admitted (held %d)", k, got, w, held)
		}
		if ttl := dst.c.PTTL(context.Background(), k).Val(); ttl < 0 {
			t.Errorf("%s: no expiry (%v)", k, ttl)
		}
	}
}
