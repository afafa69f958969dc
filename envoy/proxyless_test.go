package envoy_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// buildBoth builds both flavors of cfg.
func buildBoth(t *testing.T, cfg *ir.Config) (edge, grpc *envoy.Resources) {
	t.Helper()
	edge, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	grpc, err = envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	return edge, grpc
}

// builtRoute finds a built route by name in the route configurations of a build.
func builtRoute(res *envoy.Resources, name string) *routev3.Route {
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetName() == name {
					return r
				}
			}
		}
	}
	return nil
}

// hasClusterOf reports whether a build holds a cluster of route id.
func hasClusterOf(res *envoy.Resources, id string) bool {
	for _, c := range res.Clusters {
		if strings.HasPrefix(c.GetName(), "route/"+id+"/") {
			return true
		}
	}
	for _, e := range res.Endpoints {
		if strings.HasPrefix(e.GetClusterName(), "route/"+id+"/") {
			return true
		}
	}
	return false
}

// Every feature whose absence at a proxyless client would change which backend a call
// reaches, or who may make it, leaves the route out of the gRPC flavor, naming the field;
// Envoy serves the same routes, and nothing is an error. What only degrades is served.
func TestGRPCFlavorOmitsWhatProxylessClientsCannotApply(t *testing.T) {
	cfg := translateYAML(t, `
  - id: method
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/m/*", method: POST}]
    targets: [{host: 10.0.30.1, port: 8080, protocol: grpc}]
  - id: methods
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/ms/*", methods: [GET, PUT]}]
    targets: [{host: 10.0.30.2, port: 8080}]
  - id: query
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/q/*", query: [{name: debug, present: true}]}]
    targets: [{host: 10.0.30.3, port: 8080}]
  - id: binary-header
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/b/*", headers: [{name: trace-bin, present: true}]}]
    targets: [{host: 10.0.30.4, port: 8080}]
  - id: user-agent
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/ua/*", headers: [{name: User-Agent, prefix: grpc-go}]}]
    targets: [{host: 10.0.30.5, port: 8080}]
  - id: prefix-rewrite
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/old/*"}]
    rewrite: {prefix: /pkg.Svc/}
    targets: [{host: 10.0.30.6, port: 8080}]
  - id: regex-rewrite
    hosts: [px.test]
    require_auth: false
    conditions: [{path_regex: "/v1/(.*)"}]
    rewrite: {regex: "^/v1/(.*)$", substitution: "/\\1"}
    targets: [{host: 10.0.30.7, port: 8080}]
  - id: host-rewrite
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/h/*"}]
    rewrite: {host: backend.internal}
    targets: [{host: 10.0.30.8, port: 8080}]
  - id: authenticated
    hosts: [px.test]
    conditions: [{path_pattern: "/auth/*"}]
    targets: [{host: 10.0.30.9, port: 8080}]
  - id: waf
    hosts: [px.test]
    require_auth: false
    waf: {enabled: true}
    conditions: [{path_pattern: "/waf/*"}]
    targets: [{host: 10.0.30.10, port: 8080}]
  - id: degraded
    hosts: [px.test]
    require_auth: false
    conditions: [{path_pattern: "/d/*", headers: [{name: x-tenant, exact: acme}, {name: content-type, prefix: application/grpc}]}]
    request_headers: {add: {x-gw: agw}, remove: [x-internal]}
    response_headers: {set: {cache-control: no-store}}
    sticky_session: {cookie: pin}
    health_check: {path: /healthz, interval: 5s}
    retries: 2
    retry_policy: {per_try_timeout: 1s}
    targets: [{host: 10.0.30.11, port: 8080, protocol: grpc}]
`)
	want := map[string]string{
		"method":         "conditions[0].method: proxyless gRPC clients do not put :method in their metadata",
		"methods":        "conditions[0].methods: ",
		"query":          `conditions[0].query "debug": grpc-js ignores query conditions`,
		"binary-header":  `conditions[0].headers "trace-bin": `,
		"user-agent":     `conditions[0].headers "user-agent": `,
		"prefix-rewrite": "rewrite.prefix: ",
		"regex-rewrite":  "rewrite.regex: ",
		"host-rewrite":   "rewrite.host: ",
		"authenticated":  "require_auth",
		"waf":            "waf",
	}
	edge, grpc := buildBoth(t, cfg)
	if len(edge.RouteErrors) > 0 || len(grpc.RouteErrors) > 0 {
		t.Fatalf("omissions are not errors: %v %v", edge.RouteErrors, grpc.RouteErrors)
	}
	if len(edge.Omitted) > 0 {
		t.Fatalf("the Envoy flavor omits nothing: %v", edge.Omitted)
	}
	for id, field := range want {
		if got := grpc.Omitted[id]; !strings.Contains(got, field) {
			t.Errorf("route %s: omission %q, want it to name %q", id, got, field)
		}
		if builtRoute(edge, id) == nil || !hasClusterOf(edge, id) {
			t.Errorf("route %s: Envoy must serve it", id)
		}
		if builtRoute(grpc, id) != nil || hasClusterOf(grpc, id) {
			t.Errorf("route %s: the gRPC flavor holds it or its clusters", id)
		}
	}
	if why, omitted := grpc.Omitted["degraded"]; omitted || builtRoute(grpc, "degraded") == nil || !hasClusterOf(grpc, "degraded") {
		t.Fatalf("what only degrades is served to proxyless clients: omitted %q", why)
	}
	if len(grpc.Omitted) != len(want) {
		t.Fatalf("omitted %v", grpc.Omitted)
	}
}

// A route whose rate limits Envoy enforces is left out of the gRPC flavor; one with none is
// served.
func TestGRPCFlavorOmitsRateLimitedRoutes(t *testing.T) {
	snap, opts := golden.Load(t, "testdata/in/rate_limits.yaml")
	cfg, err := translate.Translate(snap, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, grpc := buildBoth(t, cfg)
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			_, omitted := grpc.Omitted[r.RouteID]
			if limited := len(r.RateLimits) > 0; limited != omitted {
				t.Errorf("route %s: %d rate limits, omitted %v (%q)", r.RouteID, len(r.RateLimits), omitted, grpc.Omitted[r.RouteID])
			}
			if omitted && !strings.HasPrefix(grpc.Omitted[r.RouteID], "rate_limit: ") {
				t.Errorf("route %s: %q", r.RouteID, grpc.Omitted[r.RouteID])
			}
		}
	}
	if len(grpc.Omitted) == 0 || len(grpc.Omitted) == len(cfg.Routes) {
		t.Fatalf("the case must hold routes with and without rate limits: %v", grpc.Omitted)
	}
}

// One method condition among fifty leaves the whole route out, naming that condition; the
// host keeps its API listener with the routes still served, and a host whose every route is
// left out keeps one too, with no route: a client dialing it gets "no matching route" for
// each call (as Envoy answers 404 to a request no route matches), not a listener that does
// not exist.
func TestGRPCFlavorOmitsRouteOfOneMethodConditionAmongFifty(t *testing.T) {
	var b strings.Builder
	b.WriteString(`
  - id: many
    hosts: [many.test]
    require_auth: false
    targets: [{host: 10.0.31.1, port: 8080}]
    conditions:
`)
	for i := range 50 {
		if i == 37 {
			fmt.Fprintf(&b, "      - {path_pattern: \"/c%d/*\", method: delete}\n", i)
			continue
		}
		fmt.Fprintf(&b, "      - {path_pattern: \"/c%d/*\", headers: [{name: x-n, exact: \"%d\"}]}\n", i, i)
	}
	b.WriteString(`
  - id: neighbour
    hosts: [many.test]
    require_auth: false
    conditions: [{path_pattern: "/n/*"}]
    targets: [{host: 10.0.31.2, port: 8080}]
  - id: only
    hosts: [only.test]
    require_auth: false
    conditions: [{path_pattern: "/*", method: GET}]
    targets: [{host: 10.0.31.3, port: 8080}]
`)
	cfg := translateYAML(t, b.String())
	edge, grpc := buildBoth(t, cfg)
	if got := grpc.Omitted["many"]; !strings.HasPrefix(got, "conditions[37].method: ") || strings.Count(got, "conditions[") != 1 {
		t.Fatalf("omission %q", got)
	}
	for i := range 50 {
		name := "many"
		if i > 0 {
			name = fmt.Sprintf("many/%d", i)
		}
		if builtRoute(edge, name) == nil {
			t.Fatalf("Envoy lost condition %d", i)
		}
		if builtRoute(grpc, name) != nil {
			t.Fatalf("gRPC serves condition %d of an omitted route", i)
		}
	}
	if builtRoute(grpc, "neighbour") == nil {
		t.Fatal("the host's other route must stay")
	}
	var only *routev3.RouteConfiguration
	for _, rc := range grpc.Routes {
		if rc.GetName() == envoy.GRPCRouteConfigPrefix+"only.test" {
			only = rc
		}
	}
	listener := false
	for _, l := range grpc.Listeners {
		listener = listener || l.GetName() == "only.test"
	}
	if only == nil || !listener || len(only.GetVirtualHosts()) != 1 || len(only.GetVirtualHosts()[0].GetRoutes()) != 0 {
		t.Fatalf("a host whose routes are all omitted keeps its listener with no route: listener %v, %v", listener, only)
	}
	if !strings.HasPrefix(grpc.Omitted["only"], "conditions[0].method: ") {
		t.Fatalf("omission %q", grpc.Omitted["only"])
	}
}

// The route timeout reaches proxyless clients as max_stream_duration (they ignore timeout);
// Envoy keeps timeout alone: its max_stream_duration would time the whole stream, from its
// start and across upgrades. A timeout beyond Envoy's duration range is refused alike in
// both flavors, and a large one within it is served.
func TestGRPCFlavorTimeoutAsMaxStreamDuration(t *testing.T) {
	cfg := translateYAML(t, `
  - id: timed
    hosts: [t.test]
    require_auth: false
    timeout: 300ms
    conditions: [{path_pattern: "/*"}]
    targets: [{host: 10.0.32.1, port: 8080, protocol: grpc}]
  - id: long
    hosts: [long.test]
    require_auth: false
    timeout: 2000000h
    conditions: [{path_pattern: "/*"}]
    targets: [{host: 10.0.32.2, port: 8080, protocol: grpc}]
  - id: untimed
    hosts: [u.test]
    require_auth: false
    conditions: [{path_pattern: "/*"}]
    targets: [{host: 10.0.32.3, port: 8080, protocol: grpc}]
`)
	edge, grpc := buildBoth(t, cfg)
	for id, want := range map[string]time.Duration{"timed": 300 * time.Millisecond, "long": 2000000 * time.Hour} {
		g, e := builtRoute(grpc, id).GetRoute(), builtRoute(edge, id).GetRoute()
		if got := g.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration(); got != want || g.GetTimeout().AsDuration() != want {
			t.Errorf("%s: gRPC max_stream_duration %v, timeout %v, want %v", id, got, g.GetTimeout().AsDuration(), want)
		}
		if g.GetMaxStreamDuration().GetGrpcTimeoutHeaderMax() != nil {
			t.Errorf("%s: grpc_timeout_header_max is set: both clients would prefer it", id)
		}
		if e.GetMaxStreamDuration() != nil || e.GetTimeout().AsDuration() != want {
			t.Errorf("%s: Envoy max_stream_duration %v, timeout %v", id, e.GetMaxStreamDuration(), e.GetTimeout().AsDuration())
		}
	}
	if builtRoute(grpc, "untimed").GetRoute().GetMaxStreamDuration() != nil {
		t.Error("no timeout, no max_stream_duration: the call's own deadline stands")
	}
	// The largest timeout the API accepts (about 292 years) is past Envoy's range: refused
	// in both flavors with the same reason.
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if r.RouteID == "long" {
				r.Timeout = math.MaxInt64
			}
		}
	}
	edge, grpc = buildBoth(t, cfg)
	if e, g := edge.RouteErrors["long"], grpc.RouteErrors["long"]; !strings.Contains(e, "outside Envoy's range") || e != g {
		t.Fatalf("max timeout: %q / %q", e, g)
	}
}

// Retries: a route with a protocol grpc target retries "unavailable" by default, in both
// flavors; an explicit retry_on is sent as written; the back-off reaches proxyless clients
// in whole milliseconds from 1 ms to 2^31-1 ms (grpc-js NACKs a 0 ms base and wraps longer
// intervals negative), Envoy gets it as configured.
func TestRetryPolicyForProxylessClients(t *testing.T) {
	cfg := translateYAML(t, `
  - id: grpc-default
    hosts: [r.test]
    require_auth: false
    retries: 3
    conditions: [{path_pattern: "/a/*"}]
    targets: [{host: 10.0.33.1, port: 8080, protocol: grpc}]
  - id: http-default
    hosts: [r.test]
    require_auth: false
    retries: 3
    conditions: [{path_pattern: "/b/*"}]
    targets: [{host: 10.0.33.2, port: 8080}]
  - id: explicit
    hosts: [r.test]
    require_auth: false
    retries: 10
    retry_policy: {retry_on: [5xx, reset], base_interval: 1ns, max_interval: 720h}
    conditions: [{path_pattern: "/c/*"}]
    targets: [{host: 10.0.33.3, port: 8080, protocol: grpc}]
  - id: no-retries
    hosts: [r.test]
    require_auth: false
    retries: 0
    retry_policy: {retry_on: [unavailable], base_interval: 10ms}
    conditions: [{path_pattern: "/e/*"}]
    targets: [{host: 10.0.33.5, port: 8080, protocol: grpc}]
  - id: tiny
    hosts: [r.test]
    require_auth: false
    retries: 1
    retry_policy: {base_interval: 1500us, max_interval: 1900us}
    conditions: [{path_pattern: "/d/*"}]
    targets: [{host: 10.0.33.4, port: 8080, protocol: grpc}]
`)
	edge, grpc := buildBoth(t, cfg)
	if len(edge.RouteErrors)+len(grpc.RouteErrors)+len(grpc.Omitted) > 0 {
		t.Fatalf("%v %v %v", edge.RouteErrors, grpc.RouteErrors, grpc.Omitted)
	}
	for _, res := range []*envoy.Resources{edge, grpc} {
		for id, want := range map[string]string{
			"grpc-default": "5xx,reset,connect-failure,unavailable",
			"http-default": "5xx,reset,connect-failure",
			"explicit":     "5xx,reset",
		} {
			if got := builtRoute(res, id).GetRoute().GetRetryPolicy().GetRetryOn(); got != want {
				t.Errorf("%s: retry_on %q, want %q", id, got, want)
			}
		}
		if n := builtRoute(res, "explicit").GetRoute().GetRetryPolicy().GetNumRetries().GetValue(); n != 10 {
			t.Errorf("num_retries %d", n)
		}
		// No retries, no policy: grpc-go and grpc-js refuse num_retries 0.
		if rp := builtRoute(res, "no-retries").GetRoute().GetRetryPolicy(); rp != nil {
			t.Errorf("retries 0: policy %v", rp)
		}
	}
	backOff := func(res *envoy.Resources, id string) (time.Duration, time.Duration) {
		bo := builtRoute(res, id).GetRoute().GetRetryPolicy().GetRetryBackOff()
		return bo.GetBaseInterval().AsDuration(), bo.GetMaxInterval().AsDuration()
	}
	if base, mx := backOff(grpc, "explicit"); base != time.Millisecond || mx != math.MaxInt32*time.Millisecond {
		t.Errorf("gRPC back-off %v..%v", base, mx)
	}
	if base, mx := backOff(edge, "explicit"); base != time.Nanosecond || mx != 720*time.Hour {
		t.Errorf("Envoy back-off %v..%v", base, mx)
	}
	if base, mx := backOff(grpc, "tiny"); base != time.Millisecond || mx != time.Millisecond {
		t.Errorf("gRPC back-off %v..%v", base, mx)
	}
}

// grpc-js takes present_match as "present" whatever its value: an "absent" condition reaches
// the gRPC flavor as an inverted "present", which every client reads alike.
func TestGRPCFlavorAbsentHeaderAsInvertedPresent(t *testing.T) {
	cfg := translateYAML(t, `
  - id: absent
    hosts: [p.test]
    require_auth: false
    conditions: [{path_pattern: "/*", headers: [{name: x-canary, present: false}, {name: x-debug, present: false, invert: true}]}]
    targets: [{host: 10.0.34.1, port: 8080}]
`)
	edge, grpc := buildBoth(t, cfg)
	for _, c := range []struct {
		res             *envoy.Resources
		present, invert [2]bool
	}{
		{edge, [2]bool{false, false}, [2]bool{false, true}},
		{grpc, [2]bool{true, true}, [2]bool{true, false}},
	} {
		hs := builtRoute(c.res, "absent").GetMatch().GetHeaders()
		if len(hs) != 2 {
			t.Fatalf("headers %v", hs)
		}
		for i, h := range hs {
			if h.GetPresentMatch() != c.present[i] || h.GetInvertMatch() != c.invert[i] {
				t.Errorf("%s: present %v invert %v, want %v %v", h.GetName(), h.GetPresentMatch(), h.GetInvertMatch(), c.present[i], c.invert[i])
			}
		}
	}
}

// A cluster proxyless clients cannot take (a service registered by a host name and an IP)
// leaves its route out of the gRPC flavor with the cluster's reason, and the service's own
// name gets no API listener there; Envoy serves both. The route next to it is served.
func TestGRPCFlavorOmitsRouteOfUnservableCluster(t *testing.T) {
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID},
		Services: []*model.Service{
			{ID: "users-1", Name: "users", Host: "10.0.35.1", Port: 8080},
			{ID: "users-2", Name: "users", Host: "users-b.internal", Port: 8080},
			{ID: "orders-1", Name: "orders", Host: "10.0.35.2", Port: 8080},
		},
		Routes: []*model.Route{
			{ID: "to-users", Hosts: []string{"u.test"}, RequireAuth: new(bool), Conditions: []model.Condition{{PathPattern: "/*"}},
				Targets: []model.Target{{Service: "users"}}},
			{ID: "to-orders", Hosts: []string{"o.test"}, RequireAuth: new(bool), Conditions: []model.Condition{{PathPattern: "/*"}},
				Targets: []model.Target{{Service: "orders"}}},
		}}
	cfg, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return golden.Now }})
	if err != nil || len(cfg.RouteErrors) > 0 {
		t.Fatalf("%v %v", err, cfg.RouteErrors)
	}
	edge, grpc := buildBoth(t, cfg)
	if got := grpc.Omitted["to-users"]; !strings.HasPrefix(got, "targets[0]: ") {
		t.Fatalf("omission %q", got)
	}
	if len(grpc.Omitted) != 1 || len(grpc.RouteErrors) > 0 || len(edge.RouteErrors) > 0 {
		t.Fatalf("%v %v %v", grpc.Omitted, grpc.RouteErrors, edge.RouteErrors)
	}
	if builtRoute(edge, "to-users") == nil || builtRoute(grpc, "to-users") != nil || hasClusterOf(grpc, "to-users") {
		t.Fatal("Envoy serves the route, the gRPC flavor neither it nor its cluster")
	}
	if builtRoute(grpc, "to-orders") == nil {
		t.Fatal("the other route is served")
	}
	listeners := map[string]bool{}
	for _, l := range grpc.Listeners {
		listeners[l.GetName()] = true
	}
	if listeners["users"] || !listeners["orders"] || !listeners["u.test"] {
		t.Fatalf("listeners %v: the service whose cluster is left out has none; a route host keeps its own", listeners)
	}
	for _, c := range grpc.Clusters {
		if c.GetName() == translate.ServiceClusterName("users") {
			t.Fatal("the service's cluster is in the gRPC flavor")
		}
	}
}
