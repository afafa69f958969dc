package ratelimit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	itest "github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/ir"
)

// TestRedisSentinel counts through a real Sentinel (redis-server --sentinel) that points at
// a real master, with the client built from a redis+sentinel:// REDIS_URL.
func TestRedisSentinel(t *testing.T) {
	master := itest.StartRedis(t)
	bin := itest.RedisServerPath(t)
	dir := t.TempDir()
	port := itest.FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	cfg := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 1\n", port, dir, master.Port)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })

	c, err := NewRedisClient("redis+sentinel://127.0.0.1:" + strconv.Itoa(port) + "?master_name=mymaster")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("sentinel client never reached the master")
		}
		time.Sleep(50 * time.Millisecond)
	}
	clock := newFakeClock(base)
	svc := newTestService(t, redisStoreFor(t, c), clock, oneRuleDomain(ir.RateLimitRule{Algorithm: ir.FixedWindow, Requests: 2, Period: time.Minute}))
	var got []rlsv3.RateLimitResponse_Code
	for i := 0; i < 3; i++ {
		r, err := svc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.OverallCode)
	}
	if fmt.Sprint(got) != "[OK OK OVER_LIMIT]" {
		t.Fatalf("through sentinel: %v", got)
	}
}
