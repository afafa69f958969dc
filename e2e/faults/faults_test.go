// Package faults drives the built binary through failures: Redis dying under ext_authz and
// rate-limit load, a replica dying under connected xDS clients, SIGKILL during writes to
// the embedded store, and the management API under many concurrent clients.
//
// Every test starts real processes (redis-server, and ./cmd/api-gateway, which
// testutil.BuildGateway builds once per test process, before the first gateway starts) on
// free ports.
package faults

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// startPersistentRedis starts redis-server with AOF fsync'd on every write, so a kill and a
// restart on the same directory keeps every acknowledged write (as production should).
func startPersistentRedis(t *testing.T) *testutil.Redis {
	t.Helper()
	return testutil.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
}

// startReplica starts one gateway on the shared Redis.
func startReplica(t *testing.T, redisAddr string, env ...string) *testutil.Gateway {
	t.Helper()
	return testutil.StartGateway(t, testutil.GatewayOptions{Env: append([]string{
		"REDIS_URL=redis://" + redisAddr, "LOG_LEVEL=info",
	}, env...)})
}

// mustDo calls the management API and fails the test unless the status is one of want.
func mustDo(t *testing.T, g *testutil.Gateway, method, path string, body any, out any, want ...int) {
	t.Helper()
	code, raw := g.Do(method, path, body, out)
	for _, w := range want {
		if code == w {
			return
		}
	}
	t.Fatalf("%s %s: %d %s", method, path, code, raw)
}

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// checkRequest is what Envoy's ext_authz filter sends for a request on a route.
func checkRequest(routeID, apiKey string, n int) *authv3.CheckRequest {
	id := "faults-" + strconv.Itoa(n)
	h := map[string]string{":authority": "api.faults.test", ":method": "GET", ":path": "/orders/1", ":scheme": "http",
		"x-request-id": id, "user-agent": "faults"}
	if apiKey != "" {
		h["x-api-key"] = apiKey
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.9.8.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.10", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 10000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: id, Method: "GET", Path: "/orders/1", Host: "api.faults.test", Scheme: "http", Protocol: "HTTP/1.1", Headers: h,
		}},
		ContextExtensions: map[string]string{"route_id": routeID},
	}}
}

// rateLimitRequest is Envoy's ShouldRateLimit for a route's policy counted per route.
func rateLimitRequest(routeID, policyID string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "api-gateway", HitsAddend: 1, Descriptors: []*rlcommonv3.RateLimitDescriptor{{
		Entries: []*rlcommonv3.RateLimitDescriptor_Entry{{Key: "route_id", Value: routeID}, {Key: "policy", Value: policyID}},
	}}}
}

// eventually polls cond every 20 ms until it holds, failing after limit.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// within polls cond every 20 ms for up to limit and reports whether it came to hold.
func within(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// envDuration reads a duration from the environment (for the load test's length).
func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d
		}
	}
	return def
}

// jsonBody marshals v (for request bodies built from maps).
func jsonBody(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// waitTCPClosed waits until nothing accepts on addr (a killed process's port).
func waitTCPClosed(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return nil
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s still accepts connections", addr)
}

// logComponent logs the gateway's warnings and errors from one component (at most 20
// lines), to show why a check failed.
func logComponent(t *testing.T, g *testutil.Gateway, component string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(g.Logs(), "\n") {
		if !strings.Contains(line, `"component":"`+component+`"`) ||
			!(strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`)) {
			continue
		}
		if n++; n > 20 {
			break
		}
		t.Log(line)
	}
}
