package model

import (
	"strings"
	"testing"
)

// Every row is a JSON route body through strict decoding and validation: the fields named
// must be reported (and no others), so one bad field never hides another.
func TestRedirectAndDirectResponseValidation(t *testing.T) {
	const conds = `"conditions":[{"path_prefix":"/a/"}]`
	big := strings.Repeat("x", MaxDirectResponseBody+1)
	cases := []struct {
		name, body string
		fields     []string // empty: valid
	}{
		{"redirect to https", `{"id":"r",` + conds + `,"redirect":{"https":true}}`, nil},
		{"every redirect field", `{"id":"r",` + conds + `,"redirect":{"https":true,"host":"b.example.com:8443","prefix":"/b/","status":308}}`, nil},
		{"redirect path on a template", `{"id":"r","conditions":[{"path_pattern":"/u/{id}"}],"redirect":{"path":"/users","status":302}}`, nil},
		{"direct response", `{"id":"r",` + conds + `,"direct_response":{"status":503,"body":"line 1\nline 2\r\n","content_type":"text/plain; charset=utf-8"}}`, nil},
		{"direct response at the body cap", `{"id":"r",` + conds + `,"direct_response":{"status":200,"body":"` + big[1:] + `"}}`, nil},
		{"neither targets nor an action", `{"id":"r",` + conds + `}`, []string{"targets"}},
		{"targets and a redirect", `{"id":"r",` + conds + `,"targets":[{"host":"h","port":80}],"redirect":{"https":true}}`, []string{"redirect"}},
		{"all three", `{"id":"r",` + conds + `,"targets":[{"host":"h","port":80}],"redirect":{"https":true},"direct_response":{"status":200}}`, []string{"redirect", "direct_response"}},
		{"redirect and direct response", `{"id":"r",` + conds + `,"redirect":{"https":true},"direct_response":{"status":200}}`, []string{"direct_response"}},
		{"redirect statuses", `{"id":"r",` + conds + `,"redirect":{"https":true,"status":200}}`, []string{"redirect.status"}},
		{"a 304 is no redirect", `{"id":"r",` + conds + `,"redirect":{"https":true,"status":304}}`, []string{"redirect.status"}},
		{"a redirect to the same URL", `{"id":"r",` + conds + `,"redirect":{"status":301}}`, []string{"redirect"}},
		{"path and prefix", `{"id":"r",` + conds + `,"redirect":{"path":"/x","prefix":"/y/"}}`, []string{"redirect.path"}},
		{"prefix on an exact match", `{"id":"r","conditions":[{"path_prefix":"/a/"},{"path_pattern":"/exact"}],"redirect":{"prefix":"/y/"}}`, []string{"redirect.prefix"}},
		{"prefix on a regex", `{"id":"r","conditions":[{"path_regex":"/a.*"}],"redirect":{"prefix":"/y/"}}`, []string{"redirect.prefix"}},
		// Envoy swaps the matched prefix for the new one as strings: "/x/a" matched by "/x/"
		// and redirected with prefix "/y" would become "/ya", and "/m/a" matched by "/m" with
		// prefix "/g/" would become "/g//a".
		{"prefix without the match's trailing slash", `{"id":"r","conditions":[{"path_prefix":"/x/"}],"redirect":{"prefix":"/y"}}`, []string{"redirect.prefix"}},
		{"prefix with a slash the match lacks", `{"id":"r","conditions":[{"path_prefix":"/m"}],"redirect":{"prefix":"/g/"}}`, []string{"redirect.prefix"}},
		{"prefix / for a match without a slash", `{"id":"r","conditions":[{"path_prefix":"/m"}],"redirect":{"prefix":"/"}}`, []string{"redirect.prefix"}},
		{"prefix without a slash for a pattern", `{"id":"r","conditions":[{"path_pattern":"/docs/*"}],"redirect":{"prefix":"/guide"}}`, []string{"redirect.prefix"}},
		{"prefix without a slash for no path", `{"id":"r","conditions":[{"method":"GET"}],"redirect":{"prefix":"/guide"}}`, []string{"redirect.prefix"}},
		{"conditions disagreeing on the slash", `{"id":"r","conditions":[{"path_prefix":"/m"},{"path_pattern":"/docs/*"}],"redirect":{"prefix":"/g"}}`, []string{"redirect.prefix"}},
		{"prefix / for a pattern", `{"id":"r","conditions":[{"path_pattern":"/docs/*"},{"path_prefix":"/a/"}],"redirect":{"prefix":"/"}}`, nil},
		{"prefix without slashes", `{"id":"r","conditions":[{"path_prefix":"/m"}],"redirect":{"prefix":"/g"}}`, nil},
		{"prefix on a template", `{"id":"r","conditions":[{"path_pattern":"/u/{id}"}],"redirect":{"prefix":"/y/"}}`, []string{"redirect.prefix"}},
		{"host with a path", `{"id":"r",` + conds + `,"redirect":{"host":"b.example.com/evil"}}`, []string{"redirect.host"}},
		{"host with CRLF", `{"id":"r",` + conds + `,"redirect":{"host":"b.example.com\r\nSet-Cookie: x=1"}}`, []string{"redirect.host"}},
		{"host with NUL", `{"id":"r",` + conds + `,"redirect":{"host":"b\u0000.example.com"}}`, []string{"redirect.host"}},
		{"relative path", `{"id":"r",` + conds + `,"redirect":{"path":"users"}}`, []string{"redirect.path"}},
		{"protocol-relative path", `{"id":"r",` + conds + `,"redirect":{"path":"//evil.example.com/"}}`, []string{"redirect.path"}},
		{"path with a query", `{"id":"r",` + conds + `,"redirect":{"path":"/x?a=1"}}`, []string{"redirect.path"}},
		{"path with CRLF", `{"id":"r",` + conds + `,"redirect":{"path":"/x\r\nLocation: //evil"}}`, []string{"redirect.path"}},
		{"prefix with a space", `{"id":"r",` + conds + `,"redirect":{"prefix":"/a b/"}}`, []string{"redirect.prefix"}},
		{"huge path", `{"id":"r",` + conds + `,"redirect":{"path":"/` + strings.Repeat("p", 4096) + `"}}`, []string{"redirect.path"}},
		{"direct response without a status", `{"id":"r",` + conds + `,"direct_response":{"body":"x"}}`, []string{"direct_response.status"}},
		{"direct response 1xx", `{"id":"r",` + conds + `,"direct_response":{"status":101}}`, []string{"direct_response.status"}},
		// RFC 9110 (15.3.5, 15.4.5): a 204 or 304 response has no content.
		{"direct response 204 with a body", `{"id":"r",` + conds + `,"direct_response":{"status":204,"body":"x"}}`, []string{"direct_response.body"}},
		{"direct response 304 with a body", `{"id":"r",` + conds + `,"direct_response":{"status":304,"body":"x"}}`, []string{"direct_response.body"}},
		{"direct response 204 without a body", `{"id":"r",` + conds + `,"direct_response":{"status":204}}`, nil},
		{"direct response 600", `{"id":"r",` + conds + `,"direct_response":{"status":600}}`, []string{"direct_response.status"}},
		{"direct response overflowing status", `{"id":"r",` + conds + `,"direct_response":{"status":4294967496}}`, []string{"direct_response.status"}},
		{"body above the cap", `{"id":"r",` + conds + `,"direct_response":{"status":200,"body":"` + big + `"}}`, []string{"direct_response.body"}},
		{"content type with CRLF", `{"id":"r",` + conds + `,"direct_response":{"status":200,"content_type":"text/html\r\nSet-Cookie: a=b"}}`, []string{"direct_response.content_type"}},
		{"content type with LF", `{"id":"r",` + conds + `,"direct_response":{"status":200,"content_type":"text/html\nX: y"}}`, []string{"direct_response.content_type"}},
		{"content type with NUL", `{"id":"r",` + conds + `,"direct_response":{"status":200,"content_type":"text/html\u0000"}}`, []string{"direct_response.content_type"}},
		{"content type not a media type", `{"id":"r",` + conds + `,"direct_response":{"status":200,"content_type":"html"}}`, []string{"direct_response.content_type"}},
		{"content type not ASCII", `{"id":"r",` + conds + `,"direct_response":{"status":200,"content_type":"text/plainé"}}`, []string{"direct_response.content_type"}},
		{"upstream-only fields on a redirect", `{"id":"r",` + conds + `,"redirect":{"https":true},"timeout":"1s","retries":2,"load_balance":"random","rewrite":{"prefix":"/x"},"sticky_session":{},"request_headers":{"add":{"a":"b"}}}`,
			[]string{"timeout", "retries", "load_balance", "rewrite", "sticky_session", "request_headers"}},
		{"upstream-only fields on a direct response", `{"id":"r",` + conds + `,"direct_response":{"status":503},"health_check":{},"circuit_breaker":{},"outlier_detection":{},"retry_policy":{},"rate_limit":{"policies":["p"]},"mirror":{"target":{"host":"10.0.0.9","port":80}}}`,
			[]string{"health_check", "circuit_breaker", "outlier_detection", "retry_policy", "rate_limit", "mirror"}},
		{"every bad field at once", `{"id":"r",` + conds + `,"targets":[{"host":"h","port":80}],"redirect":{"status":999,"host":"a b","path":"x","prefix":"y"}}`,
			[]string{"redirect", "redirect.status", "redirect.host", "redirect.path", "redirect.prefix"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r Route
			errs := DecodeStrict([]byte(c.body), &r)
			if len(errs) == 0 {
				errs = r.Validate()
			}
			got := fieldsOf(errs)
			for _, f := range c.fields {
				if _, ok := got[f]; !ok {
					t.Errorf("%s not reported: %v", f, errs)
				}
			}
			want := map[string]bool{}
			for _, f := range c.fields {
				want[f] = true
			}
			for f := range got {
				if !want[f] {
					t.Errorf("unexpected problem at %s: %v", f, errs)
				}
			}
		})
	}
}

func TestRedirectRouteOmitsTargetsInJSON(t *testing.T) {
	var r Route
	if errs := DecodeStrict([]byte(`{"id":"r","conditions":[{"path_prefix":"/"}],"redirect":{"https":true}}`), &r); len(errs) > 0 {
		t.Fatal(errs)
	}
	if r.Redirect == nil || !r.Redirect.HTTPS || r.Targets != nil {
		t.Fatalf("decoded %+v", r)
	}
}
