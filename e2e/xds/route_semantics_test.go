package xds_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

// TestProxylessRouteSemantics: what a route says holds for both proxyless clients: DNS-name
// targets answer, least_connections is taken, the route timeout bounds a call, retries
// with the default retry_on retry gRPC failures, conditions a client cannot evaluate leave
// their route out of the gRPC flavor with the reason in its status, and ip_hash keeps a
// channel on one backend.
func TestProxylessRouteSemantics(t *testing.T) {
	e := newEnv(t, testutil.GatewayOptions{})
	g := e.g
	a, b := xdstest.StartBackend(t, "a"), xdstest.StartBackend(t, "b")
	// Registered under the name localhost: a DNS name the control plane cannot pass on as an
	// EDS address (grpc-js and Envoy take only IP addresses there).
	local := xdstest.StartBackendWith(t, "local", xdstest.BackendOptions{Host: "localhost"})
	slow := xdstest.StartBackendWith(t, "slow", xdstest.BackendOptions{Delay: 800 * time.Millisecond})

	e.runScenarios(t, []scenario{
		{"a target named by DNS answers", func(t *testing.T, e *env, c xdsClient) {
			mark := e.markNACKs(c)
			host := "dns-" + c.Short() + ".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", publicRoute("dns-"+c.Short(), host,
				map[string]any{"host": "localhost", "port": local.Port, "protocol": "grpc"}), 201)
			e.waitBackend(t, c, rpcs{Target: host, Deadline: time.Second}, "local", 10*time.Second)
			if got := c.Call(t, rpcs{Target: host, N: 10}); got.Backends["local"] != 10 {
				t.Fatalf("host target localhost: %s", got)
			}
			// A service whose one instance registers with a host name.
			svc := "local-" + c.Short()
			mustDo(t, g, "POST", "/api/v1/management/services", map[string]any{
				"id": svc + "-1", "name": svc, "host": "localhost", "port": local.Port, "protocol": "grpc",
			}, 201)
			shost := "dns-svc-" + c.Short() + ".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", publicRoute("dns-svc-"+c.Short(), shost, map[string]any{"service": svc}), 201)
			e.waitBackend(t, c, rpcs{Target: shost, Deadline: time.Second}, "local", 10*time.Second)
			if got := c.Call(t, rpcs{Target: shost, N: 10}); got.Backends["local"] != 10 {
				t.Fatalf("service instance at localhost: %s", got)
			}
			if got := c.Call(t, rpcs{Target: svc, N: 5}); got.Backends["local"] != 5 {
				t.Fatalf("xds:///%s: %s", svc, got)
			}
			e.checkNoNACKsSince(t, c, mark)
		}},
		{"least_connections is taken", func(t *testing.T, e *env, c xdsClient) {
			mark := e.markNACKs(c)
			host := "leastconn-" + c.Short() + ".test"
			body := publicRoute("leastconn-"+c.Short(), host, grpcTarget(a, 1), grpcTarget(b, 1))
			body["load_balance"] = "least_connections"
			mustDo(t, g, "POST", "/api/v1/management/routes", body, 201)
			eventually(t, 10*time.Second, func() string {
				got := c.Call(t, rpcs{Target: host, N: 20, Deadline: time.Second})
				if got.OK == 20 {
					return ""
				}
				return got.String() + e.nackSummary(c)
			})
			e.checkNoNACKsSince(t, c, mark)
			if got := c.Call(t, rpcs{Target: host, N: 40, Concurrency: 4}); got.OK != 40 {
				t.Fatalf("least_connections: %s", got)
			}
		}},
		{"the route timeout bounds a call", func(t *testing.T, e *env, c xdsClient) {
			host := "timeout-" + c.Short() + ".test"
			body := publicRoute("timeout-"+c.Short(), host, grpcTarget(slow, 1))
			body["timeout"] = "300ms"
			mustDo(t, g, "POST", "/api/v1/management/routes", body, 201)
			// The route is followed once a call reaches the slow backend (answered or not).
			eventually(t, 10*time.Second, func() string {
				before := slow.Calls()
				got := c.Call(t, rpcs{Target: host, Deadline: 2 * time.Second})
				if slow.Calls() > before {
					return ""
				}
				return got.String()
			})
			// The client's own deadline (5 s) is far; the route's 300 ms ends the call, well
			// before the backend's 800 ms answer.
			got := c.Call(t, rpcs{Target: host, N: 3, Deadline: 5 * time.Second})
			t.Logf("%s: %s, latencies %v ms", c.Name(), got, got.LatencyMS)
			// The deadline travels to the backend as grpc-timeout, and the backend's own timer
			// may fire first and reset the stream: grpc-js reports that reset as CANCELLED
			// ("Call cancelled"), grpc-go as DEADLINE_EXCEEDED. Either way the route's 300 ms
			// ended the call (the latencies below).
			ended := got.Errors["DEADLINE_EXCEEDED"]
			if c.Short() == "js" {
				ended += got.Errors["CANCELLED"]
			}
			if ended != 3 || got.OK != 0 {
				t.Fatalf("want 3 calls ended by the 300 ms deadline, got %s (latencies %v ms)", got, got.LatencyMS)
			}
			for _, ms := range got.LatencyMS {
				if ms < 280 || ms > 650 {
					t.Fatalf("a call ended after %.0f ms, want about 300 ms (all: %v)", ms, got.LatencyMS)
				}
			}
		}},
		{"retries with the default retry_on retry UNAVAILABLE", func(t *testing.T, e *env, c xdsClient) {
			flaky := xdstest.StartBackendWith(t, "flaky-"+c.Short(), xdstest.BackendOptions{FailEvery: 2})
			host := "retry-" + c.Short() + ".test"
			body := publicRoute("retry-"+c.Short(), host, grpcTarget(flaky, 1))
			body["retries"] = 3
			mustDo(t, g, "POST", "/api/v1/management/routes", body, 201)
			e.waitBackend(t, c, rpcs{Target: host}, flaky.Name, 10*time.Second)
			before := flaky.Calls()
			got := c.Call(t, rpcs{Target: host, N: 40})
			t.Logf("%s: 40 calls: %s; the backend saw %d attempts", c.Name(), got, flaky.Calls()-before)
			if got.OK != 40 {
				t.Fatalf("a backend failing every other call with UNAVAILABLE, retries 3: %d of 40 calls failed: %s", got.failed(), got)
			}
		}},
		{"conditions a proxyless client cannot evaluate leave their route out", func(t *testing.T, e *env, c xdsClient) {
			mark := e.markNACKs(c)
			host := "cond-" + c.Short() + ".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", publicRoute("cond-plain-"+c.Short(), host, grpcTarget(a, 1)), 201)
			method, query := "cond-method-"+c.Short(), "cond-query-"+c.Short()
			mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
				"id": method, "hosts": []string{host}, "require_auth": false,
				"conditions": []any{map[string]any{"path_pattern": "/*", "method": "POST"}}, "targets": []any{grpcTarget(b, 1)},
			}, 201)
			mustDo(t, g, "POST", "/api/v1/management/routes", map[string]any{
				"id": query, "hosts": []string{host}, "require_auth": false,
				"conditions": []any{map[string]any{"path_pattern": "/*", "query": []any{map[string]any{"name": "debug", "present": true}}}},
				"targets":    []any{grpcTarget(b, 1)},
			}, 201)
			e.waitBackend(t, c, rpcs{Target: host}, "a", 10*time.Second)
			// The three routes are in the snapshot the client follows once the plain route
			// answers; every call goes to it.
			if got := c.Call(t, rpcs{Target: host, N: 40, Concurrency: 4}); got.Backends["a"] != 40 {
				t.Fatalf("calls to %s: want all 40 on the plain route's backend a, got %s", host, got)
			}
			for id, field := range map[string]string{method: "method", query: "query"} {
				st := e.routeStatus(t, id)
				if st.Translation != "ok" || st.XDS["grpc"].State != "OMITTED" || !strings.Contains(st.XDS["grpc"].Error, field) {
					t.Errorf("route %s (a %s condition): status %+v, want translation ok and xds.grpc OMITTED with a reason naming %s", id, field, st, field)
				}
			}
			e.checkNoNACKsSince(t, c, mark)
		}},
		{"a client following no cluster leaves routes ACKED", func(t *testing.T, e *env, c xdsClient) {
			// A channel to a host no route names yet: its xDS client asks for the listener
			// and, finding none, for no route configuration or cluster (grpc-go gives each
			// channel its own xDS client, so that node never asks for a cluster at all).
			unrouted := "unrouted-" + c.Short() + ".test"
			if got := c.Call(t, rpcs{Target: unrouted, Deadline: time.Second}); got.OK != 0 {
				t.Fatalf("a host without routes answered: %s", got)
			}
			defer c.Close(t, unrouted)
			id, host := "acked-"+c.Short(), "acked-"+c.Short()+".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", publicRoute(id, host, grpcTarget(a, 1)), 201)
			e.waitBackend(t, c, rpcs{Target: host}, "a", 10*time.Second)
			eventually(t, 10*time.Second, func() string {
				if st := e.routeStatus(t, id); st.XDS["grpc"].State != "ACKED" {
					return fmt.Sprintf("route %s answers, status %+v; %s", id, st, e.behind(t, "grpc"))
				}
				return ""
			})
		}},
		{"ip_hash keeps a channel on one backend", func(t *testing.T, e *env, c xdsClient) {
			host := "iphash-" + c.Short() + ".test"
			body := publicRoute("iphash-"+c.Short(), host, grpcTarget(a, 1), grpcTarget(b, 1))
			body["load_balance"] = "ip_hash"
			mustDo(t, g, "POST", "/api/v1/management/routes", body, 201)
			eventually(t, 10*time.Second, func() string {
				if got := c.Call(t, rpcs{Target: host, N: 1, Deadline: time.Second}); got.OK != 1 {
					return got.String() + e.nackSummary(c)
				}
				return ""
			})
			// Each channel picks one backend for all its calls; 16 channels all picking the
			// same one of two would happen once in 32,768 runs with a fair hash.
			used := map[string]int{}
			var per []string
			for i := 0; i < 16; i++ {
				got := c.Call(t, rpcs{Target: host, N: 10, Fresh: true})
				if got.OK != 10 {
					t.Fatalf("channel %d: %s", i, got)
				}
				if len(got.Backends) != 1 {
					t.Fatalf("channel %d spread its calls over %v: ip_hash keeps one channel on one backend", i, got.Backends)
				}
				for be := range got.Backends {
					used[be]++
					per = append(per, be)
				}
			}
			t.Logf("%s: backend per channel %v", c.Name(), per)
			if len(used) < 2 {
				keys := make([]string, 0, len(used))
				for k := range used {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				t.Fatalf("16 channels all used %v: different channels should spread", keys)
			}
		}},
	})
}
