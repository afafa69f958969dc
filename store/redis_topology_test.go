package store_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/store/storetest"
)

// The whole conformance suite on a three-node Redis Cluster: the hash-tagged keys of one
// store share a slot, so scripts and MULTI work; stores with different prefixes land on
// different nodes.
func TestRedisClusterConformance(t *testing.T) {
	addrs := testutil.StartRedisCluster(t).Addrs()
	url := "redis-cluster://" + strings.Join(addrs, ",")
	storetest.Run(t, func(t *testing.T) store.Store {
		return openRedis(t, url+"?prefix="+uniquePrefix())
	})
	// Two replicas follow each other through cluster pub/sub.
	p := uniquePrefix()
	a, b := openRedis(t, url+"?prefix="+p), openRedis(t, url+"?prefix="+p)
	wb := b.Watch(t.Context())
	rev, err := store.Create(t.Context(), a, model.KindRoutes, "x", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, wb, rev, time.Second)
}

// A Sentinel-managed master: the store finds it through the sentinel.
func TestRedisSentinel(t *testing.T) {
	master := testutil.StartRedis(t)
	bin := testutil.RedisServerPath(t)
	dir := t.TempDir()
	port := testutil.FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nsentinel monitor gwmaster 127.0.0.1 %d 1\n",
		port, dir, master.Port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			fmt.Fprint(c, "*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$8\r\ngwmaster\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "*2") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel on %s did not come up: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := openRedis(t, "redis-sentinel://"+addr+"/gwmaster?prefix="+uniquePrefix())
	rev, err := store.Create(t.Context(), s, model.KindRoutes, "r", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.Get(t.Context(), model.KindRoutes, "r")
	if err != nil || o.Revision != rev {
		t.Fatalf("get through sentinel: %+v %v", o, err)
	}
}
