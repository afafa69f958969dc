package edge_test

import (
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// pathSpellingModel has routes whose configured paths are spelled in ways Envoy's path
// normalization never leaves in a request path: an escaped slash, an escaped unreserved
// character, lower-case hex, a double slash, a backslash.
const pathSpellingModel = `
routes:
  - id: shared
    require_auth: false
    conditions: [{path_prefix: "/files%2Fshared/"}]
    targets: [{host: 10.0.8.1, port: 8080}]
  - id: home
    require_auth: false
    conditions: [{path_pattern: "/%7Ealice/*"}]
    targets: [{host: 10.0.8.2, port: 8080}]
  - id: docs
    require_auth: false
    conditions: [{path_prefix: "/docs/%2F/v1/"}]
    targets: [{host: 10.0.8.3, port: 8080}]
  - id: cafe
    require_auth: false
    conditions: [{path_pattern: "/caf%c3%a9"}]
    targets: [{host: 10.0.8.4, port: 8080}]
  - id: items
    require_auth: false
    conditions: [{path_pattern: "/api%2Fv1/items/{id}"}]
    targets: [{host: 10.0.8.5, port: 8080}]
  - id: legacy
    require_auth: false
    conditions: [{path_prefix: "/legacy\\cgi/"}]
    targets: [{host: 10.0.8.6, port: 8080}]
`

// TestEdgeRoutePathsMatchNormalizedRequests: Envoy routes the normalized path (escaped
// slashes redirected to their unescaped form, unreserved escapes decoded, other escapes
// upper-cased, backslashes and double slashes made single slashes), so a route configured
// with another spelling of a path must be served in the normalized spelling, or no request
// ever reaches it.
func TestEdgeRoutePathsMatchNormalizedRequests(t *testing.T) {
	e := newEdge(t, pathSpellingModel)
	for _, c := range []struct{ path, route string }{
		{"/files%2Fshared/report.pdf", "shared"},
		{"/files/shared/report.pdf", "shared"},
		{"/~alice/notes", "home"},
		{"/%7Ealice/notes", "home"},
		{"/docs/v1/intro", "docs"},
		{"/docs//v1/intro", "docs"},
		{"/caf%c3%a9", "cafe"},
		{"/caf%C3%A9", "cafe"},
		{"/api/v1/items/42", "items"},
		{"/api%2Fv1/items/42", "items"},
		{"/legacy/cgi/run", "legacy"},
		{"/docs/%2F/v1/x", "docs"},
		{`/legacy\cgi/run`, "legacy"},
	} {
		o := e.do(httpReq{method: "GET", path: c.path})
		if o.status == 307 {
			o = e.do(httpReq{method: "GET", path: o.location})
		}
		if o.status != 200 || o.route != c.route {
			t.Errorf("%s: got %d via route %q, want 200 via %q", c.path, o.status, o.route, c.route)
		}
	}
}

// TestRoutePathWithDotSegmentRefused: a configured path with a dot segment ("." or "..",
// plain or escaped) can never match, since Envoy removes them from every request path; the
// route is refused with a reason rather than served dead.
func TestRoutePathWithDotSegmentRefused(t *testing.T) {
	for _, c := range []model.Condition{
		{PathPrefix: "/a/../b/"},
		{PathPrefix: "/a/./b"},
		{PathPrefix: "/a/%2e%2E/b/"},
		{PathPattern: "/a/../b/*"},
		{PathPattern: "/a/./{id}"},
		{PathPattern: "/a/.."},
	} {
		snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID}, Routes: []*model.Route{{
			ID: "dots", RequireAuth: new(bool), Conditions: []model.Condition{c},
			Targets: []model.Target{{Host: "10.0.8.9", Port: 8080}},
		}}}
		cfg, err := translate.Translate(snap, translate.Options{ListenerAddress: "0.0.0.0:10000", ControlPlane: "controlplane:18000"})
		if err != nil {
			t.Fatal(err)
		}
		if e := cfg.RouteErrors["dots"]; !strings.Contains(e, "dot segment") {
			t.Errorf("%+v: route error %q, want a dot segment refusal", c, e)
		}
	}
}
