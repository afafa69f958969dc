package envoy_test

import (
	"regexp"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// call is one RPC as a route matcher sees it: its method path and its metadata.
type call struct {
	path string
	md   map[string]string
}

// stringMatches applies a header's string_match (exact, prefix or safe_regex) to a value,
// the regex anchored as given (Envoy and grpc-go: "^(?:R)$", grpc-js: "^R$").
func stringMatches(t *testing.T, h *routev3.HeaderMatcher, v string, anchor func(string) string) bool {
	sm := h.GetStringMatch()
	switch {
	case sm.GetSafeRegex() != nil:
		return regexp.MustCompile(anchor(sm.GetSafeRegex().GetRegex())).MatchString(v)
	case sm.GetPrefix() != "":
		return strings.HasPrefix(v, sm.GetPrefix())
	}
	return v == sm.GetExact()
}

// pathMatches applies a route's path specifier (prefix, path or safe_regex) to a path.
func pathMatches(m *routev3.RouteMatch, path string, anchor func(string) string) bool {
	switch {
	case m.GetSafeRegex() != nil:
		return regexp.MustCompile(anchor(m.GetSafeRegex().GetRegex())).MatchString(path)
	case m.GetPath() != "":
		return path == m.GetPath()
	}
	return strings.HasPrefix(path, m.GetPrefix())
}

func envoyAnchor(r string) string  { return "^(?:" + r + ")$" }
func grpcJSAnchor(r string) string { return "^" + r + "$" }

// matchesLikeEnvoy is a route match as Envoy (source/common/http/header_utility.cc
// matchHeaders: a missing header matches only an inverted present_match or a present_match
// false) and grpc-go (internal/xds/matcher: a missing header never matches a value matcher;
// CompileSafeRegex anchors "^(?:R)$") read it.
func matchesLikeEnvoy(t *testing.T, m *routev3.RouteMatch, c call) bool {
	if !pathMatches(m, c.path, envoyAnchor) {
		return false
	}
	for _, h := range m.GetHeaders() {
		v, ok := c.md[h.GetName()]
		var match bool
		switch {
		case !ok && h.GetStringMatch() != nil:
			match = false
		case !ok:
			match = h.GetInvertMatch() == h.GetPresentMatch()
		case h.GetStringMatch() != nil:
			match = stringMatches(t, h, v, envoyAnchor) != h.GetInvertMatch()
		default:
			match = h.GetPresentMatch() != h.GetInvertMatch()
		}
		if !match {
			return false
		}
	}
	return true
}

// matchesLikeGRPCJS is a route match as @grpc/grpc-js-xds 1.14 reads it (matcher.js:
// PathSafeRegexValueMatcher and SafeRegexValueMatcher compile "^R$"; HeaderMatcher answers
// false for a missing header and then applies invert_match; PresentValueMatcher is "present"
// whatever present_match says).
func matchesLikeGRPCJS(t *testing.T, m *routev3.RouteMatch, c call) bool {
	if !pathMatches(m, c.path, grpcJSAnchor) {
		return false
	}
	for _, h := range m.GetHeaders() {
		v, ok := c.md[h.GetName()]
		result := false
		if ok {
			result = h.GetStringMatch() == nil || stringMatches(t, h, v, grpcJSAnchor)
		}
		if result == h.GetInvertMatch() {
			return false
		}
	}
	return true
}

// A route served to proxyless clients matches the calls it matches through Envoy, in
// grpc-js too: a regex with an alternation is not read as "^first|second$" (a prefix or a
// suffix match), and an inverted value condition does not match a call without the header.
func TestGRPCFlavorMatchesAsEnvoyInGRPCJS(t *testing.T) {
	cfg := translateYAML(t, `
  - id: alternation
    hosts: [m.test]
    require_auth: false
    conditions: [{path_regex: "/a\\.S/Get|/a\\.S/List"}]
    targets: [{host: 10.0.35.1, port: 8080, protocol: grpc}]
  - id: header-alternation
    hosts: [m.test]
    require_auth: false
    conditions: [{path_prefix: "/b.S/", headers: [{name: x-stage, regex: "alpha|beta"}]}]
    targets: [{host: 10.0.35.2, port: 8080, protocol: grpc}]
  - id: not-canary
    hosts: [m.test]
    require_auth: false
    conditions: [{path_prefix: "/c.S/", headers: [{name: x-canary, exact: "yes", invert: true}]}]
    targets: [{host: 10.0.35.3, port: 8080, protocol: grpc}]
  - id: not-internal-regex
    hosts: [m.test]
    require_auth: false
    conditions: [{path_prefix: "/d.S/", headers: [{name: x-zone, regex: "int-.*", invert: true}, {name: x-tier, prefix: "gold", invert: true}]}]
    targets: [{host: 10.0.35.4, port: 8080, protocol: grpc}]
`)
	calls := []call{
		{path: "/a.S/Get"}, {path: "/a.S/List"}, {path: "/a.S/GetSecret"}, {path: "/x/a.S/List"}, {path: "/a.S/Delete"},
		{path: "/b.S/M", md: map[string]string{"x-stage": "alpha"}}, {path: "/b.S/M", md: map[string]string{"x-stage": "alphabet"}},
		{path: "/b.S/M", md: map[string]string{"x-stage": "prebeta"}}, {path: "/b.S/M"},
		{path: "/c.S/M"}, {path: "/c.S/M", md: map[string]string{"x-canary": "yes"}}, {path: "/c.S/M", md: map[string]string{"x-canary": "no"}},
		{path: "/d.S/M"}, {path: "/d.S/M", md: map[string]string{"x-zone": "ext-1", "x-tier": "silver"}},
		{path: "/d.S/M", md: map[string]string{"x-zone": "int-1", "x-tier": "silver"}}, {path: "/d.S/M", md: map[string]string{"x-zone": "ext-1"}},
	}
	edge, grpc := buildBoth(t, cfg)
	for _, id := range []string{"alternation", "header-alternation", "not-canary", "not-internal-regex"} {
		if why, omitted := grpc.Omitted[id]; omitted {
			t.Fatalf("route %s left out: %s", id, why)
		}
		envoyMatch, grpcMatch := builtRoute(edge, id).GetMatch(), builtRoute(grpc, id).GetMatch()
		for _, c := range calls {
			want := matchesLikeEnvoy(t, envoyMatch, c)
			if got := matchesLikeEnvoy(t, grpcMatch, c); got != want {
				t.Errorf("route %s, call %v: grpc-go matches %v, Envoy %v", id, c, got, want)
			}
			if got := matchesLikeGRPCJS(t, grpcMatch, c); got != want {
				t.Errorf("route %s, call %v: grpc-js matches %v, Envoy %v", id, c, got, want)
			}
		}
	}
}

// A condition on a header the transports reserve is one proxyless clients would match
// differently than Envoy: grpc-go drops a call's own grpc-status and grpc-message metadata
// from the wire (Envoy never sees them, the client's matcher does), and a retried attempt
// carries grpc-previous-rpc-attempts to Envoy but not to the client's route pick.
func TestGRPCFlavorOmitsConditionsOnReservedGRPCHeaders(t *testing.T) {
	cfg := translateYAML(t, `
  - id: status
    hosts: [r.test]
    require_auth: false
    conditions: [{path_prefix: "/a.S/", headers: [{name: grpc-status, present: true}]}]
    targets: [{host: 10.0.36.1, port: 8080}]
  - id: message
    hosts: [r.test]
    require_auth: false
    conditions: [{path_prefix: "/b.S/", headers: [{name: Grpc-Message, exact: x}]}]
    targets: [{host: 10.0.36.2, port: 8080}]
  - id: attempts
    hosts: [r.test]
    require_auth: false
    conditions: [{path_prefix: "/c.S/", headers: [{name: grpc-previous-rpc-attempts, present: false}]}]
    targets: [{host: 10.0.36.3, port: 8080}]
`)
	_, grpc := buildBoth(t, cfg)
	for id, name := range map[string]string{"status": "grpc-status", "message": "grpc-message", "attempts": "grpc-previous-rpc-attempts"} {
		if got := grpc.Omitted[id]; !strings.HasPrefix(got, `conditions[0].headers "`+name+`": `) {
			t.Errorf("route %s: omission %q", id, got)
		}
	}
}
