package testutil

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a real 3-master Redis Cluster (no replicas) on free loopback ports.
type RedisCluster struct {
	Nodes []*Redis
}

// Addrs returns the node addresses ("127.0.0.1:port").
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// StartRedisCluster starts three redis-server processes with cluster mode on, joins them
// with `redis-cli --cluster create` and waits until every node reports cluster_state:ok.
// The servers stop when the test ends.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		RedisServerPath(t) // skips or fails the same way as a missing redis-server
		t.Fatalf("redis-cli is not installed (it ships with redis-server): %v", err)
	}
	c := &RedisCluster{}
	for i := 0; i < 3; i++ {
		bus := FreePort(t)
		c.Nodes = append(c.Nodes, StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "2000"))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range c.Nodes {
		for {
			out, err := exec.Command(cli, "-p", strconv.Itoa(n.Port), "cluster", "info").CombinedOutput()
			if err == nil && strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s not ok: %v %s", n.Addr, err, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// String lists the nodes.
func (c *RedisCluster) String() string { return fmt.Sprintf("cluster%v", c.Addrs()) }
