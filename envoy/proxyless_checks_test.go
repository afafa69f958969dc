package envoy_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// translateInput translates a whole golden model (routes, ip-rules, policies, rate limits,
// settings) given as YAML.
func translateInput(t *testing.T, src string) *ir.Config {
	t.Helper()
	var in golden.Input
	if err := yaml.UnmarshalStrict([]byte(src), &in); err != nil {
		t.Fatal(err)
	}
	snap := &model.Snapshot{Revision: 1, Routes: in.Routes, RateLimits: in.RateLimits, IPRules: in.IPRules,
		Policies: in.Policies, Settings: in.Settings}
	if snap.Settings == nil {
		snap.Settings = &model.Settings{ID: model.SettingsID}
	}
	cfg, err := translate.Translate(snap, translate.Options{ListenerAddress: "0.0.0.0:10000", ControlPlane: "controlplane:18000",
		Now: func() time.Time { return golden.Now }})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RouteErrors) > 0 {
		t.Fatalf("translation refuses already: %v", cfg.RouteErrors)
	}
	return cfg
}

const publicRoutes = `
routes:
  - id: open
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/open/*"}]
    targets: [{host: 10.0.31.1, port: 8080, protocol: grpc}]
  - id: also-open
    hosts: [px.test, other.test]
    require_auth: false
    conditions: [{path_pattern: "/also/*"}]
    targets: [{host: 10.0.31.2, port: 8080}]
`

// An edge-wide protection (a global IP rule such as a WAF ban, a global policy, a global WAF,
// a global rate limit) is enforced by Envoy and does not take public routes away from
// proxyless clients: one ban must not empty every proxyless client's routing table.
func TestGRPCFlavorServesPublicRoutesUnderEdgeWideProtections(t *testing.T) {
	for name, global := range map[string]string{
		"waf ban": `
ip_rules:
  - {id: waf-ban-203.0.113.7, action: deny, cidrs: [203.0.113.7/32], source: waf, expires_at: "2036-01-01T00:00:00Z"}
`,
		"global ip rule": `
ip_rules:
  - {id: blocklist, action: deny, cidrs: [198.51.100.0/24]}
`,
		"global policy": `
policies:
  - id: everywhere
    rules: [{expression: 'request.path.startsWith("/x")', action: deny}]
`,
		"global waf": `
settings:
  id: global
  waf: {paranoia_level: 2, geoblocking_enabled: true, blocked_countries: [XX]}
`,
		"global rate limit": `
rate_limits:
  - {id: global-route, requests_per_unit: 10000, time_unit: 1m}
settings:
  id: global
  rate_limit: {policies: [global-route], limits: [{requests_per_unit: 5, time_unit: 1s, by: ip}]}
`,
	} {
		t.Run(name, func(t *testing.T) {
			cfg := translateInput(t, publicRoutes+global)
			for _, vh := range cfg.VirtualHosts {
				for _, r := range vh.Routes {
					if !r.Authz.Enabled && len(r.RateLimits) == 0 {
						t.Fatalf("route %s: the protection must be in force at Envoy for every route", r.Name)
					}
				}
			}
			edge, grpc := buildBoth(t, cfg)
			if len(grpc.Omitted) > 0 || len(grpc.RouteErrors) > 0 || len(edge.RouteErrors) > 0 {
				t.Fatalf("omitted %v, errors %v %v", grpc.Omitted, grpc.RouteErrors, edge.RouteErrors)
			}
			for _, id := range []string{"open", "also-open"} {
				if builtRoute(grpc, id) == nil || !hasClusterOf(grpc, id) {
					t.Errorf("route %s: not served to proxyless clients", id)
				}
			}
		})
	}
}

// The checks a route itself asks for are Envoy's alone: the route is left out of the gRPC
// flavor, and the reason names each field that asks for one, whatever edge-wide
// protections are in force besides.
func TestGRPCFlavorOmitsRoutesWithTheirOwnChecks(t *testing.T) {
	cfg := translateInput(t, publicRoutes+`
  - id: authenticated
    hosts: [px.test]
    conditions: [{path_pattern: "/auth/*"}]
    targets: [{host: 10.0.31.3, port: 8080}]
  - id: tenant
    hosts: [px.test]
    require_auth: false
    tenant: acme
    conditions: [{path_pattern: "/tenant/*"}]
    targets: [{host: 10.0.31.4, port: 8080}]
  - id: named-by-rule
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/rule/*"}]
    targets: [{host: 10.0.31.5, port: 8080}]
  - id: own-ip-rules
    hosts: [px.test]
    require_auth: false
    auth: {ip_rules: [office]}
    conditions: [{path_pattern: "/own-ip/*"}]
    targets: [{host: 10.0.31.6, port: 8080}]
  - id: named-by-policy
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/pol/*"}]
    targets: [{host: 10.0.31.7, port: 8080}]
  - id: own-policies
    hosts: [px.test]
    require_auth: false
    auth: {policies: [no-delete]}
    conditions: [{path_pattern: "/own-pol/*"}]
    targets: [{host: 10.0.31.8, port: 8080}]
  - id: tenant-header
    hosts: [px.test]
    require_auth: false
    auth: {tenant_header: X-Tenant}
    conditions: [{path_pattern: "/th/*"}]
    targets: [{host: 10.0.31.9, port: 8080}]
  - id: own-waf
    hosts: [px.test]
    require_auth: false
    waf: {enabled: true}
    conditions: [{path_pattern: "/waf/*"}]
    targets: [{host: 10.0.31.10, port: 8080}]
  - id: own-geo
    hosts: [px.test]
    require_auth: false
    waf: {enabled: false, geoblocking_enabled: true, blocked_countries: [XX]}
    conditions: [{path_pattern: "/geo/*"}]
    targets: [{host: 10.0.31.11, port: 8080}]
  - id: own-limit
    hosts: [px.test]
    require_auth: false
    rate_limit: {policies: [per-ip]}
    conditions: [{path_pattern: "/limit/*"}]
    targets: [{host: 10.0.31.12, port: 8080}]
  - id: inline-limit
    hosts: [px.test]
    require_auth: false
    rate_limit: {limits: [{requests_per_unit: 5, time_unit: 1s, by: header, header: x-client}]}
    conditions: [{path_pattern: "/inline/*"}]
    targets: [{host: 10.0.31.13, port: 8080}]
  - id: waf-off
    hosts: [px.test]
    require_auth: false
    waf: {enabled: false}
    conditions: [{path_pattern: "/waf-off/*"}]
    targets: [{host: 10.0.31.14, port: 8080}]
  - id: many
    hosts: [px.test]
    tenant: acme
    auth: {ip_rules: [office], tenant_header: x-tenant}
    waf: {enabled: true}
    rate_limit: {policies: [per-ip]}
    conditions: [{path_pattern: "/many/*"}]
    targets: [{host: 10.0.31.15, port: 8080}]
ip_rules:
  - {id: office, action: allow, cidrs: [192.0.2.0/24], routes: [named-by-rule, own-ip-rules]}
  - {id: waf-ban-203.0.113.7, action: deny, cidrs: [203.0.113.7/32], source: waf, expires_at: "2036-01-01T00:00:00Z"}
policies:
  - id: no-delete
    routes: [named-by-policy]
    rules: [{expression: 'request.method == "DELETE"', action: deny}]
  - id: everywhere
    rules: [{expression: 'request.path.startsWith("/x")', action: deny}]
rate_limits:
  - {id: per-ip, requests_per_unit: 100, time_unit: 1m, by: ip}
  - {id: global-route, requests_per_unit: 10000, time_unit: 1m}
settings:
  id: global
  waf: {paranoia_level: 2}
  rate_limit: {policies: [global-route]}
`)
	want := map[string][]string{
		"authenticated":   {"require_auth"},
		"tenant":          {"tenant"},
		"named-by-rule":   {"ip-rules/office"},
		"own-ip-rules":    {"auth.ip_rules", "ip-rules/office"},
		"named-by-policy": {"policies/no-delete"},
		"own-policies":    {"auth.policies"},
		"tenant-header":   {"auth.tenant_header"},
		"own-waf":         {"waf"},
		"own-geo":         {"waf.geoblocking_enabled"},
		"own-limit":       {"rate_limit.policies"},
		"inline-limit":    {"rate_limit.limits"},
		"many":            {"auth.ip_rules", "auth.tenant_header", "rate_limit.policies", "require_auth", "tenant", "waf"},
	}
	edge, grpc := buildBoth(t, cfg)
	if len(edge.Omitted) > 0 || len(edge.RouteErrors) > 0 || len(grpc.RouteErrors) > 0 {
		t.Fatalf("%v %v %v", edge.Omitted, edge.RouteErrors, grpc.RouteErrors)
	}
	for id, fields := range want {
		got, omitted := grpc.Omitted[id]
		if !omitted {
			t.Errorf("route %s: served to proxyless clients", id)
			continue
		}
		head, _, _ := strings.Cut(got, ": ")
		if named := strings.Split(head, ", "); !slices.Equal(named, fields) {
			t.Errorf("route %s: omission %q names %q, want %q", id, got, named, fields)
		}
		if builtRoute(edge, id) == nil || builtRoute(grpc, id) != nil || hasClusterOf(grpc, id) {
			t.Errorf("route %s: Envoy serves it, the gRPC flavor does not", id)
		}
	}
	for _, id := range []string{"open", "also-open", "waf-off"} {
		if why, omitted := grpc.Omitted[id]; omitted || builtRoute(grpc, id) == nil {
			t.Errorf("route %s: left out (%q)", id, why)
		}
	}
	if len(grpc.Omitted) != len(want) {
		t.Fatalf("omitted %v", grpc.Omitted)
	}
}
