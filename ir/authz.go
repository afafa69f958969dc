package ir

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// AuthzConfig is what ext_authz decides on, read from the model once by the translator: per route
// the credentials, scopes, roles, issuers, tenant, IP rules, policies, geo lists and WAF in
// force (Routes), and the sets every route shares (IPRules, Policies), held once. ext_authz
// only compiles it (CEL programs, IP sets, WAF handles).
type AuthzConfig struct {
	// Identity names the headers that carry a verified identity upstream ("" for one
	// turned off): the one reading of settings.auth.identity_headers.
	Identity IdentityHeaders
	// KeepCredentials, TrustedProxyHops and MaxTokenBytes are settings.auth's.
	KeepCredentials  bool
	TrustedProxyHops int
	MaxTokenBytes    int
	// IPRules are the ip-rules in force at translation (an expired one is left out: it
	// neither turns ext_authz on nor denies), sorted by id. Global rules apply to every route.
	IPRules []*IPRule
	// Policies are the enabled security policies, sorted by id.
	Policies []*Policy
	// Routes are the ext_authz settings of each translated route, sorted by route id.
	Routes []*RouteAuthz
	// Default applies to a Check that names no route: the global policies, IP rules and WAF.
	Default *RouteAuthz
}

// IdentityHeaders are the header names ext_authz sets on an allow (and the translator strips
// from clients' requests on routes without ext_authz).
type IdentityHeaders struct {
	UserID   string
	TenantID string
	APIKeyID string
	Scopes   string
}

// Names lists the header names that are on, sorted.
func (h IdentityHeaders) Names() []string {
	var out []string
	for _, n := range []string{h.UserID, h.TenantID, h.APIKeyID, h.Scopes} {
		if n != "" {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// IPRule is an allow or deny list of addresses and prefixes.
type IPRule struct {
	ID     string
	Deny   bool
	CIDRs  []string
	Global bool      // applies to every route (it names none)
	Expiry time.Time // zero: never
}

// Policy is one enabled security policy: CEL rules and country lists.
type Policy struct {
	ID             string
	Rules          []PolicyRule
	AllowCountries []string
	DenyCountries  []string
}

// PolicyRule is one CEL rule. Status is the deny status (403 when 0 in the model).
type PolicyRule struct {
	Name       string
	Expression string
	Deny       bool
	Status     int
	Message    string
}

// Credential methods a route accepts.
const (
	MethodJWT           = "jwt"
	MethodAPIKey        = "api_key"
	MethodIntrospection = "introspection"
)

// RouteAuthz is one route's ext_authz settings, everything resolved.
type RouteAuthz struct {
	RouteID     string
	Tenant      string
	RequireAuth bool
	// Methods accepted (sorted; empty: any configured).
	Methods   []string
	Scopes    []string
	Roles     []string
	Issuers   []string // empty: any configured issuer
	Audiences []string
	// TenantHeader is lower case.
	TenantHeader string
	FailOpen     bool
	DryRun       bool
	// ClaimsToHeaders, sorted by claim; header names lower case.
	ClaimsToHeaders []ClaimHeader
	// IPRules are the ids of the route's own rules in force (naming it, or named by it);
	// the global ones apply besides, from Authz.IPRules.
	IPRules []string
	// Policies are the ids of the policies applied, in evaluation order: named by the route,
	// naming it, then the global ones.
	Policies []string
	// GeoAllow and GeoDeny are the country lists of the route's policies and its WAF's
	// geoblocking, upper case, sorted.
	GeoAllow []string
	GeoDeny  []string
	// WAF is the WAF in force (the route's own, else the global one); nil: none.
	WAF *WAF
	// OwnWAF: WAF is the route's own (one that does not compile makes this route deny,
	// where the global one's refuses the revision).
	OwnWAF   bool
	Metadata map[string]string
}

// ClaimHeader copies a token claim into a request header.
type ClaimHeader struct {
	Claim  string
	Header string
}

// WAF is the effective WAF of a route, as the model states it (the waf package applies the
// defaults to unset fields).
type WAF struct {
	Mode                   string
	ParanoiaLevel          int
	AnomalyThreshold       int
	MaxRequestBodySize     int64
	CheckTimeout           time.Duration
	MaxHeaderSize          int64
	ExcludeRules           []int
	CustomRules            string
	CustomRulesAfterCRS    string
	BlockMaliciousIPs      bool
	MaliciousIPThreshold   int
	MaliciousIPWindow      time.Duration
	MaliciousIPBanDuration time.Duration
}

// Validate checks the ext_authz part of a configuration: ids unique, references resolve.
func (a *AuthzConfig) Validate() error {
	if a == nil {
		return nil
	}
	var errs []error
	rules := map[string]*IPRule{}
	for _, r := range a.IPRules {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("ip rule %q: %w", r.ID, err))
		}
		if rules[r.ID] != nil {
			errs = append(errs, fmt.Errorf("ip rule %q: duplicate id", r.ID))
		}
		rules[r.ID] = r
	}
	pols := map[string]bool{}
	for _, p := range a.Policies {
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("policy %q: %w", p.ID, err))
		}
		if pols[p.ID] {
			errs = append(errs, fmt.Errorf("policy %q: duplicate id", p.ID))
		}
		pols[p.ID] = true
	}
	routes := map[string]bool{}
	check := func(r *RouteAuthz) {
		if err := r.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("route %q: %w", r.RouteID, err))
		}
		for _, id := range r.IPRules {
			if ru := rules[id]; ru == nil || ru.Global {
				errs = append(errs, fmt.Errorf("route %q: ip rule %q is not a route rule in force", r.RouteID, id))
			}
		}
		for _, id := range r.Policies {
			if !pols[id] {
				errs = append(errs, fmt.Errorf("route %q: policy %q does not exist", r.RouteID, id))
			}
		}
	}
	for _, r := range a.Routes {
		if r.RouteID == "" || routes[r.RouteID] {
			errs = append(errs, fmt.Errorf("route %q: empty or duplicate id", r.RouteID))
		}
		routes[r.RouteID] = true
		check(r)
	}
	if a.Default != nil {
		check(a.Default)
	}
	return errors.Join(errs...)
}

// Validate checks one rule. Its entries are not: the model checks them on write, and one
// stored around that check is left out (and reported) by ext_authz while the rule's other
// entries still apply; refusing the whole revision for it would drop every ban.
func (r *IPRule) Validate() error {
	if r.ID == "" {
		return errors.New("id is required")
	}
	return nil
}

// Validate checks one policy. Its expressions are not: one that does not compile denies
// where it stands (ext_authz), it does not refuse the revision.
func (p *Policy) Validate() error {
	if p.ID == "" {
		return errors.New("id is required")
	}
	return nil
}

// Validate checks one route's settings.
func (r *RouteAuthz) Validate() error {
	for _, m := range r.Methods {
		switch m {
		case MethodJWT, MethodAPIKey, MethodIntrospection:
		default:
			return fmt.Errorf("unknown credential method %q", m)
		}
	}
	if !sort.StringsAreSorted(r.Methods) || !sort.StringsAreSorted(r.GeoAllow) || !sort.StringsAreSorted(r.GeoDeny) {
		return errors.New("methods and country lists must be sorted")
	}
	for _, c := range r.ClaimsToHeaders {
		if c.Claim == "" || c.Header == "" {
			return errors.New("a claim header needs a claim and a header")
		}
	}
	if r.WAF == nil && r.OwnWAF {
		return errors.New("own WAF without a WAF")
	}
	return nil
}
