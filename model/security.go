package model

import (
	"fmt"
	"strings"
	"time"
)

// IPRule allows or denies client addresses, globally or for some routes.
type IPRule struct {
	ID      string   `json:"id"`
	Action  string   `json:"action"` // allow | deny
	CIDRs   []string `json:"cidrs"`
	Routes  []string `json:"routes,omitempty"` // empty = every route
	Comment string   `json:"comment,omitempty"`
	// ExpiresAt makes the rule temporary (the WAF's repeat-offender denies use it).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Source    string     `json:"source,omitempty"` // "api" (default) or "waf"
	Meta
}

// GetID returns the rule id.
func (r *IPRule) GetID() string { return r.ID }

// SetID sets the rule id.
func (r *IPRule) SetID(id string) { r.ID = id }

// Validate checks the rule.
func (r *IPRule) Validate() FieldErrors {
	var errs FieldErrors
	checkID(&errs, r.ID)
	if r.Action != "allow" && r.Action != "deny" {
		errs.Add("action", "must be allow or deny")
	}
	if len(r.CIDRs) == 0 {
		errs.Add("cidrs", "at least one address or CIDR is required")
	}
	for i, c := range r.CIDRs {
		if !ValidCIDROrIP(c) {
			errs.Add(fmt.Sprintf("cidrs[%d]", i), "must be an IP address or CIDR")
		}
	}
	for i, id := range r.Routes {
		if !validID(id) {
			errs.Add(fmt.Sprintf("routes[%d]", i), "must be a route id")
		}
	}
	return errs
}

// Policy is a security policy: rules written in CEL over request, identity and route,
// evaluated in order; the first matching rule decides. Example rule expression:
// `request.method == "DELETE" && !("admin" in identity.roles)` with action deny.
type Policy struct {
	ID          string       `json:"id"`
	Name        string       `json:"name,omitempty"`
	Description string       `json:"description,omitempty"`
	Routes      []string     `json:"routes,omitempty"` // empty = every route
	Rules       []PolicyRule `json:"rules"`
	// Geo rules: country allow/deny lists (ISO 3166-1 alpha-2) checked against GEOIP_DB.
	AllowCountries []string `json:"allow_countries,omitempty"`
	DenyCountries  []string `json:"deny_countries,omitempty"`
	Disabled       bool     `json:"disabled,omitempty"`
	Meta
}

// PolicyRule is one CEL expression with the action taken when it is true.
type PolicyRule struct {
	Name       string `json:"name,omitempty"`
	Expression string `json:"expression"`
	Action     string `json:"action"` // deny | allow
	Status     int    `json:"status,omitempty"`
	Message    string `json:"message,omitempty"`
}

// GetID returns the policy id.
func (p *Policy) GetID() string { return p.ID }

// SetID sets the policy id.
func (p *Policy) SetID(id string) { p.ID = id }

// Validate checks the policy's shape; CEL expressions are compiled by the ext_authz engine
// (see extauthz), which the API calls before a write.
func (p *Policy) Validate() FieldErrors {
	var errs FieldErrors
	checkID(&errs, p.ID)
	if len(p.Rules) == 0 && len(p.AllowCountries) == 0 && len(p.DenyCountries) == 0 {
		errs.Add("rules", "at least one rule or country list is required")
	}
	for i, r := range p.Rules {
		f := fmt.Sprintf("rules[%d]", i)
		if strings.TrimSpace(r.Expression) == "" {
			errs.Add(f+".expression", "is required")
		}
		if r.Action != "allow" && r.Action != "deny" {
			errs.Add(f+".action", "must be allow or deny")
		}
		if r.Status != 0 && (r.Status < 400 || r.Status > 599) {
			errs.Add(f+".status", "must be 400-599")
		}
	}
	for i, c := range p.AllowCountries {
		if !validCountry(c) {
			errs.Add(fmt.Sprintf("allow_countries[%d]", i), "must be an ISO 3166-1 alpha-2 code")
		}
	}
	for i, c := range p.DenyCountries {
		if !validCountry(c) {
			errs.Add(fmt.Sprintf("deny_countries[%d]", i), "must be an ISO 3166-1 alpha-2 code")
		}
	}
	for i, id := range p.Routes {
		if !validID(id) {
			errs.Add(fmt.Sprintf("routes[%d]", i), "must be a route id")
		}
	}
	return errs
}

func validCountry(c string) bool {
	if len(c) != 2 {
		return false
	}
	for _, r := range c {
		if (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') {
			return false
		}
	}
	return true
}

// Tenant is an isolation boundary: routes, keys and tokens carry a tenant; a caller never
// reaches another tenant's routes.
type Tenant struct {
	ID       string            `json:"id"`
	Name     string            `json:"name,omitempty"`
	Disabled bool              `json:"disabled,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Meta
}

// GetID returns the tenant id.
func (t *Tenant) GetID() string { return t.ID }

// SetID sets the tenant id.
func (t *Tenant) SetID(id string) { t.ID = id }

// Validate checks the tenant.
func (t *Tenant) Validate() FieldErrors {
	var errs FieldErrors
	checkID(&errs, t.ID)
	return errs
}
