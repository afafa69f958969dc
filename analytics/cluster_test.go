package analytics

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// TestRedisStoreOnCluster runs the Redis store through a ClusterClient against a real
// one-node Redis Cluster: every key shares the {prefix} hash tag, so MULTI/EXEC works.
func TestRedisStoreOnCluster(t *testing.T) {
	r := testutil.StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer admin.Close()
	if err := admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
		t.Fatal(err)
	}
	for {
		info, err := admin.ClusterInfo(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if containsLine(info, "cluster_state:ok") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("cluster never became ok:\n%s", info)
		case <-time.After(20 * time.Millisecond):
		}
	}
	var c redis.UniversalClient = redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{r.Addr}})
	defer c.Close()
	s := NewRedisStore(c, "gw", DefaultRetention())
	start := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	rows := []Row{
		{Res: Minute, Start: start, Key: Key{Route: "a"}, Stats: Stats{Requests: 2}},
		{Res: Hour, Start: start, Key: Key{Route: "a"}, Stats: Stats{Requests: 2}},
		{Res: Day, Start: Day.Truncate(start), Key: Key{Route: "b"}, Stats: Stats{Requests: 5}},
	}
	if err := s.Merge(ctx, rows); err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, s, Day, start.Add(-48*time.Hour), start.Add(48*time.Hour)); got[Key{Route: "b"}].Requests != 5 {
		t.Errorf("day rows = %+v", got)
	}
	if err := s.Expire(ctx, Minute, start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, s, Minute, start.Add(-time.Hour), start.Add(time.Hour)); len(got) != 0 {
		t.Errorf("minute rows after expire = %+v", got)
	}
}

func containsLine(s, line string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}
