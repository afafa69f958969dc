package server

import (
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/model"
)

// A write of a route that Envoy would refuse at load time (envoy/runtime_rules.go) is refused
// by the API's validator with Envoy's reason, before it reaches the store; the same route
// written without the offending part is accepted.
func TestValidateRouteRefusesEnvoyRuntimeRules(t *testing.T) {
	h := start(t)
	snap := snapshot(1)
	target := []model.Target{{Host: "10.0.0.1", Port: 80}}
	cases := []struct {
		name string
		r    *model.Route
		want string
	}{
		{"lone percent", &model.Route{ID: "pct", Conditions: []model.Condition{{PathPattern: "/pct"}}, Targets: target,
			ResponseHeaders: &model.HeaderOps{Set: map[string]string{"X-Discount": "50%"}}}, "write %% for a literal %"},
		{"set host", &model.Route{ID: "host", Conditions: []model.Condition{{PathPattern: "/host"}}, Targets: target,
			RequestHeaders: &model.HeaderOps{Set: map[string]string{"Host": "backend"}}}, `"host" cannot be added or set`},
		{"program size", &model.Route{ID: "long", Targets: target, Conditions: []model.Condition{{
			PathPattern: "/api/v1/organizations/{org}/projects/{p}/environments/{e}/deployments/{d}/revisions/{r}/logs"}}},
			"RE2 program size 102"},
	}
	for _, c := range cases {
		if errs := c.r.Validate(); len(errs) > 0 {
			t.Fatalf("%s: the model refuses it already: %v", c.name, errs)
		}
		errs := h.s.ValidateRoute(c.r, snap)
		if len(errs) == 0 || !strings.Contains(errs.Error(), c.want) {
			t.Errorf("%s: %v", c.name, errs)
		}
	}
	fine := &model.Route{ID: "fine", Conditions: []model.Condition{{PathPattern: "/api/v1/orgs/{org}/projects/{p}/envs/{e}"}}, Targets: target,
		ResponseHeaders: &model.HeaderOps{Set: map[string]string{"X-Discount": "50%%"}}}
	if errs := h.s.ValidateRoute(fine, snap); len(errs) > 0 {
		t.Errorf("fine: %v", errs)
	}
}
