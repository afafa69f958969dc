package envoy_test

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/api-gateway/api-gateway/envoy"
)

// builtRoutes builds a flavor and returns its routes by name.
func builtRoutes(t *testing.T, res *envoy.Resources) map[string]*routev3.Route {
	t.Helper()
	out := map[string]*routev3.Route{}
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				out[r.GetName()] = r
			}
		}
	}
	return out
}

func TestRedirectAndDirectResponseRoutes(t *testing.T) {
	cfg := translateYAML(t, `
  - id: https
    require_auth: false
    conditions: [{path_prefix: "/h/"}]
    redirect: {https: true}
  - id: moved
    require_auth: false
    conditions: [{path_pattern: "/m/*"}]
    redirect: {host: "new.example.com", prefix: "/n/", status: 307}
  - id: login
    conditions: [{path_pattern: "/login"}]
    redirect: {path: "/auth", status: 303}
  - id: down
    require_auth: false
    conditions: [{path_pattern: "/down"}]
    direct_response: {status: 503, body: "a\nb", content_type: "text/plain; q=100%"}
`)
	res, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.RouteErrors) > 0 {
		t.Fatalf("route errors: %v", res.RouteErrors)
	}
	rs := builtRoutes(t, res)

	h := rs["https"].GetRedirect()
	if h == nil || !h.GetHttpsRedirect() || h.GetResponseCode() != routev3.RedirectAction_MOVED_PERMANENTLY || h.GetHostRedirect() != "" || h.GetPathRewriteSpecifier() != nil {
		t.Errorf("https redirect: %v", rs["https"])
	}
	m := rs["moved"].GetRedirect()
	if m == nil || m.GetHttpsRedirect() || m.GetHostRedirect() != "new.example.com" || m.GetPrefixRewrite() != "/n/" || m.GetResponseCode() != routev3.RedirectAction_TEMPORARY_REDIRECT {
		t.Errorf("prefix redirect: %v", rs["moved"])
	}
	if rs["moved"].GetMatch().GetPrefix() != "/m/" {
		t.Errorf("a prefix redirect needs a prefix match: %v", rs["moved"].GetMatch())
	}
	l := rs["login"].GetRedirect()
	if l == nil || l.GetPathRedirect() != "/auth" || l.GetResponseCode() != routev3.RedirectAction_SEE_OTHER {
		t.Errorf("path redirect: %v", rs["login"])
	}
	// The filter chain runs before the router answers: a route that requires a credential
	// keeps ext_authz (its per-route config is not "disabled").
	if pf := rs["login"].GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]; pf == nil || strings.Contains(pf.String(), "disabled") {
		t.Errorf("login redirect without its ext_authz check: %v", pf)
	}
	d := rs["down"].GetDirectResponse()
	if d == nil || d.GetStatus() != 503 || d.GetBody().GetInlineString() != "a\nb" {
		t.Errorf("direct response: %v", rs["down"])
	}
	var ct string
	for _, hv := range rs["down"].GetResponseHeadersToAdd() {
		if hv.GetHeader().GetKey() == "content-type" {
			ct = hv.GetHeader().GetValue()
		}
	}
	if ct != "text/plain; q=100%%" {
		t.Errorf("content-type header %q, want the media type with '%%' written %q", ct, "%%")
	}
	// No clusters for routes Envoy answers itself; the good route keeps its own.
	for _, c := range res.Clusters {
		for _, id := range []string{"https", "moved", "login", "down"} {
			if strings.HasPrefix(c.GetName(), "route/"+id+"/") {
				t.Errorf("cluster %s for a route without targets", c.GetName())
			}
		}
	}

	g, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorGRPC})
	if err != nil {
		t.Fatal(err)
	}
	for id, field := range map[string]string{"https": "redirect", "moved": "redirect", "login": "redirect", "down": "direct_response"} {
		if !strings.HasPrefix(g.Omitted[id], field+":") && !strings.Contains(g.Omitted[id], "; "+field+":") {
			t.Errorf("gRPC flavor: route %s omitted with %q, want the reason to name %s", id, g.Omitted[id], field)
		}
	}
	if names := served(g); names["https"] || names["down"] {
		t.Errorf("gRPC flavor serves %v", names)
	}
}
