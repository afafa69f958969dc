package model

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fieldsOf maps each reported field to its problem.
func fieldsOf(errs FieldErrors) map[string]string {
	m := map[string]string{}
	for _, e := range errs {
		m[e.Field] = e.Problem
	}
	return m
}

// Durations that do not fit a time.Duration (about 292 years) are field errors. "99999999d"
// used to be stored as 1923246h (24h × 99999999 wrapped around int64), and a number of
// seconds such as 1e300 as the most negative duration.
func TestDurationOverflowIsAFieldError(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{in: `"7d"`, want: 7 * 24 * time.Hour},
		{in: `"106751d"`, want: 106751 * 24 * time.Hour}, // the largest whole number of days
		{in: `"30s"`, want: 30 * time.Second},
		{in: `90`, want: 90 * time.Second},
		{in: `"106752d"`, bad: true},
		{in: `"99999999d"`, bad: true},
		{in: `"-99999999d"`, bad: true},
		{in: `"99999999999999999999999d"`, bad: true}, // beyond int64 itself
		{in: `"9999999999h"`, bad: true},
		{in: `1e300`, bad: true},
		{in: `-1e300`, bad: true},
		{in: `9223372037`, bad: true}, // one second more than a Duration holds
	} {
		var r Route
		errs := DecodeStrict([]byte(`{"id":"r","timeout":`+tc.in+`}`), &r)
		f := fieldsOf(errs)
		if tc.bad {
			if !strings.Contains(f["timeout"], "out of range") {
				t.Errorf("timeout %s: errors %v; want timeout out of range", tc.in, errs)
			}
			continue
		}
		if len(errs) != 0 || r.Timeout.D() != tc.want {
			t.Errorf("timeout %s: %v %v; want %v", tc.in, errs, r.Timeout.D(), tc.want)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"99999999d"`), &d); err == nil {
		t.Errorf("Duration.UnmarshalJSON accepted 99999999d as %v", d.D())
	}
	if err := json.Unmarshal([]byte(`1e300`), &d); err == nil {
		t.Errorf("Duration.UnmarshalJSON accepted 1e300 seconds as %v", d.D())
	}
}

// "." and ".." are refused as ids (of every kind): a client removes them from the URL path,
// so the object could never be read or deleted through the API. Ids with a dot inside stay.
func TestIDsThatAreNotPathSegmentsAreRefused(t *testing.T) {
	for _, id := range []string{".", "..", "a/b", "a%2Fb", "a b", "a\x00", "ｒoute", strings.Repeat("a", 129)} {
		r := Route{ID: id}
		if _, ok := fieldsOf(r.Validate())["id"]; !ok {
			t.Errorf("route id %q accepted", id)
		}
		tn := Tenant{ID: id}
		if _, ok := fieldsOf(tn.Validate())["id"]; !ok {
			t.Errorf("tenant id %q accepted", id)
		}
	}
	for _, id := range []string{"a.b", "...", ".well-known", "v1..v2", "r_1-x"} {
		r := Route{ID: id}
		if p, bad := fieldsOf(r.Validate())["id"]; bad {
			t.Errorf("route id %q refused: %s", id, p)
		}
	}
}

// Route hosts are DNS names, "*.name" wildcards, "*", IP literals (IPv6 bracketed), each
// with an optional port. Tab, ';', ',', NUL, CR/LF, spaces, paths, empty ports and
// non-ASCII look-alikes (Cyrillic "е" in "exаmple") used to be accepted.
func TestRouteHostsAreHostNames(t *testing.T) {
	good := []string{"*", "api.example.com", "API.Example.org", "*.example.net", "api.example.com:8443", "api.example.com:*",
		"*.example.net:80", "foo.*", "*:80", "10.0.0.1", "10.0.0.1:8080", "[2001:db8::1]", "[2001:db8::1]:443", "localhost", "xn--bcher-kva.example", "example.com."}
	bad := []string{"", "a\tb.com", "a;b.com", "a,b.com", "a\x00.com", "a.com\r\nX-Evil: 1", "a b.com", "a.com/path",
		"ex\u0430mple.com", "bücher.example", "*\u00a0", "*.", "*.*.example.com", "*:*", "a.com:**", "a.com:", "a.com:0", "a.com:65536",
		"a.com:+80", "a.com:080", "2001:db8::1", "[2001:db8::1", "[10.0.0.1]", "*.10.0.0.1", "-a.com", "a..com",
		strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 140) + "com", "\u202egro.live"}
	r := Route{ID: "r", Conditions: []Condition{{PathPattern: "/"}}, Targets: []Target{{Host: "h", Port: 80}}, Hosts: good}
	if errs := r.Validate(); len(errs) != 0 {
		t.Fatalf("good hosts refused: %v", errs)
	}
	r.Hosts = bad
	f := fieldsOf(r.Validate())
	for i, h := range bad {
		if _, ok := f["hosts["+itoa(i)+"]"]; !ok {
			t.Errorf("host %q accepted", h)
		}
	}
	if len(f) != len(bad) {
		t.Errorf("%d problems for %d bad hosts: %v", len(f), len(bad), f)
	}
	if p := f["hosts[8]"]; !strings.Contains(p, "punycode") {
		t.Errorf("a Cyrillic look-alike: %q; want the punycode hint", p)
	}
}

// sticky_session.path becomes a Set-Cookie Path attribute: CR/LF would split the header, ';'
// would start another attribute. Refused with the field named, like every other bad field of
// the same route, all at once.
func TestStickyPathAndOtherBadFieldsReportedTogether(t *testing.T) {
	for _, p := range []string{"/cart\r\nSet-Cookie: x=1", "/a\nb", "/a;Domain=evil.com", "/a\x00", "/a\x7f", "/é", "/" + strings.Repeat("a", 1024)} {
		r := Route{ID: "r", Conditions: []Condition{{PathPattern: "/"}}, Targets: []Target{{Host: "h", Port: 80}}, StickySession: &StickySession{Path: p}}
		if _, ok := fieldsOf(r.Validate())["sticky_session.path"]; !ok {
			t.Errorf("sticky path %q accepted", p)
		}
	}
	relative := Route{ID: "r", Conditions: []Condition{{PathPattern: "/"}}, Targets: []Target{{Host: "h", Port: 80}}, StickySession: &StickySession{Path: "cart"}}
	if errs := relative.Validate(); len(errs) > 0 {
		t.Errorf("a relative sticky path, which browsers take as the default path, refused: %v", errs)
	}
	var r Route
	body := `{"id":"..","hosts":["a\tb"],"timeout":"99999999d","sticky_session":{"path":"/c\r\n","ttl":1e300},
		"rewrite":{"host":"h;x"},"conditions":[{"path_pattern":"/"}],"targets":[{"host":"h","port":80}]}`
	f := fieldsOf(DecodeStrict([]byte(body), &r))
	for _, field := range []string{"id", "hosts[0]", "timeout", "sticky_session.path", "sticky_session.ttl", "rewrite.host"} {
		if _, ok := f[field]; !ok {
			t.Errorf("%s not reported: %v", field, f)
		}
	}
	if len(f) != 6 {
		t.Errorf("%d problems, want 6: %v", len(f), f)
	}
}

// Envoy's other wildcard forms were accepted before hosts were validated and the translator
// passes every host with a '*' through unchanged: a suffix wildcard is a leading '*' before
// any suffix ("*-bar.foo.com", "*:8080" for any host on that port), a prefix wildcard a
// trailing '*' ("foo.*", "foo-*"). They must still be accepted; a '*' anywhere else, two of
// them, or a wildcard around nothing usable is not a domain Envoy can match.
func TestRouteHostsAcceptEnvoyPrefixAndSuffixWildcards(t *testing.T) {
	good := []string{"*-bar.example.com", "*bar.example.com", "*:8080", "*.example.com", "api.*", "api-*", "api.example.*", "10.0.0.*"}
	bad := []string{"a*b.example.com", "*api*", "**", "*:*", "*-", "-*", ".*", "*..com", "api.*:80", "[::1]*", "api:8*", "*:0", "*:99999", "*-bar..com"}
	r := Route{ID: "r", Conditions: []Condition{{PathPattern: "/"}}, Targets: []Target{{Host: "h", Port: 80}}, Hosts: good}
	if errs := r.Validate(); len(errs) != 0 {
		t.Fatalf("Envoy wildcard hosts refused: %v", errs)
	}
	r.Hosts = bad
	f := fieldsOf(r.Validate())
	for i, h := range bad {
		if _, ok := f["hosts["+itoa(i)+"]"]; !ok {
			t.Errorf("host %q accepted", h)
		}
	}
	// rewrite.host is a Host header value: no wildcard at all.
	r.Hosts, r.Rewrite = nil, &Rewrite{Host: "api.*"}
	if f := fieldsOf(r.Validate()); f["rewrite.host"] == "" {
		t.Errorf("rewrite.host %q accepted", r.Rewrite.Host)
	}
}

// A unit without a number is a typo, not an overflow: only a well-formed duration too large
// for a time.Duration is reported as out of range.
func TestDurationUnitWithoutNumberIsNotOutOfRange(t *testing.T) {
	for _, s := range []string{"s", ".s", "ms", "-h", "1h.m", "."} {
		_, err := ParseDuration(s)
		if err == nil || strings.Contains(err.Error(), "out of range") {
			t.Errorf("%q: %v; want \"not a duration\"", s, err)
		}
	}
	for _, s := range []string{"9999999999h", ".5s9999999999h", "2562048h", "9223372036854775808ns"} {
		if _, err := ParseDuration(s); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%q: %v; want out of range", s, err)
		}
	}
}

// Every policy of a route is one descriptor of each rate-limit call; past the service's cap the
// call would be refused and Envoy would let the request through unlimited, so the model caps a
// route's and the settings' policies.
func TestRateLimitPoliciesPerScopeCapped(t *testing.T) {
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("p%d", i)
		}
		return out
	}
	at := RouteRateLimit{Policies: ids(MaxPoliciesPerScope)}
	if errs := at.Validate(); len(errs) > 0 {
		t.Fatalf("%d policies refused: %v", MaxPoliciesPerScope, errs)
	}
	over := RouteRateLimit{Policies: ids(MaxPoliciesPerScope), Limits: []RateLimit{{RequestsPerUnit: 1, TimeUnit: Duration(time.Second)}}}
	if _, ok := fieldsOf(over.Validate())["policies"]; !ok {
		t.Fatalf("%d policies and a limit accepted on a route", MaxPoliciesPerScope)
	}
	global := GlobalRateLimit{Policies: ids(MaxPoliciesPerScope + 1)}
	if _, ok := fieldsOf(global.Validate())["policies"]; !ok {
		t.Fatalf("%d global policies accepted", MaxPoliciesPerScope+1)
	}
}

// A wrong JSON type or an unknown field does not hide the other problems of the body: the
// refused values are taken out and the rest is validated, so every bad field is named at
// once (and nothing is named twice, nor inside a value already refused).
func TestEveryBadFieldAtOnceWhateverItsKind(t *testing.T) {
	body := `{"id":"r","conditions":[{"path_pattern":"/a"}],"timeout":"30 seconds","load_balance":"fastest",
		"retries":"three","colour":"blue","targets":[{"host":"h","port":70000},{"host":7,"port":80}],
		"sticky_session":"yes"}`
	var r Route
	got := fieldsOf(DecodeStrict([]byte(body), &r))
	want := []string{"timeout", "load_balance", "retries", "colour", "targets[0].port", "targets[1].host", "sticky_session"}
	for _, f := range want {
		if _, ok := got[f]; !ok {
			t.Errorf("%s not reported; got %v", f, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("reported %v, want exactly %v", got, want)
	}
}
