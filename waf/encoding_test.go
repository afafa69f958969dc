package waf

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"io"
	"net/url"
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/model"
)

func compress(t *testing.T, enc string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	switch enc {
	case "gzip":
		w = gzip.NewWriter(&b)
	case "deflate":
		w = zlib.NewWriter(&b)
	case "raw-deflate":
		w, _ = flate.NewWriter(&b, flate.DefaultCompression)
	default:
		t.Fatalf("no encoder %q", enc)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodedForm(body []byte, encoding string) req {
	return req{method: "POST", uri: "/forms/submit", body: string(body), h: [][2]string{
		{"Content-Type", "application/x-www-form-urlencoded"}, {"Content-Encoding", encoding}}}
}

// TestInspectCompressedBodyIsDecoded: Envoy's ext_authz sends the body as the client sent
// it, so an SQL injection in a gzip or deflate request body must be found in the decoded
// body (an upstream that decodes request bodies would otherwise get it uninspected). CRS
// scores any Content-Encoding (920450) and the binary bytes (920270) at 5 each; a route
// that accepts compressed uploads excludes them, and then only the decoded body decides.
func TestInspectCompressedBodyIsDecoded(t *testing.T) {
	w := mustGet(t, NewRegistry(RegistryOptions{Logger: quiet}), &model.WAFSettings{ExcludeRules: []int{920450, 920270}})
	sqli := []byte("q=" + url.QueryEscape("1' UNION SELECT password FROM users--"))
	for _, c := range []struct{ coder, header string }{
		{"gzip", "gzip"}, {"gzip", "x-gzip"}, {"gzip", "GZIP"}, {"deflate", "deflate"}, {"raw-deflate", "deflate"},
	} {
		v := w.Inspect(context.Background(), encodedForm(compress(t, c.coder, sqli), c.header).check())
		if v.Allowed || v.Status != StatusForbidden || !has942(v.RuleIDs) {
			t.Errorf("%s as %q: want the decoded SQLi blocked by a 942 rule, got %+v", c.coder, c.header, v)
		}
	}
	twice := compress(t, "gzip", compress(t, "deflate", sqli))
	if v := w.Inspect(context.Background(), encodedForm(twice, "deflate, gzip").check()); v.Allowed || !has942(v.RuleIDs) {
		t.Errorf("deflate then gzip: want the SQLi blocked, got %+v", v)
	}
	benign := compress(t, "gzip", []byte("name=alice&city=Berlin"))
	if v := w.Inspect(context.Background(), encodedForm(benign, "gzip").check()); !v.Allowed {
		t.Errorf("a benign gzip form is blocked: %+v", v)
	}
	if v := w.Inspect(context.Background(), encodedForm(sqli, "identity").check()); v.Allowed || !has942(v.RuleIDs) {
		t.Errorf("identity: want the SQLi blocked, got %+v", v)
	}
}

// TestInspectCompressedBodyRefused: a body the WAF cannot decode (an unknown coding, a
// corrupt stream) is refused with 415, and one that decodes past max_request_body_size (a
// decompression bomb) with 413, in block mode; detect mode records and lets them through.
func TestInspectCompressedBodyRefused(t *testing.T) {
	reg := NewRegistry(RegistryOptions{Logger: quiet})
	w := mustGet(t, reg, &model.WAFSettings{MaxRequestBodySize: 64 << 10})
	bomb := compress(t, "gzip", []byte(strings.Repeat("a", 1<<20)))
	for _, c := range []struct {
		name   string
		r      req
		status int
	}{
		{"brotli", encodedForm([]byte("q=1"), "br"), StatusUnsupportedMediaType},
		{"zstd after gzip", encodedForm(compress(t, "gzip", []byte("q=1")), "gzip, zstd"), StatusUnsupportedMediaType},
		{"corrupt gzip", encodedForm([]byte("not gzip at all"), "gzip"), StatusUnsupportedMediaType},
		{"truncated gzip", encodedForm(compress(t, "gzip", []byte("q=1"))[:12], "gzip"), StatusUnsupportedMediaType},
		{"bomb", encodedForm(bomb, "gzip"), StatusBodyTooLarge},
	} {
		v := w.Inspect(context.Background(), c.r.check())
		if v.Allowed || v.Status != c.status || v.Category != CategoryLimits {
			t.Errorf("%s: want %d, got %+v", c.name, c.status, v)
		}
	}
	d := mustGet(t, reg, &model.WAFSettings{Mode: model.WAFModeDetect, MaxRequestBodySize: 64 << 10})
	if v := d.Inspect(context.Background(), encodedForm(bomb, "gzip").check()); !v.Allowed || !v.Detected || v.Status != StatusBodyTooLarge {
		t.Errorf("detect mode bomb: want allowed and recorded as 413, got %+v", v)
	}
}
