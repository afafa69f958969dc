package server

import (
	"testing"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// TestConflictHostsAreTheVirtualHosts: the API's conflict check and the translation read a
// route's hosts the same way (translate.RouteHosts): two routes with the same match conflict
// exactly when the translation puts them in the same virtual host.
func TestConflictHostsAreTheVirtualHosts(t *testing.T) {
	h := start(t)
	spellings := []string{"api.test", "API.test", "Api.Test", "api.test:8080", "api.test:*", "*.test", "*", "other.test"}
	mk := func(id, host string) *model.Route {
		return &model.Route{ID: id, Hosts: []string{host}, Conditions: []model.Condition{{PathPattern: "/x/*", Method: "GET"}},
			Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}}
	}
	for _, h1 := range spellings {
		for _, h2 := range spellings {
			a, b := mk("a", h1), mk("b", h2)
			if errs := a.Validate(); len(errs) > 0 {
				t.Fatalf("%s: %v", h1, errs)
			}
			snap := snapshot(1, a)
			conflict := len(h.s.ValidateRoute(b, snap)) > 0
			both := snapshot(2, a, b)
			cfg, err := translate.Translate(both, h.s.opts.Translate)
			if err != nil {
				t.Fatal(err)
			}
			together := false
			for _, vh := range cfg.VirtualHosts {
				names := map[string]bool{}
				for _, r := range vh.Routes {
					names[r.RouteID] = true
				}
				together = together || (names["a"] && names["b"])
			}
			if conflict != together {
				t.Errorf("hosts %q and %q: conflict reported %t, same virtual host %t", h1, h2, conflict, together)
			}
		}
	}
}
