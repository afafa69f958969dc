package translate

import (
	"testing"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

// A redirect or a direct response has no targets: no clusters and no "no target is in
// rotation" error; no identity headers removed (nothing is forwarded); and no rate limits,
// not even the edge-wide ones, since Envoy's rate-limit filter skips a route without a
// cluster. ext_authz still applies when a credential is required.
func TestRoutesWithoutTargets(t *testing.T) {
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID,
		RateLimit: &model.GlobalRateLimit{Limits: []model.RateLimit{{RequestsPerUnit: 10, TimeUnit: model.Duration(60e9)}}}}}
	snap.Routes = []*model.Route{
		{ID: "redir", Conditions: []model.Condition{{PathPrefix: "/old/"}}, Redirect: &model.Redirect{Prefix: "/new/"}},
		{ID: "down", RequireAuth: boolPtr(false), Conditions: []model.Condition{{PathPattern: "/down"}},
			DirectResponse: &model.DirectResponse{Status: 503, Body: "down", ContentType: "text/plain"}},
		{ID: "fwd", RequireAuth: boolPtr(false), Conditions: []model.Condition{{PathPrefix: "/api/"}}, Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}},
	}
	cfg, err := Translate(snap, Options{ListenerAddress: "0.0.0.0:10000", ControlPlane: "cp:18000"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RouteErrors) > 0 {
		t.Fatalf("route errors: %v", cfg.RouteErrors)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	routes := map[string]*ir.Route{}
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			routes[r.Name] = r
		}
	}
	for _, c := range cfg.Clusters {
		if c.RouteID == "redir" || c.RouteID == "down" {
			t.Errorf("cluster %s for a route without targets", c.Name)
		}
	}
	redir, down, fwd := routes["redir"], routes["down"], routes["fwd"]
	if redir == nil || down == nil || fwd == nil {
		t.Fatalf("routes %v", routes)
	}
	if rd := redir.Redirect; rd == nil || rd.PrefixRewrite != "/new/" || rd.Status != 301 || len(redir.Backends) != 0 {
		t.Errorf("redirect %+v", redir)
	}
	if !redir.Authz.Enabled {
		t.Error("a redirect that requires a credential skips ext_authz")
	}
	if d := down.DirectResponse; d == nil || d.Status != 503 || d.Body != "down" || d.ContentType != "text/plain" {
		t.Errorf("direct response %+v", down)
	}
	if len(down.RequestHeaders.Remove) != 0 {
		t.Errorf("a direct response removes request headers: %v", down.RequestHeaders.Remove)
	}
	if len(redir.RateLimits) != 0 || len(down.RateLimits) != 0 {
		t.Errorf("rate limits on routes Envoy's rate-limit filter skips: %v %v", redir.RateLimits, down.RateLimits)
	}
	if len(fwd.RateLimits) != 1 || len(fwd.RequestHeaders.Remove) == 0 {
		t.Errorf("the forwarding route lost its global limit or identity header removal: %+v", fwd)
	}
}
