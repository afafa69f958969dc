// Package xds_test drives the built binary with proxyless grpc-go clients (xds:///HOST):
// routes created through the REST API are followed, weights hold, header routing picks the
// right backend, a removed instance drains, a route update fails no RPC, and the route's
// xDS status and the nodes endpoint report what the clients acknowledged.
package xds_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

var ctxTimeout = 30 * time.Second

func mustDo(t *testing.T, g *testutil.Gateway, method, path string, body any, want int) []byte {
	t.Helper()
	code, raw := g.Do(method, path, body, nil)
	if code != want {
		t.Fatalf("%s %s: %d %s", method, path, code, raw)
	}
	return raw
}

func target(b *xdstest.Backend, w int) map[string]any {
	return map[string]any{"host": b.Host, "port": b.Port, "weight": w, "protocol": "grpc"}
}

// waitFor polls fn until it is true or 20 s pass.
func waitFor(t *testing.T, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProxylessGRPC(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{})
	a, b := xdstest.StartBackend(t, "a"), xdstest.StartBackend(t, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 2*ctxTimeout)
	defer cancel()

	t.Run("weights 80/20", func(t *testing.T) {
		mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
			"id": "weighted", "hosts": []string{"weighted.test"}, "require_auth": false, "load_balance": "weighted",
			"conditions": []any{map[string]any{"path_pattern": "/*"}},
			"targets":    []any{target(a, 80), target(b, 20)},
		}, 201)
		cc := xdstest.Dial(t, g.GRPCAddr(), "weights-client", "weighted.test")
		counts := map[string]int{}
		const n = 2000
		for i := 0; i < n; i++ {
			got, err := xdstest.Call(ctx, cc)
			if err != nil {
				t.Fatalf("rpc %d: %v", i, err)
			}
			counts[got]++
		}
		share := float64(counts["a"]) / n
		t.Logf("a=%d b=%d (a share %.3f)", counts["a"], counts["b"], share)
		if share < 0.75 || share > 0.85 || counts["a"]+counts["b"] != n {
			t.Fatalf("weights 80/20 do not hold: %v", counts)
		}
		// The route's status shows the gRPC group acknowledged it.
		waitFor(t, "route status ACKED", func() bool {
			var rt struct {
				Status struct {
					Translation string `json:"translation"`
					XDS         map[string]struct {
						State string `json:"state"`
					} `json:"xds"`
				} `json:"status"`
			}
			g.Do("GET", "/api/v1/management/routes/weighted", nil, &rt)
			return rt.Status.Translation == "ok" && rt.Status.XDS["grpc"].State == "ACKED"
		})
		var nodes struct {
			Nodes []struct {
				ID    string            `json:"id"`
				Group string            `json:"group"`
				Acked map[string]string `json:"acked"`
			} `json:"nodes"`
		}
		code, raw := g.Do("GET", "/api/v1/management/xds/nodes", nil, &nodes)
		found := false
		for _, nd := range nodes.Nodes {
			found = found || (nd.ID == "weights-client" && nd.Group == "grpc" && nd.Acked["rds"] != "")
		}
		if code != 200 || !found {
			t.Fatalf("nodes: %d %s", code, raw)
		}
	})

	t.Run("header routing", func(t *testing.T) {
		mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
			"id": "hdr-default", "hosts": []string{"hdr.test"}, "require_auth": false,
			"conditions": []any{map[string]any{"path_pattern": "/*"}}, "targets": []any{target(a, 1)},
		}, 201)
		mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
			"id": "hdr-canary", "hosts": []string{"hdr.test"}, "require_auth": false,
			"conditions": []any{map[string]any{"path_pattern": "/*", "headers": []any{map[string]any{"name": "x-version", "exact": "v2"}}}},
			"targets":    []any{target(b, 1)},
		}, 201)
		cc := xdstest.Dial(t, g.GRPCAddr(), "header-client", "hdr.test")
		for i := 0; i < 20; i++ {
			if got, err := xdstest.Call(ctx, cc, "x-version", "v2"); err != nil || got != "b" {
				t.Fatalf("x-version v2: %q %v", got, err)
			}
			if got, err := xdstest.Call(ctx, cc, "x-version", "v1"); err != nil || got != "a" {
				t.Fatalf("x-version v1: %q %v", got, err)
			}
			if got, err := xdstest.Call(ctx, cc); err != nil || got != "a" {
				t.Fatalf("no header: %q %v", got, err)
			}
		}
	})

	t.Run("removing an instance drains it", func(t *testing.T) {
		for _, be := range []*xdstest.Backend{a, b} {
			mustDo(t, g, "POST", "/api/v1/management/services", map[string]any{
				"id": "pool-" + be.Name, "name": "pool", "host": be.Host, "port": be.Port, "protocol": "grpc",
			}, 201)
		}
		mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
			"id": "pooled", "hosts": []string{"pool.test"}, "require_auth": false,
			"conditions": []any{map[string]any{"path_pattern": "/*"}}, "targets": []any{map[string]any{"service": "pool"}},
		}, 201)
		cc := xdstest.Dial(t, g.GRPCAddr(), "pool-client", "pool.test")
		seen := map[string]bool{}
		waitFor(t, "both instances serving", func() bool {
			got, err := xdstest.Call(ctx, cc)
			if err != nil {
				t.Fatal(err)
			}
			seen[got] = true
			return seen["a"] && seen["b"]
		})
		mustDo(t, g, "DELETE", "/api/v1/management/services/pool-b", nil, 204)
		// Once b is gone from EDS no RPC reaches it, and none fails.
		waitFor(t, "b drained", func() bool {
			for i := 0; i < 20; i++ {
				got, err := xdstest.Call(ctx, cc)
				if err != nil {
					t.Fatal(err)
				}
				if got == "b" {
					return false
				}
			}
			return true
		})
		for i := 0; i < 100; i++ {
			if got, err := xdstest.Call(ctx, cc); err != nil || got != "a" {
				t.Fatalf("after drain: %q %v", got, err)
			}
		}
		// A registered service name is also dialable directly.
		direct := xdstest.Dial(t, g.GRPCAddr(), "direct-client", "pool")
		if got, err := xdstest.Call(ctx, direct); err != nil || got != "a" {
			t.Fatalf("xds:///pool: %q %v", got, err)
		}
	})

	t.Run("route update fails no RPC", func(t *testing.T) {
		mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
			"id": "moving", "hosts": []string{"moving.test"}, "require_auth": false,
			"conditions": []any{map[string]any{"path_pattern": "/*"}}, "targets": []any{target(a, 1)},
		}, 201)
		cc := xdstest.Dial(t, g.GRPCAddr(), "moving-client", "moving.test")
		if got, err := xdstest.Call(ctx, cc); err != nil || got != "a" {
			t.Fatalf("before: %q %v", got, err)
		}
		var failed, total atomic.Int64
		var sawB atomic.Bool
		var errMu sync.Mutex
		var firstErr error
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					got, err := xdstest.Call(ctx, cc)
					total.Add(1)
					if err != nil {
						failed.Add(1)
						errMu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						errMu.Unlock()
					}
					if got == "b" {
						sawB.Store(true)
					}
				}
			}()
		}
		time.Sleep(100 * time.Millisecond) // traffic flowing before the update
		mustDo(t, g, "PUT", "/api/v1/management/routes/moving", map[string]any{
			"id": "moving", "hosts": []string{"moving.test"}, "require_auth": false, "timeout": "10s",
			"conditions": []any{map[string]any{"path_pattern": "/*"}}, "targets": []any{target(b, 1)},
		}, 200)
		waitFor(t, "traffic on b", sawB.Load)
		time.Sleep(100 * time.Millisecond)
		close(stop)
		wg.Wait()
		t.Logf("%d RPCs during the update, %d failed", total.Load(), failed.Load())
		if failed.Load() != 0 {
			t.Fatalf("%d of %d RPCs failed during a route update; first: %v", failed.Load(), total.Load(), firstErr)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		res, raw := getMetrics(t, g)
		for _, m := range []string{"api_gateway_xds_pushes_total{type=\"cds\"}", "api_gateway_xds_connected_nodes", "api_gateway_xds_snapshot_build_seconds_count"} {
			if !strings.Contains(raw, m) {
				t.Errorf("metric %s missing (%d)", m, res)
			}
		}
	})
}

func getMetrics(t *testing.T, g *testutil.Gateway) (int, string) {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", g.MetricsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw)
}
