package edge_test

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// edgeModel has the routes of the attack classes below: a WAF form route with default
// settings, a tuned WAF upload route, a site whose /site/admin a CEL policy denies, and an
// app whose /app/public/ needs no credentials while the rest of /app/ does.
const edgeModel = `
routes:
  - id: forms
    require_auth: false
    waf: {mode: block}
    conditions: [{path_pattern: "/forms/*"}]
    targets: [{host: 10.0.9.1, port: 8080}]
  - id: uploads
    require_auth: false
    waf: {max_request_body_size: 65536, check_timeout: 30s}
    conditions: [{path_pattern: "/uploads/*"}]
    targets: [{host: 10.0.9.2, port: 8080}]
  - id: site
    require_auth: false
    auth: {policies: [no-admin]}
    conditions: [{path_pattern: "/site/*"}]
    targets: [{host: 10.0.9.3, port: 8080}]
  - id: app-public
    require_auth: false
    conditions: [{path_pattern: "/app/public/*"}]
    targets: [{host: 10.0.9.4, port: 8080}]
  - id: app
    conditions: [{path_pattern: "/app/*"}]
    targets: [{host: 10.0.9.5, port: 8080}]
policies:
  - id: no-admin
    routes: [site]
    rules: [{expression: 'request.path.startsWith("/site/admin")', action: deny}]
`

// TestEdgePathNormalization: paths spelled to reach /app/admin through the public route, or
// /site/admin past its CEL deny, reach what they name (and are checked as such) or get
// Envoy's redirect to it; ordinary paths still work.
func TestEdgePathNormalization(t *testing.T) {
	e := newEdge(t, edgeModel)
	for _, c := range []struct {
		path      string
		status    int
		route     string
		location  string
		checkPath string
	}{
		// The public route stays public.
		{"/app/public/docs", 200, "app-public", "", ""},
		// Dot segments, plain and percent-encoded: the private route, which needs credentials.
		{"/app/public/../admin/users", 401, "app", "", "/app/admin/users"},
		{"/app/public/%2e%2e/admin/users", 401, "app", "", "/app/admin/users"},
		{"/app/public/%2E%2E/admin/users?x=1", 401, "app", "", "/app/admin/users?x=1"},
		{"/app/public/.%2e/admin/users", 401, "app", "", "/app/admin/users"},
		{`/app/public/..\admin/users`, 401, "app", "", "/app/admin/users"},
		// An escaped slash: Envoy redirects to the normalized path, which is then checked.
		{"/app/public/..%2fadmin/users", 307, "", "/app/admin/users", ""},
		{"/app/public/..%2Fadmin/users", 307, "", "/app/admin/users", ""},
		{"/app/public/..%5cadmin/users", 307, "", "/app/admin/users", ""},
		// The CEL deny on /site/admin holds whatever the spelling.
		{"/site/about", 200, "site", "", "/site/about"},
		{"/site/admin", 403, "site", "", "/site/admin"},
		{"/site/x/../admin", 403, "site", "", "/site/admin"},
		{"/site//admin", 403, "site", "", "/site/admin"},
		{"//site/admin", 403, "site", "", "/site/admin"},
		{"/site/%61dmin", 403, "site", "", "/site/admin"},
		{"/site/./admin", 403, "site", "", "/site/admin"},
		{"/site/%2e/admin", 403, "site", "", "/site/admin"},
		{"/site/public/..%2f..%2fsite/admin", 307, "", "/site/admin", ""},
		// Climbing above the root stays at the root.
		{"/../../site/admin", 403, "site", "", "/site/admin"},
	} {
		o := e.do(httpReq{method: "GET", path: c.path})
		if o.status != c.status || o.route != c.route || o.location != c.location {
			t.Errorf("%s: got %d via route %q (location %q), want %d via %q (location %q)",
				c.path, o.status, o.route, o.location, c.status, c.route, c.location)
			continue
		}
		if c.checkPath != "" && o.check.GetAttributes().GetRequest().GetHttp().GetPath() != c.checkPath {
			t.Errorf("%s: ext_authz saw path %q, want %q", c.path, o.check.GetAttributes().GetRequest().GetHttp().GetPath(), c.checkPath)
		}
		if c.status == 307 {
			// The client follows the redirect: the normalized path is checked.
			if f := e.do(httpReq{method: "GET", path: c.location}); f.status == 200 {
				t.Errorf("%s: redirect target %s passed: %+v", c.path, c.location, f)
			}
		}
	}
}

// sqliAfter is a urlencoded form whose first pad bytes are ordinary fields and whose last
// field is an SQL injection.
func sqliAfter(pad int) []byte {
	v := url.Values{}
	for i := 0; len(v.Encode()) < pad; i++ {
		v.Add(fmt.Sprintf("comment_%04d", i), fmt.Sprintf("an ordinary remark number %d", i))
	}
	return []byte(v.Encode() + "&q=" + url.QueryEscape("1' UNION SELECT password FROM users--"))
}

func form(body []byte) httpReq {
	return httpReq{method: "POST", path: "/forms/submit", body: body,
		headers: [][2]string{{"Content-Type", "application/x-www-form-urlencoded"}}}
}

// TestEdgeWAFSeesWholeBody: on a WAF route with default settings, Envoy buffers the whole
// body up to the WAF's 10 MiB: an SQL injection after the first 8 KiB is blocked, valid
// JSON and multipart bodies over 8 KiB pass, and a body over the route's limit is refused
// by Envoy with 413 before any Check.
func TestEdgeWAFSeesWholeBody(t *testing.T) {
	e := newEdge(t, edgeModel)

	if o := e.do(form(sqliAfter(kib(9)))); o.status != 403 || o.by != "authz" {
		t.Errorf("SQLi after 9 KiB of form: got %d by %s, want 403 by authz", o.status, o.by)
	} else if wb := o.check.GetAttributes().GetRequest().GetHttp(); wb.GetHeaders()["x-envoy-auth-partial-body"] != "false" {
		t.Errorf("the check was sent a partial body: %q", wb.GetHeaders()["x-envoy-auth-partial-body"])
	}
	// Past Coraza's 1,000 arguments (SecArgumentsLimit) the rest of a form is never
	// parsed: such a form is refused (rule 200007), not passed uninspected.
	if o := e.do(form(sqliAfter(kib(48)))); o.status != 400 && o.status != 403 {
		t.Errorf("SQLi after 1,000+ form fields: got %d by %s, want refused", o.status, o.by)
	}

	var items []string
	for i := 0; len(strings.Join(items, ",")) < kib(12); i++ {
		items = append(items, fmt.Sprintf(`{"sku":"SKU-%05d","name":"Item %d","qty":%d}`, i, i, i%5+1))
	}
	jsonBody := []byte(`{"customer":"c-1029","items":[` + strings.Join(items, ",") + `]}`)
	if o := e.do(httpReq{method: "POST", path: "/forms/order", body: jsonBody,
		headers: [][2]string{{"Content-Type", "application/json"}}}); o.status != 200 {
		t.Errorf("valid 12 KiB JSON: got %d by %s, want 200", o.status, o.by)
	}

	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("title", "quarterly report")
	fw, _ := mw.CreateFormFile("attachment", "report.txt")
	for i := 0; mp.Len() < kib(20); i++ {
		fmt.Fprintf(fw, "line %d of an ordinary text attachment\n", i)
	}
	_ = mw.Close()
	if o := e.do(httpReq{method: "POST", path: "/forms/upload", body: mp.Bytes(),
		headers: [][2]string{{"Content-Type", mw.FormDataContentType()}}}); o.status != 200 {
		t.Errorf("valid 20 KiB multipart: got %d by %s, want 200", o.status, o.by)
	}

	// The tuned route's own limit (64 KiB): Envoy answers 413 itself past it, nothing is
	// checked; exactly at it, the body is checked whole and passes.
	jsonOf := func(n int) []byte {
		text := bytes.Repeat([]byte("plain words of a note "), n/22+1)
		return []byte(`{"note":"` + string(text[:n-len(`{"note":""}`)]) + `"}`)
	}
	big := httpReq{method: "POST", path: "/uploads/x", body: jsonOf(65537),
		headers: [][2]string{{"Content-Type", "application/json"}}}
	if o := e.do(big); o.status != 413 || o.by != "envoy" || o.checked {
		t.Errorf("64 KiB + 1 on a 64 KiB route: got %d by %s (checked %v), want Envoy's 413", o.status, o.by, o.checked)
	}
	big.body = jsonOf(65536)
	if o := e.do(big); o.status != 200 {
		t.Errorf("exactly 64 KiB on a 64 KiB route: got %d by %s, want 200", o.status, o.by)
	}
}

// TestEdgePartialBodyHeaderHostile: a client's own x-envoy-auth-partial-body never reaches
// the check (Envoy drops it), whatever its value, and a body Envoy did cut is never judged
// whole (waf.TestInspectPartialBodyRefused covers the WAF's answer to it).
func TestEdgePartialBodyHeaderHostile(t *testing.T) {
	e := newEdge(t, edgeModel)
	for _, v := range []string{"false", "true", "FALSE", ""} {
		r := form(sqliAfter(kib(10)))
		r.headers = append(r.headers, [2]string{"X-Envoy-Auth-Partial-Body", v})
		if o := e.do(r); o.status != 403 {
			t.Errorf("client header %q: got %d by %s, want the SQLi blocked (403)", v, o.status, o.by)
		}
	}
}

// TestEdgeCheckTimeoutFollowsRoute: Envoy's deadline for a Check is the route's: the WAF's
// check_timeout on WAF routes (default 10 s, 30 s where set), the filter's 2 s elsewhere.
func TestEdgeCheckTimeoutFollowsRoute(t *testing.T) {
	e := newEdge(t, edgeModel)
	for _, c := range []struct {
		r    httpReq
		want time.Duration
	}{
		{form([]byte("a=1")), model.DefaultWAFCheckTimeout},
		{httpReq{method: "POST", path: "/uploads/x", body: []byte("x"), headers: [][2]string{{"Content-Type", "text/plain"}}}, 30 * time.Second},
		{httpReq{method: "GET", path: "/site/about"}, 2 * time.Second},
		{httpReq{method: "GET", path: "/app/x"}, 2 * time.Second},
	} {
		if o := e.do(c.r); !o.checked || o.timeout != c.want {
			t.Errorf("%s: check timeout %s (checked %v), want %s", c.r.path, ms(o.timeout), o.checked, ms(c.want))
		}
	}
}
