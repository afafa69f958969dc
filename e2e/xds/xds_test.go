// Package xds_test drives the built binary with two independent proxyless gRPC clients,
// grpc-go's xDS resolver and @grpc/grpc-js-xds in a Node process (grpcjs/), each reaching
// the gateway through an ADS proxy that counts the ACKs and NACKs the client sent. Every
// scenario runs once per client: routes created through the REST API are followed, weights
// hold, header routing picks the right backend, a removed instance drains, route updates
// fail no call, each route feature is either applied or left out of the gRPC flavor with a
// reason, neither client rejects anything, and /xds/nodes counts what the clients sent.
package xds_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

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

func TestProxylessGRPC(t *testing.T) {
	e := newEnv(t, testutil.GatewayOptions{})
	a, b := xdstest.StartBackend(t, "a"), xdstest.StartBackend(t, "b")
	g := e.g

	e.runScenarios(t, []scenario{
		{"a new route and its change are followed", func(t *testing.T, e *env, c xdsClient) {
			id, host := "follow-"+c.Short(), "follow-"+c.Short()+".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", publicRoute(id, host, grpcTarget(a, 1)), 201)
			r := rpcs{Target: host, N: 20}
			e.waitBackend(t, c, r, "a", 10*time.Second)
			if got := c.Call(t, r); got.Backends["a"] != 20 {
				t.Fatalf("after the route: %s", got)
			}
			mustDo(t, g, "PUT", "/api/v1/management/routes/"+id, publicRoute(id, host, grpcTarget(b, 1)), 200)
			took := e.waitBackend(t, c, rpcs{Target: host}, "b", 10*time.Second)
			t.Logf("%s followed the change within %v", c.Name(), took)
			if got := c.Call(t, r); got.Backends["b"] != 20 {
				t.Fatalf("after the change: %s", got)
			}
			// The route's status shows the gRPC group acknowledged it, and the client is a
			// node of the grpc group.
			eventually(t, 20*time.Second, func() string {
				st := e.routeStatus(t, id)
				if st.Translation == "ok" && st.XDS["grpc"].State == "ACKED" {
					return ""
				}
				return fmt.Sprintf("route status %+v", st)
			})
			for _, node := range c.Nodes() {
				n := e.node(t, node)
				if n == nil || n.Group != "grpc" || n.Acked["rds"] == "" || !strings.HasPrefix(strings.ToLower(n.UserAgent), "grpc") {
					t.Fatalf("node %s on /xds/nodes: %+v", node, n)
				}
			}
		}},
		{"weights 80/20", func(t *testing.T, e *env, c xdsClient) {
			host := "weighted-" + c.Short() + ".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
				"id": "weighted-" + c.Short(), "hosts": []string{host}, "require_auth": false, "load_balance": "weighted",
				"conditions": []any{map[string]any{"path_pattern": "/*"}},
				"targets":    []any{grpcTarget(a, 80), grpcTarget(b, 20)},
			}, 201)
			e.waitBackend(t, c, rpcs{Target: host}, "a", 10*time.Second)
			// 4,000 calls: the share of a has a standard deviation of 0.63%, so ±2.5% is
			// four of them.
			const n = 4000
			got := c.Call(t, rpcs{Target: host, N: n, Concurrency: 8})
			share := float64(got.Backends["a"]) / n
			t.Logf("%s: a=%d b=%d (a share %.3f)", c.Name(), got.Backends["a"], got.Backends["b"], share)
			if got.OK != n || got.Backends["a"]+got.Backends["b"] != n || share < 0.775 || share > 0.825 {
				t.Fatalf("weights 80/20 do not hold within 2.5%%: %s", got)
			}
		}},
		{"header routing", func(t *testing.T, e *env, c xdsClient) {
			host := "hdr-" + c.Short() + ".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", publicRoute("hdr-default-"+c.Short(), host, grpcTarget(a, 1)), 201)
			mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
				"id": "hdr-canary-" + c.Short(), "hosts": []string{host}, "require_auth": false,
				"conditions": []any{map[string]any{"path_pattern": "/*", "headers": []any{map[string]any{"name": "x-version", "exact": "v2"}}}},
				"targets":    []any{grpcTarget(b, 1)},
			}, 201)
			e.waitBackend(t, c, rpcs{Target: host, Metadata: map[string]string{"x-version": "v2"}}, "b", 10*time.Second)
			for md, want := range map[string]string{"v2": "b", "v1": "a", "": "a"} {
				r := rpcs{Target: host, N: 20}
				if md != "" {
					r.Metadata = map[string]string{"x-version": md}
				}
				if got := c.Call(t, r); got.Backends[want] != 20 {
					t.Fatalf("x-version %q: want all on %s, got %s", md, want, got)
				}
			}
		}},
		{"three route changes under 8 call loops fail no call", func(t *testing.T, e *env, c xdsClient) {
			id, host := "moving-"+c.Short(), "moving-"+c.Short()+".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", publicRoute(id, host, grpcTarget(a, 1)), 201)
			e.waitBackend(t, c, rpcs{Target: host}, "a", 10*time.Second)
			c.Start(t, "moving", rpcs{Target: host, Concurrency: 8})
			stopped := false
			defer func() {
				if !stopped {
					c.Stop(t, "moving")
				}
			}()
			changes := []struct {
				to    *xdstest.Backend
				extra map[string]any
			}{{b, map[string]any{}}, {a, map[string]any{"timeout": "10s"}}, {b, map[string]any{"retries": 2}}}
			for i, ch := range changes {
				body := publicRoute(id, host, grpcTarget(ch.to, 1))
				for k, v := range ch.extra {
					body[k] = v
				}
				mustDo(t, g, "PUT", "/api/v1/management/routes/"+id, body, 200)
				took := e.waitBackend(t, c, rpcs{Target: host}, ch.to.Name, 10*time.Second)
				t.Logf("%s: change %d followed within %v", c.Name(), i+1, took)
			}
			stopped = true
			got := c.Stop(t, "moving")
			t.Logf("%s: %d calls during three changes, %d failed", c.Name(), got.OK+got.failed(), got.failed())
			if got.failed() != 0 || got.OK == 0 {
				t.Fatalf("calls failed during route changes: %s", got)
			}
		}},
		{"a deregistered instance drains", func(t *testing.T, e *env, c xdsClient) {
			pool := "pool-" + c.Short()
			for _, be := range []*xdstest.Backend{a, b} {
				mustDo(t, g, "POST", "/api/v1/management/services", map[string]any{
					"id": pool + "-" + be.Name, "name": pool, "host": be.Host, "port": be.Port, "protocol": "grpc",
				}, 201)
			}
			host := pool + ".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
				"id": "pooled-" + c.Short(), "hosts": []string{host}, "require_auth": false,
				"conditions": []any{map[string]any{"path_pattern": "/*"}}, "targets": []any{map[string]any{"service": pool}},
			}, 201)
			eventually(t, 20*time.Second, func() string {
				got := c.Call(t, rpcs{Target: host, N: 20})
				if got.failed() > 0 {
					t.Fatalf("before the drain: %s", got)
				}
				if got.Backends["a"] > 0 && got.Backends["b"] > 0 {
					return ""
				}
				return "both instances serving: " + got.String()
			})
			mustDo(t, g, "DELETE", "/api/v1/management/services/"+pool+"-b", nil, 204)
			// Once b is gone from EDS no call reaches it, and none fails.
			eventually(t, 20*time.Second, func() string {
				got := c.Call(t, rpcs{Target: host, N: 20})
				if got.failed() > 0 {
					t.Fatalf("during the drain: %s", got)
				}
				if got.Backends["b"] > 0 {
					return "b still answers: " + got.String()
				}
				return ""
			})
			if got := c.Call(t, rpcs{Target: host, N: 100, Concurrency: 4}); got.Backends["a"] != 100 {
				t.Fatalf("after the drain: %s", got)
			}
			// A registered service name is also dialable directly.
			if got := c.Call(t, rpcs{Target: pool, N: 5}); got.Backends["a"] != 5 {
				t.Fatalf("xds:///%s: %s", pool, got)
			}
		}},
		{"no NACK, and the gateway counts the ACKs the client sent", func(t *testing.T, e *env, c xdsClient) {
			e.checkNoNACKs(t, c)
			e.checkCountsAgree(t, c)
		}},
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
