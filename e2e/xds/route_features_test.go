package xds_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

// routeFeature turns one route feature on: a route on its own host, built from a plain
// public route to backend m1.
type routeFeature struct {
	name string
	// fields are the route fields it sets, as "field" or "conditions.field" / "targets.field".
	fields []string
	route  func(id string, r map[string]any, m1, m2 *xdstest.Backend)
	// before creates what the route names; after creates what names the route.
	before, after func(t *testing.T, g *testutil.Gateway, id string)
	md            map[string]string // call metadata the route needs to match
	backends      []string          // who may answer (default m1 and m2)
	// omit, when set, is how the reason the gRPC flavor leaves the route out starts (the
	// field it names, as the README's xDS table says); unset, the route must be served.
	// Pinned here so that a feature wrongly left out (or wrongly served) fails.
	omit string
	// wantErr, when set, is the gRPC code every call of a served route must end with (an
	// injected abort) instead of an answer.
	wantErr string
}

// featureCAPEM is a self-signed CA certificate (P-256, valid until 2126) for tls_ca_pem.
const featureCAPEM = `-----BEGIN CERTIFICATE-----
MIIBkTCCATegAwIBAgIUDL1LlscNBLNdV5wrFJaYvAeyZqwwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSZ29sZGVuIHVwc3RyZWFtIENBMCAXDTI2MTIwNzIyMjAwMVoY
DzIxMjYxMTEzMjIyMDAxWjAdMRswGQYDVQQDDBJnb2xkZW4gdXBzdHJlYW0gQ0Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQuu0w7yoDtbMS8bCrUuaGX5HyRXUlf
+jsNGRZFseKHhvrxun+XesqTRJ1+KnVLKzdeRrqH0NmfxLQC09owJ+1zo1MwUTAd
BgNVHQ4EFgQURY8MJrmOh8k9YJT9dRaVLFi4DMEwHwYDVR0jBBgwFoAURY8MJrmO
h8k9YJT9dRaVLFi4DMEwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBF
AiEAs1G454ZvJLsvaCJ19NPbhJ9P+bPCMgPZCP/OXbhlytgCIEnp6Tzjk6eUFEPL
meloUh84l5hjjv2pnSvlS+BAPRhF
-----END CERTIFICATE-----
`

func conditions(c ...map[string]any) []any {
	out := make([]any, len(c))
	for i := range c {
		out[i] = c[i]
	}
	return out
}

func withTarget(b *xdstest.Backend, extra map[string]any) map[string]any {
	t := grpcTarget(b, 1)
	for k, v := range extra {
		t[k] = v
	}
	return t
}

func twoTargets(lb string) func(string, map[string]any, *xdstest.Backend, *xdstest.Backend) {
	return func(_ string, r map[string]any, m1, m2 *xdstest.Backend) {
		r["load_balance"] = lb
		r["targets"] = []any{grpcTarget(m1, 1), grpcTarget(m2, 1)}
	}
}

func create(collection string, body map[string]any) func(*testing.T, *testutil.Gateway, string) {
	return func(t *testing.T, g *testutil.Gateway, id string) {
		t.Helper()
		b := map[string]any{}
		for k, v := range body {
			b[k] = v
		}
		b["id"] = collection + "-" + id
		if _, ok := b["routes"]; ok { // nil in the table: the route being built
			b["routes"] = []string{id}
		}
		mustDo(t, g, "POST", "/api/v1/management/"+collection, b, 201)
	}
}

// routeFeatures is every route feature of the README, one at a time.
var routeFeatures = []routeFeature{
	{name: "name, metadata and two hosts", fields: []string{"name", "metadata", "hosts"}, route: func(id string, r map[string]any, _, _ *xdstest.Backend) {
		r["name"] = "Feature " + id
		r["metadata"] = map[string]string{"team": "edge"}
		r["hosts"] = append(r["hosts"].([]string), id+".other.test")
	}},
	{name: "path_pattern exact", fields: []string{"conditions.path_pattern"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/grpc.health.v1.Health/Check"})
	}},
	{name: "path_pattern template", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/grpc.health.v1.Health/{method}"})
	}},
	{name: "path_pattern rest of path", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/grpc.health.v1.Health/{rest=**}"})
	}},
	{name: "path_prefix", fields: []string{"conditions.path_prefix"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_prefix": "/grpc.health.v1."})
	}},
	{name: "path_regex", fields: []string{"conditions.path_regex"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_regex": `/grpc\.health\.v1\.Health/.*`})
	}},
	{name: "two conditions", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/other.Service/*"}, map[string]any{"path_pattern": "/grpc.health.v1.Health/*"})
	}},
	{name: "header exact", fields: []string{"conditions.headers"}, md: map[string]string{"x-tier": "gold"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/*", "headers": []any{map[string]any{"name": "x-tier", "exact": "gold"}}})
	}},
	{name: "header prefix and regex", md: map[string]string{"x-tier": "gold", "x-region": "eu-west"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/*", "headers": []any{
			map[string]any{"name": "x-tier", "prefix": "go"}, map[string]any{"name": "x-region", "regex": "eu-[a-z]+"}}})
	}},
	{name: "header present", md: map[string]string{"x-debug": "1"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/*", "headers": []any{map[string]any{"name": "x-debug", "present": true}}})
	}},
	{name: "header inverted", md: map[string]string{"x-block": "0"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/*", "headers": []any{map[string]any{"name": "x-block", "exact": "1", "invert": true}}})
	}},
	{name: "header on a binary header", omit: "conditions[0].headers", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/*", "headers": []any{map[string]any{"name": "x-trace-bin", "present": true}}})
	}},
	{name: "method", fields: []string{"conditions.method"}, omit: "conditions[0].method:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/*", "method": "POST"})
	}},
	{name: "methods", fields: []string{"conditions.methods"}, omit: "conditions[0].methods:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/*", "methods": []string{"GET", "POST"}})
	}},
	{name: "query", fields: []string{"conditions.query"}, omit: "conditions[0].query", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/*", "query": []any{
			map[string]any{"name": "debug", "present": true}, map[string]any{"name": "v", "exact": "2"}}})
	}},
	{name: "weights", fields: []string{"targets.weight"}, route: func(_ string, r map[string]any, m1, m2 *xdstest.Backend) {
		r["load_balance"] = "weighted"
		r["targets"] = []any{grpcTarget(m1, 3), grpcTarget(m2, 1)}
	}},
	{name: "load_balance round_robin", fields: []string{"load_balance"}, route: twoTargets("round_robin")},
	{name: "load_balance least_connections", route: twoTargets("least_connections")},
	{name: "load_balance ip_hash", route: twoTargets("ip_hash")},
	{name: "load_balance random", route: twoTargets("random")},
	{name: "target taken out (healthy false)", fields: []string{"targets.healthy"}, backends: []string{"m1"},
		route: func(_ string, r map[string]any, m1, m2 *xdstest.Backend) {
			r["targets"] = []any{grpcTarget(m1, 1), withTarget(m2, map[string]any{"healthy": false})}
		}},
	{name: "registered service target", fields: []string{"targets.service"},
		before: func(t *testing.T, g *testutil.Gateway, id string) {
			for i, be := range featureBackends {
				mustDo(t, g, "POST", "/api/v1/management/services", map[string]any{
					"id": fmt.Sprintf("svc-%s-%d", id, i), "name": "svc-" + id, "host": be.Host, "port": be.Port, "protocol": "grpc"}, 201)
			}
		},
		route: func(id string, r map[string]any, _, _ *xdstest.Backend) {
			r["targets"] = []any{map[string]any{"service": "svc-" + id}}
		}},
	{name: "target health_path", fields: []string{"targets.health_path"}, route: func(_ string, r map[string]any, m1, _ *xdstest.Backend) {
		r["targets"] = []any{withTarget(m1, map[string]any{"health_path": "/health"})}
	}},
	{name: "target tls", fields: []string{"targets.tls"}, omit: "targets[0].tls:",
		route: func(_ string, r map[string]any, m1, _ *xdstest.Backend) {
			r["targets"] = []any{withTarget(m1, map[string]any{"tls": true})}
		}},
	{name: "target tls_ca_pem", fields: []string{"targets.tls_ca_pem"}, omit: "targets[0].tls:",
		before: func(t *testing.T, g *testutil.Gateway, id string) {
			// A key where the CA belongs is a 400 naming the field, and nothing is stored.
			bad := publicRoute(id, id+".test", map[string]any{"host": "127.0.0.1", "port": 443, "tls": true,
				"tls_ca_pem": "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"})
			if raw := mustDo(t, g, "POST", "/api/v1/management/routes", bad, 400); !strings.Contains(string(raw), "targets[0].tls_ca_pem") {
				t.Fatalf("refusal does not name the field: %s", raw)
			}
		},
		route: func(_ string, r map[string]any, m1, _ *xdstest.Backend) {
			r["targets"] = []any{withTarget(m1, map[string]any{"tls": true, "tls_ca_pem": featureCAPEM})}
		}},
	{name: "target tls_sni", fields: []string{"targets.tls_sni"}, omit: "targets[0].tls:",
		route: func(_ string, r map[string]any, m1, _ *xdstest.Backend) {
			r["targets"] = []any{withTarget(m1, map[string]any{"tls": true, "tls_sni": "m1.internal"})}
		}},
	{name: "target tls_verify_san", fields: []string{"targets.tls_verify_san"}, omit: "targets[0].tls:",
		route: func(_ string, r map[string]any, m1, _ *xdstest.Backend) {
			r["targets"] = []any{withTarget(m1, map[string]any{"tls": true, "tls_verify_san": []string{"m1.internal", m1.Host}})}
		}},
	{name: "target tls_insecure_skip_verify", fields: []string{"targets.tls_insecure_skip_verify"}, omit: "targets[0].tls:",
		route: func(_ string, r map[string]any, m1, _ *xdstest.Backend) {
			r["targets"] = []any{withTarget(m1, map[string]any{"tls": true, "tls_insecure_skip_verify": true})}
		},
		after: func(t *testing.T, g *testutil.Gateway, id string) {
			var rt struct {
				Status model.RouteStatus `json:"status"`
			}
			if code, raw := g.Do("GET", "/api/v1/management/routes/"+id, nil, &rt); code != 200 {
				t.Fatalf("GET route %s: %d %s", id, code, raw)
			}
			if w := rt.Status.Warnings; len(w) != 1 || !strings.HasPrefix(w[0], "targets[0].tls_insecure_skip_verify: the upstream certificate is not verified") {
				t.Fatalf("status warnings %q, want the skip-verify warning", w)
			}
		}},
	{name: "target protocol http2", fields: []string{"targets.protocol"}, route: func(_ string, r map[string]any, m1, _ *xdstest.Backend) {
		r["targets"] = []any{withTarget(m1, map[string]any{"protocol": "http2"})}
	}},
	{name: "timeout", fields: []string{"timeout"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["timeout"] = "5s"
	}},
	{name: "retries with backoff", fields: []string{"retries", "retry_policy"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["retries"] = 2
		r["retry_policy"] = map[string]any{"retry_on": []string{"5xx", "reset", "connect-failure"}, "per_try_timeout": "2s",
			"base_interval": "25ms", "max_interval": "250ms"}
	}},
	{name: "retries on gRPC statuses", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["retries"] = 3
		r["retry_policy"] = map[string]any{"retry_on": []string{"unavailable", "cancelled", "deadline-exceeded", "resource-exhausted", "internal"}}
	}},
	{name: "retries on status codes", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["retries"] = 1
		r["retry_policy"] = map[string]any{"retry_on": []string{"retriable-status-codes"}, "retriable_status_codes": []int{503, 504}}
	}},
	{name: "require_auth with auth", fields: []string{"require_auth", "auth"}, omit: "require_auth:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["require_auth"] = true
		r["auth"] = map[string]any{"methods": []string{"api_key"}, "scopes": []string{"users:read"}, "roles": []string{"admin"}}
	}},
	{name: "auth dry_run", omit: "require_auth:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["require_auth"] = true
		r["auth"] = map[string]any{"methods": []string{"api_key"}, "dry_run": true}
	}},
	{name: "auth ip_rules and policies", omit: "auth.ip_rules, auth.policies, ip-rules/", before: func(t *testing.T, g *testutil.Gateway, id string) {
		// Each names the route too: an object naming no route applies to every route.
		create("ip-rules", map[string]any{"action": "allow", "cidrs": []string{"127.0.0.0/8"}, "routes": nil})(t, g, id)
		create("policies", map[string]any{"routes": nil, "rules": []any{map[string]any{"expression": `request.method == "DELETE"`, "action": "deny", "status": 403}}})(t, g, id)
	}, route: func(id string, r map[string]any, _, _ *xdstest.Backend) {
		r["auth"] = map[string]any{"ip_rules": []string{"ip-rules-" + id}, "policies": []string{"policies-" + id}}
	}},
	{name: "ip rule naming the route", omit: "ip-rules/", after: create("ip-rules", map[string]any{"action": "allow", "cidrs": []string{"127.0.0.0/8"}, "routes": nil})},
	{name: "policy naming the route", omit: "policies/", after: create("policies", map[string]any{"routes": nil,
		"rules": []any{map[string]any{"expression": `request.method == "DELETE"`, "action": "deny", "status": 403}}})},
	{name: "rewrite prefix", fields: []string{"rewrite"}, omit: "rewrite.prefix:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["conditions"] = conditions(map[string]any{"path_pattern": "/grpc.health.v1.Health/*"})
		r["rewrite"] = map[string]any{"prefix": "/grpc.health.v1.Health/"}
	}},
	{name: "rewrite regex", omit: "rewrite.regex:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["rewrite"] = map[string]any{"regex": `^/grpc\.health\.v1\.Health/(.*)$`, "substitution": `/grpc.health.v1.Health/\1`}
	}},
	{name: "rewrite host", omit: "rewrite.host:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["rewrite"] = map[string]any{"host": "backend.internal"}
	}},
	{name: "request headers", fields: []string{"request_headers"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["request_headers"] = map[string]any{"add": map[string]string{"x-gateway": "agw"}, "set": map[string]string{"x-env": "test"}, "remove": []string{"x-internal"}}
	}},
	{name: "response headers", fields: []string{"response_headers"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["response_headers"] = map[string]any{"add": map[string]string{"x-served-by": "agw"}, "set": map[string]string{"cache-control": "no-store"}, "remove": []string{"x-powered-by"}}
	}},
	{name: "sticky_session", fields: []string{"sticky_session"}, route: func(_ string, r map[string]any, m1, m2 *xdstest.Backend) {
		r["targets"] = []any{grpcTarget(m1, 1), grpcTarget(m2, 1)}
		r["sticky_session"] = map[string]any{"cookie": "agw-session", "ttl": "1h", "path": "/"}
	}},
	{name: "tenant", fields: []string{"tenant"}, omit: "tenant:", before: func(t *testing.T, g *testutil.Gateway, id string) {
		mustDo(t, g, "POST", "/api/v1/management/tenants", map[string]any{"id": "tenant-" + id}, 201)
	}, route: func(id string, r map[string]any, _, _ *xdstest.Backend) {
		r["tenant"] = "tenant-" + id
	}},
	{name: "waf", fields: []string{"waf"}, omit: "waf:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["waf"] = map[string]any{"enabled": true, "mode": "block", "paranoia_level": 1}
	}},
	{name: "rate limit policy", fields: []string{"rate_limit"}, omit: "rate_limit.policies:", before: create("rate-limits", map[string]any{
		"strategy": "token_bucket", "requests_per_unit": 1000, "time_unit": "1m", "burst_capacity": 1000, "by": "ip"}),
		route: func(id string, r map[string]any, _, _ *xdstest.Backend) {
			r["rate_limit"] = map[string]any{"policies": []string{"rate-limits-" + id}}
		}},
	{name: "rate limit inline", omit: "rate_limit.limits:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["rate_limit"] = map[string]any{"limits": []any{map[string]any{"requests_per_unit": 1000, "time_unit": "1m", "by": "route"}}, "fail_mode": "open"}
	}},
	{name: "health_check", fields: []string{"health_check"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["health_check"] = map[string]any{"path": "/health", "interval": "5s", "timeout": "1s", "healthy_threshold": 2,
			"unhealthy_threshold": 3, "expected_statuses": []int{200}}
	}},
	{name: "circuit_breaker", fields: []string{"circuit_breaker"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["circuit_breaker"] = map[string]any{"max_connections": 1024, "max_pending_requests": 256, "max_requests": 1024, "max_retries": 3}
	}},
	{name: "outlier_detection", fields: []string{"outlier_detection"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["outlier_detection"] = map[string]any{"consecutive_5xx": 5, "interval": "10s", "base_ejection_time": "30s", "max_ejection_percent": 50}
	}},
	{name: "redirect", fields: []string{"redirect"}, omit: "redirect:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		delete(r, "targets")
		r["redirect"] = map[string]any{"https": true, "host": "other.test", "prefix": "/moved/", "status": 308}
	}},
	{name: "direct_response", fields: []string{"direct_response"}, omit: "direct_response:", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		delete(r, "targets")
		r["direct_response"] = map[string]any{"status": 503, "body": "down\n", "content_type": "text/plain"}
	}},
	// Proxyless clients do not mirror: the gRPC flavor leaves the mirror policy out, and calls
	// reach the route's own target only.
	{name: "mirror target", fields: []string{"mirror"}, backends: []string{"m1"}, route: func(_ string, r map[string]any, _, m2 *xdstest.Backend) {
		r["mirror"] = map[string]any{"target": map[string]any{"host": m2.Host, "port": m2.Port, "protocol": "grpc"}, "percent": 50}
	}},
	{name: "mirror dns target", backends: []string{"m1"}, route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["mirror"] = map[string]any{"target": map[string]any{"host": "shadow.invalid", "port": 9}, "percent": 12.5}
	}},
	// Both clients apply HTTPFault: an HTTP status maps to a gRPC code (503: UNAVAILABLE).
	{name: "fault abort http status", fields: []string{"fault"}, wantErr: "UNAVAILABLE", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["fault"] = map[string]any{"abort": map[string]any{"status": 503, "percent": 100}}
	}},
	{name: "fault abort grpc status", wantErr: "PERMISSION_DENIED", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["fault"] = map[string]any{"abort": map[string]any{"grpc_status": 7}}
	}},
	{name: "fault delay", route: func(_ string, r map[string]any, _, _ *xdstest.Backend) {
		r["fault"] = map[string]any{"delay": map[string]any{"fixed": "20ms", "percent": 100}}
	}},
}

// featureBackends are m1 and m2 while TestProxylessRouteFeatures runs (services name them).
var featureBackends []*xdstest.Backend

// routeFields are the fields of a route, a condition and a target, as "field",
// "conditions.field" and "targets.field".
func routeFields() []string {
	var out []string
	add := func(prefix string, v any) {
		rt := reflect.TypeOf(v)
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if f.Anonymous || name == "" || name == "-" {
				continue
			}
			out = append(out, prefix+name)
		}
	}
	add("", model.Route{})
	add("conditions.", model.Condition{})
	add("targets.", model.Target{})
	return out
}

// The feature table turns on every field a route, a condition or a target has: a field
// added to the model without a row here fails.
func TestRouteFeatureTableCoversTheModel(t *testing.T) {
	inherent := []string{"id", "conditions", "targets", "status", "targets.host", "targets.port"}
	covered := map[string]bool{}
	for _, f := range routeFeatures {
		for _, name := range f.fields {
			covered[name] = true
		}
	}
	all := routeFields()
	for _, name := range all {
		if !covered[name] && !slices.Contains(inherent, name) {
			t.Errorf("no row of routeFeatures turns on %s", name)
		}
	}
	for name := range covered {
		if !slices.Contains(all, name) {
			t.Errorf("routeFeatures names %s, which no route has", name)
		}
	}
}

// TestProxylessRouteFeatures turns every route feature on in turn, and for each: the write
// is accepted and translated, both proxyless clients take what the gRPC flavor serves
// without a single NACK, a route served to them answers and shows ACKED, a route left out
// shows OMITTED with the reason, and /xds/nodes counts exactly the ACKs and NACKs each
// client sent.
func TestProxylessRouteFeatures(t *testing.T) {
	e := newEnv(t, testutil.GatewayOptions{})
	m1, m2 := xdstest.StartBackend(t, "m1"), xdstest.StartBackend(t, "m2")
	featureBackends = []*xdstest.Backend{m1, m2}
	t.Cleanup(func() { featureBackends = nil })
	var table []string
	for i, f := range routeFeatures {
		t.Run(f.name, func(t *testing.T) {
			id := fmt.Sprintf("feat-%02d", i)
			host := id + ".test"
			if f.before != nil {
				f.before(t, e.g, id)
			}
			r := publicRoute(id, host, grpcTarget(m1, 1))
			if f.route != nil {
				f.route(id, r, m1, m2)
			}
			mustDo(t, e.g, "POST", "/api/v1/management/routes", r, 201)
			// Each row's channels end with it: a row's clients follow only its host.
			defer func() {
				for _, c := range e.clients {
					c.Close(t, host)
				}
			}()
			if f.after != nil {
				f.after(t, e.g, id)
			}
			st := e.routeStatus(t, id)
			if st.Translation != "ok" {
				t.Fatalf("route %s: translation %q", id, st.Translation)
			}
			omitted := st.XDS["grpc"].State == "OMITTED"
			switch {
			case f.omit == "" && omitted:
				t.Fatalf("route %s is left out of the gRPC flavor, but the feature is served to proxyless clients: %+v", id, st)
			case f.omit != "" && (!omitted || !strings.HasPrefix(st.XDS["grpc"].Error, f.omit)):
				t.Fatalf("route %s: xds.grpc %+v, want OMITTED with a reason starting %q", id, st.XDS["grpc"], f.omit)
			}
			allowed := f.backends
			if allowed == nil {
				allowed = []string{"m1", "m2"}
			}
			for _, c := range e.clients {
				t.Run(c.Name(), func(t *testing.T) {
					mark := e.markNACKs(c)
					switch {
					case omitted:
						// Nothing else routes this host: no call may answer.
						if got := c.Call(t, rpcs{Target: host, N: 3, Metadata: f.md, Deadline: time.Second}); got.OK != 0 {
							t.Errorf("route left out of the gRPC flavor (%s), yet calls answered: %s", st.XDS["grpc"].Error, got)
						}
					case f.wantErr != "":
						eventually(t, 10*time.Second, func() string {
							got := c.Call(t, rpcs{Target: host, N: 5, Metadata: f.md, Deadline: 2 * time.Second})
							if got.Errors[f.wantErr] == 5 {
								return ""
							}
							return fmt.Sprintf("want 5 calls ending %s (the injected abort): %s", f.wantErr, got) + e.nackSummary(c)
						})
					default:
						eventually(t, 10*time.Second, func() string {
							got := c.Call(t, rpcs{Target: host, N: 5, Metadata: f.md, Deadline: 2 * time.Second})
							for be := range got.Backends {
								if !slices.Contains(allowed, be) {
									t.Fatalf("calls answered by %s, want only %v: %s", be, allowed, got)
								}
							}
							if got.OK == 5 {
								return ""
							}
							return got.String() + e.nackSummary(c)
						})
					}
					e.checkNoNACKsSince(t, c, mark)
					e.checkCountsAgree(t, c)
				})
			}
			if !omitted {
				eventually(t, 10*time.Second, func() string {
					if s := e.routeStatus(t, id); s.XDS["grpc"].State != "ACKED" {
						return fmt.Sprintf("route %s served to both clients, status %+v; %s", id, s, e.behind(t, "grpc"))
					}
					return ""
				})
			}
			table = append(table, fmt.Sprintf("%-44s grpc: %s %s", f.name, e.routeStatus(t, id).XDS["grpc"].State, st.XDS["grpc"].Error))
		})
	}
	t.Logf("route features in the gRPC flavor:\n%s", strings.Join(table, "\n"))
}
