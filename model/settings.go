package model

import (
	"fmt"
	"net/url"
	"strings"
)

// SettingsID is the id of the one settings object.
const SettingsID = "global"

// Settings holds the global defaults every route inherits (and can override): authentication
// sources, WAF, rate limits. There is one settings object, id "global".
type Settings struct {
	ID        string           `json:"id"`
	Auth      *AuthSettings    `json:"auth,omitempty"`
	WAF       *WAFSettings     `json:"waf,omitempty"`
	RateLimit *GlobalRateLimit `json:"rate_limit,omitempty"`
	Meta
}

// AuthSettings configures the credential sources and identity propagation.
type AuthSettings struct {
	JWTIssuers    []JWTIssuer    `json:"jwt_issuers,omitempty"`
	Introspection *Introspection `json:"introspection,omitempty"`
	// TrustedProxyHops: how many x-forwarded-for entries (from the right) come from trusted
	// proxies; the client address is the next one. 0 = use Envoy's source address only.
	TrustedProxyHops int `json:"trusted_proxy_hops,omitempty"`
	// IdentityHeaders names the headers added to allowed requests; empty values use the
	// defaults x-user-id, x-tenant-id, x-api-key-id, x-auth-scopes. "-" disables one.
	IdentityHeaders map[string]string `json:"identity_headers,omitempty"`
	// KeepCredentials forwards Authorization / x-api-key to the upstream (default: removed).
	KeepCredentials bool `json:"keep_credentials,omitempty"`
	FailOpen        bool `json:"fail_open,omitempty"`
	DryRun          bool `json:"dry_run,omitempty"`

	// MaxTokenBytes refuses longer bearer tokens and API keys before any work (default 8192).
	MaxTokenBytes int `json:"max_token_bytes,omitempty"`
}

// JWTIssuer is a trusted token issuer. Keys come from JWKSURI, or from OIDC discovery at
// Issuer + "/.well-known/openid-configuration" when JWKSURI is empty.
type JWTIssuer struct {
	Name        string   `json:"name,omitempty"`
	Issuer      string   `json:"issuer"`
	Audiences   []string `json:"audiences,omitempty"`
	JWKSURI     string   `json:"jwks_uri,omitempty"`
	Algorithms  []string `json:"algorithms,omitempty"` // default RS/PS/ES 256/384/512 and EdDSA
	ClockSkew   Duration `json:"clock_skew,omitempty"` // default 30s
	UserClaim   string   `json:"user_claim,omitempty"` // default "sub"
	TenantClaim string   `json:"tenant_claim,omitempty"`
	RolesClaim  string   `json:"roles_claim,omitempty"`  // default "roles"
	ScopesClaim string   `json:"scopes_claim,omitempty"` // default "scope" (space separated) or "scp"
	// RefreshInterval bounds how often keys are refreshed (and refetched on an unknown kid).
	RefreshInterval Duration `json:"refresh_interval,omitempty"`
}

// Introspection configures RFC 7662 token introspection for opaque tokens.
type Introspection struct {
	URL          string   `json:"url"`
	ClientID     string   `json:"client_id,omitempty"`
	ClientSecret string   `json:"client_secret,omitempty"`
	CacheTTL     Duration `json:"cache_ttl,omitempty"`
	// CacheBytes bounds the answers cache (default 16 MiB, at least 64 KiB).
	CacheBytes int64 `json:"cache_bytes,omitempty"`
	// MaxCallsPerSecond caps outbound introspection calls per replica (default 50); the
	// excess is denied 503 (never failed open).
	MaxCallsPerSecond int `json:"max_calls_per_second,omitempty"`
}

// GetID returns "global".
func (s *Settings) GetID() string { return s.ID }

// SetID sets the id.
func (s *Settings) SetID(id string) { s.ID = id }

// Validate checks the settings.
func (s *Settings) Validate() FieldErrors {
	var errs FieldErrors
	if s.ID != "" && s.ID != SettingsID {
		errs.Add("id", "the settings object is always %q", SettingsID)
	}
	if a := s.Auth; a != nil {
		for i, is := range a.JWTIssuers {
			f := fmt.Sprintf("auth.jwt_issuers[%d]", i)
			if !isURL(is.Issuer) && is.Issuer == "" {
				errs.Add(f+".issuer", "is required")
			}
			if is.JWKSURI != "" && !isURL(is.JWKSURI) {
				errs.Add(f+".jwks_uri", "must be an http(s) URL")
			}
			if is.JWKSURI == "" && !isURL(is.Issuer) {
				errs.Add(f+".jwks_uri", "is required when issuer is not an http(s) URL for OIDC discovery")
			}
			for j, alg := range is.Algorithms {
				if !contains(JWTAlgorithms, alg) {
					errs.Add(fmt.Sprintf("%s.algorithms[%d]", f, j), "must be one of RS256..512, PS256..512, ES256..512, EdDSA")
				}
			}
			if is.ClockSkew < 0 || is.RefreshInterval < 0 {
				errs.Add(f, "durations must not be negative")
			}
		}
		if in := a.Introspection; in != nil && !isURL(in.URL) {
			errs.Add("auth.introspection.url", "must be an http(s) URL")
		}
		if in := a.Introspection; in != nil && (in.CacheBytes < 0 || in.MaxCallsPerSecond < 0 || in.CacheTTL < 0) {
			errs.Add("auth.introspection", "cache_ttl, cache_bytes and max_calls_per_second must not be negative")
		}
		if in := a.Introspection; in != nil && in.CacheBytes > 0 && in.CacheBytes < 64<<10 {
			errs.Add("auth.introspection.cache_bytes", "must be at least 65536 (64 KiB), or 0 for the default")
		}
		if a.MaxTokenBytes < 0 {
			errs.Add("auth.max_token_bytes", "must not be negative")
		}
		if a.TrustedProxyHops < 0 || a.TrustedProxyHops > 10 {
			errs.Add("auth.trusted_proxy_hops", "must be 0-10")
		}
		for k, v := range a.IdentityHeaders {
			if _, ok := DefaultIdentityHeaders[k]; !ok {
				errs.Add("auth.identity_headers."+k, "must be user_id, tenant_id, api_key_id or scopes")
				continue
			}
			if v = strings.TrimSpace(v); v != "" && v != "-" && (!headerName.MatchString(v) || v[0] == ':') {
				errs.Add("auth.identity_headers."+k, "must be a header name, or \"-\" to send none")
			}
		}
	}
	errs.Nest("waf", s.WAF.Validate())
	if s.RateLimit != nil {
		errs.Nest("rate_limit", s.RateLimit.Validate())
	}
	return errs
}

// JWTAlgorithms are the accepted signing algorithms (no "none", no HMAC).
var JWTAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

func isURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// DefaultIdentityHeaders are the headers ext_authz sets on allowed requests, by identity field;
// settings.auth.identity_headers renames them.
var DefaultIdentityHeaders = map[string]string{"user_id": "x-user-id", "tenant_id": "x-tenant-id", "api_key_id": "x-api-key-id", "scopes": "x-auth-scopes"}

// IdentityHeaderNames resolves settings.auth.identity_headers (a nil AuthSettings has the
// defaults): for each identity field the lowercase header name, or "" when it is turned off
// ("-"). ext_authz sets these headers and the translator removes clients' copies of them, so
// both read them here: a name read two ways would let a client smuggle its own identity.
func (a *AuthSettings) IdentityHeaderNames() map[string]string {
	out := make(map[string]string, len(DefaultIdentityHeaders))
	for k, def := range DefaultIdentityHeaders {
		out[k] = def
	}
	if a == nil {
		return out
	}
	for k, v := range a.IdentityHeaders {
		if _, ok := out[k]; !ok {
			continue
		}
		switch v = strings.ToLower(strings.TrimSpace(v)); v {
		case "":
		case "-":
			out[k] = ""
		default:
			out[k] = v
		}
	}
	return out
}
