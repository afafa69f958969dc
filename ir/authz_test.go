package ir

import (
	"strings"
	"testing"
)

func TestAuthzConfigValidate(t *testing.T) {
	good := func() *AuthzConfig {
		return &AuthzConfig{
			IPRules:  []*IPRule{{ID: "ban", Deny: true, CIDRs: []string{"192.0.2.1"}, Global: true}, {ID: "office", CIDRs: []string{"10.0.0.0/8"}}},
			Policies: []*Policy{{ID: "p", Rules: []PolicyRule{{Expression: "true"}}}},
			Routes: []*RouteAuthz{{RouteID: "a", Methods: []string{MethodAPIKey, MethodJWT}, IPRules: []string{"office"}, Policies: []string{"p"},
				GeoDeny: []string{"KP"}}},
			Default: &RouteAuthz{RequireAuth: true, Policies: []string{"p"}},
		}
	}
	if err := good().Validate(); err != nil {
		t.Fatal(err)
	}
	var none *AuthzConfig
	if err := none.Validate(); err != nil {
		t.Fatal("a Config without an ext_authz part is valid:", err)
	}
	cases := []struct {
		name, want string
		bad        func(a *AuthzConfig)
	}{
		{"global rule named by a route", "not a route rule", func(a *AuthzConfig) { a.Routes[0].IPRules = []string{"ban"} }},
		{"unknown rule", "not a route rule", func(a *AuthzConfig) { a.Routes[0].IPRules = []string{"ghost"} }},
		{"unknown policy", "does not exist", func(a *AuthzConfig) { a.Default.Policies = []string{"ghost"} }},
		{"duplicate rule", "duplicate id", func(a *AuthzConfig) { a.IPRules = append(a.IPRules, &IPRule{ID: "ban"}) }},
		{"duplicate policy", "duplicate id", func(a *AuthzConfig) { a.Policies = append(a.Policies, &Policy{ID: "p"}) }},
		{"duplicate route", "duplicate id", func(a *AuthzConfig) { a.Routes = append(a.Routes, &RouteAuthz{RouteID: "a"}) }},
		{"unknown method", "unknown credential method", func(a *AuthzConfig) { a.Routes[0].Methods = []string{"password"} }},
		{"unsorted methods", "sorted", func(a *AuthzConfig) { a.Routes[0].Methods = []string{MethodJWT, MethodAPIKey} }},
		{"claim without header", "claim header", func(a *AuthzConfig) { a.Routes[0].ClaimsToHeaders = []ClaimHeader{{Claim: "sub"}} }},
		{"own WAF missing", "own WAF", func(a *AuthzConfig) { a.Routes[0].OwnWAF = true }},
		{"rule without id", "id is required", func(a *AuthzConfig) { a.IPRules[0].ID = "" }},
	}
	for _, c := range cases {
		a := good()
		c.bad(a)
		if err := a.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// An entry that does not parse is ext_authz's to leave out (the rule's other entries still
// apply), not a reason to refuse the revision every ban is in.
func TestIPRuleEntriesAreNotRefused(t *testing.T) {
	if err := (&IPRule{ID: "r", CIDRs: []string{"not an address"}}).Validate(); err != nil {
		t.Fatal(err)
	}
}
