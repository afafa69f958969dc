package model

import (
	"encoding/json"
	"regexp"
	"testing"
	"time"
)

func TestParsePathPattern(t *testing.T) {
	cases := []struct {
		in    string
		kind  PathKind
		value string
		match []string
		miss  []string
		bad   bool
	}{
		{in: "/health", kind: PathExact, value: "/health"},
		{in: "/api/v1/users/*", kind: PathPrefix, value: "/api/v1/users/"},
		{in: "/*", kind: PathPrefix, value: "/"},
		{in: "/", kind: PathPrefix, value: "/"},
		{in: "/static*", kind: PathPrefix, value: "/static"},
		{in: "/users/{id}/orders", kind: PathTemplate, match: []string{"/users/42/orders"}, miss: []string{"/users/42/x/orders", "/users//orders", "/users/42/orders/1"}},
		{in: "/files/{path=**}", kind: PathTemplate, match: []string{"/files/a/b/c", "/files/"}, miss: []string{"/file/a"}},
		{in: "/a.b/{x}", kind: PathTemplate, match: []string{"/a.b/1"}, miss: []string{"/aXb/1"}},
		{in: "users", bad: true},
		{in: "/users/{id", bad: true},
		{in: "/a/*/b*", bad: true},
		{in: "/{x}/{x}", bad: true},
		{in: "/{rest=**}/tail", bad: true},
		{in: "/a b", bad: true},
	}
	for _, c := range cases {
		pm, err := ParsePathPattern(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%q: want an error", c.in)
			}
			continue
		}
		if err != nil || pm.Kind != c.kind || (c.value != "" && pm.Value != c.value) {
			t.Errorf("%q: %+v %v", c.in, pm, err)
			continue
		}
		if pm.Kind == PathTemplate {
			re := regexp.MustCompile(pm.Regex)
			for _, m := range c.match {
				if !re.MatchString(m) {
					t.Errorf("%q (%s) should match %q", c.in, pm.Regex, m)
				}
			}
			for _, m := range c.miss {
				if re.MatchString(m) {
					t.Errorf("%q (%s) should not match %q", c.in, pm.Regex, m)
				}
			}
		}
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{`"30s"`: 30 * time.Second, `"1m"`: time.Minute, `"24h"`: 24 * time.Hour, `"7d"`: 7 * 24 * time.Hour, `1.5`: 1500 * time.Millisecond} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || d.D() != want {
			t.Errorf("%s: %v %v", in, d, err)
		}
	}
	for _, in := range []string{`"30 seconds"`, `"abc"`, `true`} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("%s: want an error", in)
		}
	}
	b, _ := json.Marshal(Duration(90 * time.Second))
	if string(b) != `"1m30s"` {
		t.Errorf("marshal: %s", b)
	}
}

func TestDecodeStrict(t *testing.T) {
	var r Route
	errs := DecodeStrict([]byte(`{"id":"x","conditions":[{"path_pattern":"/a","headers":[{"name":"x","exact":1}]}],"targets":[{"host":"h","port":"80","bogus":1}],"timeout":"2 minutes","revision":3,"created_at":"yesterday"}`), &r)
	want := map[string]bool{"conditions[0].headers[0].exact": true, "targets[0].port": true, "targets[0].bogus": true, "timeout": true, "created_at": true}
	got := map[string]bool{}
	for _, e := range errs {
		got[e.Field] = true
	}
	for f := range want {
		if !got[f] {
			t.Errorf("missing problem for %s in %v", f, errs)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("unexpected problems: %v", errs)
	}
	if errs := DecodeStrict([]byte(`{"id":`), &r); len(errs) != 1 || errs[0].Field != "" {
		t.Errorf("malformed: %v", errs)
	}
	var ok Route
	if errs := DecodeStrict([]byte(`{"id":"x","revision":5,"require_auth":false,"targets":[{"host":"h","port":80,"weight":null}]}`), &ok); len(errs) != 0 || ok.Revision != 5 || ok.AuthRequired() {
		t.Errorf("valid body: %v %+v", errs, ok)
	}
}

func TestRouteValidateTargets(t *testing.T) {
	w0 := 0
	r := Route{ID: "r", Conditions: []Condition{{PathPattern: "/"}}, Targets: []Target{{Host: "a", Port: 1, Weight: &w0}, {Service: "svc", Weight: &w0}}}
	errs := r.Validate()
	if len(errs) != 1 || errs[0].Field != "targets" {
		t.Fatalf("all-zero weights: %v", errs)
	}
	r.Targets = []Target{{Host: "a", Service: "b"}, {Host: "bad host!", Port: 80}, {Host: "2001:db8::1", Port: 443}}
	errs = r.Validate()
	fields := map[string]bool{}
	for _, e := range errs {
		fields[e.Field] = true
	}
	if !fields["targets[0].service"] || !fields["targets[1].host"] || fields["targets[2].host"] {
		t.Fatalf("target checks: %v", errs)
	}
}

func TestServiceServing(t *testing.T) {
	now := time.Now()
	s := Service{TTL: Duration(10 * time.Second), LastHeartbeat: now.Add(-5 * time.Second)}
	if !s.Serving(now) {
		t.Fatal("fresh instance must serve")
	}
	if s.Serving(now.Add(6 * time.Second)) {
		t.Fatal("instance past its TTL must not serve")
	}
	s.Status = StatusUnhealthy
	if s.Serving(now) {
		t.Fatal("unhealthy instance must not serve")
	}
}
