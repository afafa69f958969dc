package model

import (
	"fmt"
	"mime"
	"strings"
	"unicode/utf8"
)

// Redirect answers a route's requests with a redirect instead of forwarding them (Envoy's
// RedirectAction): the request's URL with the scheme, host and path changed as set.
type Redirect struct {
	// HTTPS redirects to https. Without Host, Envoy keeps the request's host and port (it
	// drops ":80" only, the old scheme's default: source/common/http/utility.cc newUri).
	HTTPS bool `json:"https,omitempty"`
	// Host replaces the host (and port, when it names one): "example.com", "example.com:8443".
	Host string `json:"host,omitempty"`
	// Path replaces the whole path; Prefix replaces the matched prefix (a prefix match only).
	// The query is kept. At most one of them.
	Path   string `json:"path,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	// Status is 301 (default), 302, 303, 307 or 308.
	Status int `json:"status,omitempty"`
}

// DirectResponse answers a route's requests itself (Envoy's DirectResponseAction).
type DirectResponse struct {
	Status int `json:"status"` // 200-599
	// Body is sent as is, at most MaxDirectResponseBody bytes.
	Body string `json:"body,omitempty"`
	// ContentType is the body's media type ("text/plain" by Envoy's default when a body is set).
	ContentType string `json:"content_type,omitempty"`
}

// RedirectStatuses are the statuses a redirect may answer with (Envoy's
// RedirectAction.RedirectResponseCode).
var RedirectStatuses = []int{301, 302, 303, 307, 308}

// MaxDirectResponseBody is the largest direct response body: Envoy's default
// RouteConfiguration.max_direct_response_body_size_bytes (it holds every body in memory and
// refuses the whole route configuration when one is larger; source/common/router/config_impl.cc
// DEFAULT_MAX_DIRECT_RESPONSE_BODY_SIZE_BYTES).
const MaxDirectResponseBody = 4096

// upstreamOnly are the route fields that only shape forwarding to targets: a redirect or a
// direct response forwards nothing, so setting one of them is a mistake worth naming.
func (r *Route) upstreamOnly() []string {
	var set []string
	add := func(on bool, name string) {
		if on {
			set = append(set, name)
		}
	}
	add(r.LoadBalance != "", "load_balance")
	add(r.Timeout != 0, "timeout")
	add(r.Retries != 0, "retries")
	add(r.RetryPolicy != nil, "retry_policy")
	add(r.Rewrite != nil, "rewrite")
	add(r.RequestHeaders != nil, "request_headers")
	add(r.StickySession != nil, "sticky_session")
	add(r.HealthCheck != nil, "health_check")
	add(r.CircuitBreaker != nil, "circuit_breaker")
	add(r.OutlierDetection != nil, "outlier_detection")
	// A mirror policy belongs to the route action that forwards: a redirect or a direct
	// response has none, and Envoy would copy nothing.
	add(r.Mirror != nil, "mirror")
	return set
}

// validateAction checks that the route has exactly one action and checks that action.
func (r *Route) validateAction(errs *FieldErrors) {
	var set []string
	if len(r.Targets) > 0 {
		set = append(set, "targets")
	}
	if r.Redirect != nil {
		set = append(set, "redirect")
	}
	if r.DirectResponse != nil {
		set = append(set, "direct_response")
	}
	switch len(set) {
	case 0:
		errs.Add("targets", "at least one target is required (or set redirect or direct_response)")
		return
	case 1:
	default:
		for _, f := range set[1:] {
			errs.Add(f, "set only one of targets, redirect, direct_response (%s are set)", strings.Join(set, ", "))
		}
	}
	if len(r.Targets) == 0 {
		for _, f := range r.upstreamOnly() {
			errs.Add(f, "applies to targets only: a route with %s forwards nothing", set[0])
		}
		if r.RateLimit != nil {
			// source/extensions/filters/http/ratelimit/ratelimit.cc initiateCall returns for a
			// route without a route entry (a redirect or direct response has none) or cluster.
			errs.Add("rate_limit", "Envoy's rate-limit filter skips a route with %s (it has no cluster): nothing would count its requests", set[0])
		}
	}
	if rd := r.Redirect; rd != nil {
		errs.Nest("redirect", rd.validate(r.Conditions))
	}
	if d := r.DirectResponse; d != nil {
		errs.Nest("direct_response", d.validate())
	}
}

func (rd *Redirect) validate(conds []Condition) FieldErrors {
	var errs FieldErrors
	if rd.Status != 0 && !containsInt(RedirectStatuses, rd.Status) {
		errs.Add("status", "must be 301, 302, 303, 307 or 308")
	}
	if rd.Host != "" {
		if p := hostHeaderProblem(rd.Host); p != "" {
			errs.Add("host", "%s", p)
		}
	}
	if rd.Path != "" && rd.Prefix != "" {
		errs.Add("path", "set path or prefix, not both")
	}
	for _, f := range []struct{ name, v string }{{"path", rd.Path}, {"prefix", rd.Prefix}} {
		if f.v == "" {
			continue
		}
		if p := redirectPathProblem(f.v); p != "" {
			errs.Add(f.name, "%s", p)
		}
	}
	if rd.Prefix != "" {
		// Envoy swaps the matched prefix; an exact match's "prefix" is its whole path (a path
		// redirect said otherwise) and a regex or template match has none.
		for i := range conds {
			matched, ok := prefixMatch(&conds[i])
			if !ok {
				errs.Add("prefix", "needs a prefix match in every condition (path_prefix, or a path_pattern ending in /*); conditions[%d] is not one: use path", i)
				break
			}
			// Envoy swaps the matched prefix for this one as strings (the rest of the path
			// is appended as is): "/x/a" matched by "/x/" and redirected to prefix "/y"
			// would become "/ya", "/m/a" matched by "/m" with prefix "/g/" "/g//a".
			if redirectPathProblem(rd.Prefix) == "" && strings.HasSuffix(matched, "/") != strings.HasSuffix(rd.Prefix, "/") {
				if strings.HasSuffix(matched, "/") {
					errs.Add("prefix", "must end with '/' as the prefix conditions[%d] matches (%q) does: Envoy replaces one with the other", i, matched)
				} else {
					errs.Add("prefix", "must not end with '/' as the prefix conditions[%d] matches (%q) does not: Envoy replaces one with the other", i, matched)
				}
				break
			}
		}
	}
	if !rd.HTTPS && rd.Host == "" && rd.Path == "" && rd.Prefix == "" {
		errs.Add("", "set at least one of https, host, path, prefix (a redirect to the same URL would loop)")
	}
	return errs
}

// prefixMatch is the path prefix a condition matches, and whether it matches a prefix.
func prefixMatch(c *Condition) (string, bool) {
	switch {
	case c.PathRegex != "":
		return "", false
	case c.PathPattern != "":
		pm, err := ParsePathPattern(c.PathPattern)
		return pm.Value, err == nil && pm.Kind == PathPrefix
	case c.PathPrefix != "":
		return c.PathPrefix, true
	}
	return "/", true // no path: the prefix "/"
}

// redirectPathProblem: a redirect path or prefix is an absolute path sent in a Location
// header, without a query or fragment (the request's query is kept; Envoy would take a '?' in
// path_redirect as the new query and drop the request's).
func redirectPathProblem(p string) string {
	switch {
	case len(p) > 2048:
		return "must be at most 2048 bytes"
	case !strings.HasPrefix(p, "/"):
		return "must start with '/'"
	case strings.HasPrefix(p, "//"):
		return "must not start with '//' (a browser reads it as another host)"
	case strings.ContainsAny(p, "?#"):
		return "must be a path without a query or fragment"
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f || c >= 0x80 {
			return "must be printable ASCII without spaces (percent-encode other characters)"
		}
	}
	return ""
}

func (d *DirectResponse) validate() FieldErrors {
	var errs FieldErrors
	if d.Status < 200 || d.Status > 599 {
		errs.Add("status", "must be an HTTP status 200-599")
	}
	switch {
	case len(d.Body) > MaxDirectResponseBody:
		errs.Add("body", "must be at most %d bytes (Envoy's direct response body limit), it has %d", MaxDirectResponseBody, len(d.Body))
	case !utf8.ValidString(d.Body):
		errs.Add("body", "must be valid UTF-8")
	case d.Body != "" && (d.Status == 204 || d.Status == 304):
		// RFC 9110 15.3.5 and 15.4.5: these responses end with their headers; bytes sent
		// after them would be read as the start of the next response on the connection.
		errs.Add("body", "must be empty with status %d (the response has no content)", d.Status)
	}
	if d.ContentType != "" {
		if p := contentTypeProblem(d.ContentType); p != "" {
			errs.Add("content_type", "%s", p)
		}
	}
	return errs
}

// contentTypeProblem: the content type becomes a response header, so it must be one header
// value (no CR, LF, NUL or other control characters) holding a media type.
func contentTypeProblem(ct string) string {
	if len(ct) > 256 {
		return "must be at most 256 bytes"
	}
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; (c < ' ' && c != '\t') || c == 0x7f || c >= 0x80 {
			return "must be printable ASCII (no CR, LF, NUL or other control characters)"
		}
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return fmt.Sprintf("must be a media type such as \"text/plain; charset=utf-8\" (%q)", ct)
	}
	return ""
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
