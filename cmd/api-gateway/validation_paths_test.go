package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/ratelimit"
)

// One table of bad inputs, each a declarative file and the same objects as API bodies, run
// through the three ways a configuration comes in: the REST API of a running gateway,
// `api-gateway validate -f`, and `serve --config`. All three must name the same problems on
// the same objects and fields (and validate exactly serve's, lines included); the test uses
// only what a user sees (HTTP answers, validate's output, serve's refusal), so it holds
// whichever package owns each check.

// problem is one reported problem, as comparable across the three paths.
type problem struct{ Object, Field, Problem string }

func (p problem) String() string { return p.Object + ": " + p.Field + ": " + p.Problem }

// fileObj is one object of a row: its file section and YAML, which is also its API body.
type fileObj struct {
	section string // routes, services, api_keys, rate_limits, ip_rules, policies, tenants, settings
	yaml    string // the object as a block mapping, not indented
}

// want is an expected problem, with a text the problem contains and a text on the line a
// file path must name (unique in the file).
type want struct {
	object, field, contains, at string
}

type validationCase struct {
	name string
	objs []fileObj
	// want: reported by all three paths.
	want []want
	// fileOnly: reported by the file paths alone. The API takes one object at a time: the
	// first of two conflicting routes is valid when it is written, and the second is
	// refused; a file holds both at once, so each conflicts with the other.
	fileOnly []want
	// bodies, when set, are the objects' API bodies (one per obj; "" = the YAML as JSON),
	// for rows whose point is a spelling that converting the YAML would lose (a key written
	// twice, a whole number written as a float).
	bodies []string
}

var validationCases = []validationCase{
	{
		name: "two conflicting routes",
		objs: []fileObj{
			{"routes", "id: vp-a\nconditions:\n  - path_prefix: /vp-same\ntargets:\n  - host: 127.0.0.1\n    port: 9001\nrequire_auth: false\n"},
			{"routes", "id: vp-b\nconditions:\n  - path_prefix: \"/vp-same\"\ntargets:\n  - host: 127.0.0.1\n    port: 9002\nrequire_auth: false\n"},
		},
		want:     []want{{"routes/vp-b", "conditions[0]", `conflicts with route "vp-a"`, `path_prefix: "/vp-same"`}},
		fileOnly: []want{{"routes/vp-a", "conditions[0]", `conflicts with route "vp-b"`, "path_prefix: /vp-same\n"}},
	},
	{
		name: "a route to an unknown service",
		objs: []fileObj{
			{"routes", "id: vp-svc\nconditions:\n  - path_prefix: /vp-svc\ntargets:\n  - service: vp-nosuch\nrequire_auth: false\n"},
		},
		want: []want{{"routes/vp-svc", "targets[0].service", `no service named "vp-nosuch"`, "service: vp-nosuch"}},
	},
	{
		name: "an invalid CEL rule",
		objs: []fileObj{
			{"policies", "id: vp-cel\nrules:\n  - expression: \"request.method == (((\"\n    action: deny\n"},
		},
		want: []want{{"policies/vp-cel", "rules[0].expression", "Syntax error", "expression:"}},
	},
	{
		name: "one wrong type and two bad values",
		objs: []fileObj{
			{"routes", "id: vp-types\nconditions:\n  - path_prefix: /vp-types\ntargets:\n  - host: 127.0.0.1\n    port: 70000\ntimeout: 30 seconds\nload_balance: fastest\nrequire_auth: false\n"},
		},
		want: []want{
			{"routes/vp-types", "timeout", "is not a duration", "timeout: 30 seconds"},
			{"routes/vp-types", "load_balance", "must be one of", "load_balance: fastest"},
			{"routes/vp-types", "targets[0].port", "must be 1-65535", "port: 70000"},
		},
	},
	{
		// One object's wrong type does not hide another object's bad reference or rule.
		name: "a wrong type in one object, a bad reference and a bad rule in others",
		objs: []fileObj{
			{"routes", "id: vp-mix-types\nconditions:\n  - path_prefix: /vp-mix-types\ntargets:\n  - host: 127.0.0.1\n    port: 9001\nretries: three\nrequire_auth: false\n"},
			{"routes", "id: vp-mix-svc\nconditions:\n  - path_prefix: /vp-mix-svc\ntargets:\n  - service: vp-mix-nosuch\nrequire_auth: false\n"},
			{"policies", "id: vp-mix-cel\nrules:\n  - expression: \"1 +\"\n    action: deny\n"},
		},
		want: []want{
			{"routes/vp-mix-types", "retries", "must be a whole number", "retries: three"},
			{"routes/vp-mix-svc", "targets[0].service", `no service named "vp-mix-nosuch"`, "service: vp-mix-nosuch"},
			{"policies/vp-mix-cel", "rules[0].expression", "Syntax error", "expression:"},
		},
	},
	{
		// In one object too: a wrong type, a bad value, an unknown service, a missing
		// policy and a WAF rule that does not compile are reported together.
		name: "a wrong type, a bad value and bad references in one route",
		objs: []fileObj{
			{"routes", "id: vp-one\nconditions:\n  - path_prefix: /vp-one\ntargets:\n  - service: vp-one-nosuch\nretries: three\nauth:\n  policies: [vp-one-nopolicy]\nwaf:\n  custom_rules: 'SecRule ARGS \"@nosuchop x\" \"id:9003,deny\"'\n"},
			{"routes", "id: vp-two\nconditions:\n  - path_prefix: /vp-two\ntargets:\n  - host: 127.0.0.1\n    port: 9001\nload_balance: fastest\nauth:\n  policies: [vp-two-nopolicy]\n"},
		},
		want: []want{
			{"routes/vp-one", "retries", "must be a whole number", "retries: three"},
			{"routes/vp-one", "targets[0].service", `no service named "vp-one-nosuch"`, "service: vp-one-nosuch"},
			{"routes/vp-one", "auth.policies[0]", `no policy "vp-one-nopolicy"`, "policies: [vp-one-nopolicy]"},
			{"routes/vp-one", "waf.custom_rules", "", "custom_rules:"},
			{"routes/vp-two", "load_balance", "must be one of", "load_balance: fastest"},
			{"routes/vp-two", "auth.policies[0]", `no policy "vp-two-nopolicy"`, "policies: [vp-two-nopolicy]"},
		},
	},
	{
		name: "a WAF rule that does not compile",
		objs: []fileObj{
			{"routes", "id: vp-waf\nconditions:\n  - path_prefix: /vp-waf\ntargets:\n  - host: 127.0.0.1\n    port: 9001\nrequire_auth: false\nwaf:\n  custom_rules: 'SecRule ARGS \"@nosuchop x\" \"id:9001,deny\"'\n"},
		},
		want: []want{{"routes/vp-waf", "waf.custom_rules", "", "custom_rules:"}},
	},
	{
		name: "references to objects that do not exist",
		objs: []fileObj{
			{"routes", "id: vp-refs\nconditions:\n  - path_prefix: /vp-refs\ntargets:\n  - host: 127.0.0.1\n    port: 9001\nauth:\n  policies: [vp-nopolicy]\n  ip_rules: [vp-norule]\nrate_limit:\n  policies: [vp-nolimit]\n"},
		},
		want: []want{
			{"routes/vp-refs", "auth.policies[0]", `no policy "vp-nopolicy"`, "policies: [vp-nopolicy]"},
			{"routes/vp-refs", "auth.ip_rules[0]", `no ip-rule "vp-norule"`, "ip_rules: [vp-norule]"},
			{"routes/vp-refs", "rate_limit.policies[0]", `no rate-limit "vp-nolimit"`, "policies: [vp-nolimit]"},
		},
	},
	{
		name: "wrong types and bad values in a service",
		objs: []fileObj{
			{"services", "id: vp-svc1\nname: vp-users\nhost: 10.0.0.1\nport: 70000\nttl: 30 seconds\nprotocol: carrier-pigeon\nweight: heavy\n"},
		},
		want: []want{
			{"services/vp-svc1", "port", "must be 1-65535", "port: 70000"},
			{"services/vp-svc1", "ttl", "is not a duration", "ttl: 30 seconds"},
			{"services/vp-svc1", "protocol", "must be", "protocol: carrier-pigeon"},
			{"services/vp-svc1", "weight", "must be a whole number", "weight: heavy"},
		},
	},
	{
		name: "wrong types and bad values in an IP rule, a rate limit, a tenant",
		objs: []fileObj{
			{"ip_rules", "id: vp-ipr\naction: maybe\ncidrs: [300.0.0.0/8]\nexpires_at: tomorrow\n"},
			{"rate_limits", "id: vp-rl\nstrategy: fastest\nrequests_per_unit: lots\ntime_unit: 30 seconds\n"},
			{"tenants", "id: vp-tenant\ndisabled: perhaps\nsurname: x\n"},
		},
		want: []want{
			{"ip-rules/vp-ipr", "action", "must be allow or deny", "action: maybe"},
			{"ip-rules/vp-ipr", "cidrs[0]", "must be an IP address or CIDR", "cidrs: [300.0.0.0/8]"},
			{"ip-rules/vp-ipr", "expires_at", "RFC 3339", "expires_at: tomorrow"},
			{"rate-limits/vp-rl", "strategy", "must be one of", "strategy: fastest"},
			{"rate-limits/vp-rl", "requests_per_unit", "must be a whole number", "requests_per_unit: lots"},
			{"rate-limits/vp-rl", "time_unit", "is not a duration", "time_unit: 30 seconds"},
			{"tenants/vp-tenant", "disabled", "must be true or false", "disabled: perhaps"},
			{"tenants/vp-tenant", "surname", "unknown field", "surname: x"},
		},
	},
	{
		name: "bad API key and policy fields",
		objs: []fileObj{
			{"api_keys", "id: vp-key\nname: ci\nexpires_at: soon\nrestrictions:\n  allowed_ips: [not-an-ip]\nscopes: read\n"},
			{"policies", "id: vp-pol\nrules:\n  - expression: \"true\"\n    action: shrug\n    status: 700\n"},
		},
		want: []want{
			{"api-keys/vp-key", "expires_at", "RFC 3339", "expires_at: soon"},
			{"api-keys/vp-key", "restrictions.allowed_ips[0]", "must be an IP address or CIDR", "allowed_ips: [not-an-ip]"},
			{"api-keys/vp-key", "scopes", "must be an array", "scopes: read"},
			{"policies/vp-pol", "rules[0].action", "must be allow or deny", "action: shrug"},
			{"policies/vp-pol", "rules[0].status", "must be 400-599", "status: 700"},
		},
	},
	{
		name: "settings with a wrong type and a bad value",
		objs: []fileObj{
			{"settings", "auth:\n  trusted_proxy_hops: two\n  max_token_bytes: -1\n"},
		},
		want: []want{
			{"settings/global", "auth.trusted_proxy_hops", "must be a whole number", "trusted_proxy_hops: two"},
			{"settings/global", "auth.max_token_bytes", "must not be negative", "max_token_bytes: -1"},
		},
	},
	{
		name: "settings whose WAF rule does not compile",
		objs: []fileObj{
			{"settings", "waf:\n  enabled: true\n  custom_rules: 'SecRule ARGS \"@nosuchop x\" \"id:9002,deny\"'\n"},
		},
		want: []want{{"settings/global", "waf.custom_rules", "", "custom_rules:"}},
	},
	{
		name: "a wrong type in one rule and a rule that does not compile in the same policy",
		objs: []fileObj{
			{"policies", "id: vp-pol2\nrules:\n  - expression: 5\n    action: maybe\n  - expression: \"1 +\"\n    action: deny\n"},
		},
		want: []want{
			{"policies/vp-pol2", "rules[0].expression", "must be a string", "expression: 5"},
			{"policies/vp-pol2", "rules[0].action", "must be allow or deny", "action: maybe"},
			{"policies/vp-pol2", "rules[1].expression", "Syntax error", "expression: \"1 +\""},
		},
	},
	{
		name: "settings with a wrong type and a WAF rule that does not compile",
		objs: []fileObj{
			{"settings", "auth:\n  trusted_proxy_hops: two\nwaf:\n  enabled: true\n  custom_rules: 'SecRule ARGS \"@nosuchop x\" \"id:9004,deny\"'\n"},
		},
		want: []want{
			{"settings/global", "auth.trusted_proxy_hops", "must be a whole number", "trusted_proxy_hops: two"},
			{"settings/global", "waf.custom_rules", "", "custom_rules:"},
		},
	},
	{
		name: "a key written twice",
		objs: []fileObj{
			{"tenants", "id: vp-dup\nname: first\nname: second\nmetadata:\n  team: a\n  team: b\n"},
		},
		bodies: []string{`{"id":"vp-dup","name":"first","name":"second","metadata":{"team":"a","team":"b"}}`},
		want: []want{
			{"tenants/vp-dup", "name", "written twice", "name: second"},
			{"tenants/vp-dup", "metadata.team", "written twice", "team: b"},
		},
	},
	{
		name: "a whole number written as a float",
		objs: []fileObj{
			{"services", "id: vp-float\nname: vp-users\nhost: 10.0.0.1\nport: 80.0\n"},
		},
		bodies: []string{`{"id":"vp-float","name":"vp-users","host":"10.0.0.1","port":80.0}`},
		want:   []want{{"services/vp-float", "port", "must be a whole number", "port: 80.0"}},
	},
	{
		name: "a policy whose bucket takes longer to refill than the rate-limit service counts",
		objs: []fileObj{
			{"rate_limits", "id: vp-slow\nalgorithm: token_bucket\nrequests_per_unit: 1\ntime_unit: 24h\nburst_capacity: 100000\n"},
		},
		want: []want{{"rate-limits/vp-slow", "burst_capacity", "to refill", "burst_capacity: 100000"}},
	},
	{
		name: "two domain configs holding one descriptor",
		objs: []fileObj{
			{"rate_limits", "id: vp-dom-a\ndomain: vp-dom\ndescriptors:\n  - key: vp-k\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n"},
			{"rate_limits", "id: vp-dom-b\ndomain: vp-dom\ndescriptors:\n  - key: \"vp-k\"\n    rate_limit:\n      unit: minute\n      requests_per_unit: 1\n"},
		},
		want:     []want{{"rate-limits/vp-dom-b", "descriptors[0]", "in rate-limits/vp-dom-a too", `key: "vp-k"`}},
		fileOnly: []want{{"rate-limits/vp-dom-a", "descriptors[0]", "in rate-limits/vp-dom-b too", "key: vp-k\n"}},
	},
	{
		name: "a domain descriptor nested deeper than a rate-limit request carries",
		objs: []fileObj{{"rate_limits", deepDomainYAML("vp-deep", ratelimit.MaxDescriptorEntries+1)}},
		want: []want{{"rate-limits/vp-deep", "descriptors[0]" + strings.Repeat(".descriptors[0]", ratelimit.MaxDescriptorEntries), "nested 33 deep", "key: vp-deep-33"}},
	},
	{
		name: "a route with more rate limits than the rate-limit service enforces",
		objs: []fileObj{{"routes", "id: vp-wide\nconditions:\n  - path_prefix: /vp-wide\ntargets:\n  - host: 127.0.0.1\n    port: 9001\nrequire_auth: false\nrate_limit:\n" +
			inlineLimitsYAML(model.MaxPoliciesPerScope+1)}},
		want: []want{{"routes/vp-wide", "rate_limit.policies", "33 policies and inline limits; at most 32", "rate_limit:"}},
	},
	{
		name: "a route with targets and a redirect, a route with neither",
		objs: []fileObj{
			{"routes", "id: vp-both\nconditions:\n  - path_prefix: /vp-both\ntargets:\n  - host: 127.0.0.1\n    port: 9001\nredirect:\n  https: true\nrequire_auth: false\n"},
			{"routes", "id: vp-none\nconditions:\n  - path_prefix: /vp-none\nrequire_auth: false\n"},
		},
		want: []want{
			{"routes/vp-both", "redirect", "set only one of targets, redirect, direct_response", "redirect:"},
			{"routes/vp-none", "targets", "at least one target is required (or set redirect or direct_response)", "id: vp-none"},
		},
	},
	{
		name: "bad redirect and direct response fields",
		objs: []fileObj{
			{"routes", "id: vp-redir\nconditions:\n  - path_pattern: /vp-redir\nredirect:\n  status: 304\n  host: vp.example.com/evil\n  prefix: /vp-new/\ntimeout: 5s\nrequire_auth: false\n"},
			{"routes", "id: vp-direct\nconditions:\n  - path_prefix: /vp-direct\ndirect_response:\n  status: 700\n  body: " + strings.Repeat("b", model.MaxDirectResponseBody+1) + "\n  content_type: \"text/html\\r\\nSet-Cookie: a=b\"\nrequire_auth: false\n"},
		},
		want: []want{
			{"routes/vp-redir", "redirect.status", "must be 301, 302, 303, 307 or 308", "status: 304"},
			{"routes/vp-redir", "redirect.host", "must be a DNS name", "host: vp.example.com/evil"},
			{"routes/vp-redir", "redirect.prefix", "needs a prefix match", "prefix: /vp-new/"},
			{"routes/vp-redir", "timeout", "applies to targets only", "timeout: 5s"},
			{"routes/vp-direct", "direct_response.status", "must be an HTTP status 200-599", "status: 700"},
			{"routes/vp-direct", "direct_response.body", "must be at most 4096 bytes", "body: bbb"},
			{"routes/vp-direct", "direct_response.content_type", "no CR, LF, NUL", "content_type:"},
		},
	},
	{
		name: "settings with more global rate limits than the rate-limit service enforces",
		objs: []fileObj{{"settings", "rate_limit:\n" + inlineLimitsYAML(model.MaxPoliciesPerScope+1)}},
		want: []want{{"settings/global", "rate_limit.policies", "33 policies and inline limits; at most 32", "rate_limit:"}},
	},
}

// fileText is a row's objects as one declarative file.
func (c validationCase) fileText() string {
	var b strings.Builder
	var sections []string
	for _, o := range c.objs {
		if !slices.Contains(sections, o.section) {
			sections = append(sections, o.section)
		}
	}
	for _, s := range sections {
		b.WriteString(s + ":\n")
		for _, o := range c.objs {
			if o.section != s {
				continue
			}
			indent, first := "  ", "  - "
			if s == "settings" {
				first = "  "
			}
			for i, line := range strings.Split(strings.TrimRight(o.yaml, "\n"), "\n") {
				if i == 0 {
					b.WriteString(first + line + "\n")
				} else if s == "settings" {
					b.WriteString(indent + line + "\n")
				} else {
					b.WriteString(indent + "  " + line + "\n")
				}
			}
		}
	}
	return b.String()
}

func TestValidationPathsAgree(t *testing.T) {
	dir := t.TempDir()
	type fileRun struct{ validate, serve []manage.FileProblem }
	files := map[string]string{}
	runs := map[string]fileRun{}
	// The file paths first: each serve --config run is a gateway start that must refuse
	// the file and stop before it listens.
	for i, c := range validationCases {
		file := filepath.Join(dir, fmt.Sprintf("case%d.yaml", i))
		if err := os.WriteFile(file, []byte(c.fileText()), 0o644); err != nil {
			t.Fatal(err)
		}
		files[c.name] = file
		runs[c.name] = fileRun{validate: validateProblems(t, file), serve: serveConfigProblems(t, file)}
	}
	gw := startInProcessGateway(t)
	for _, c := range validationCases {
		t.Run(c.name, func(t *testing.T) {
			file, run := files[c.name], runs[c.name]
			text, _ := os.ReadFile(file)
			// validate is serve --config minus the swap: the same problems, lines included.
			if got, want := fileProblemLines(run.validate), fileProblemLines(run.serve); !slices.Equal(got, want) {
				t.Errorf("validate -f and serve --config disagree\nvalidate:\n  %s\nserve:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			api := gw.apply(t, c)
			wantAll := c.want
			checkProblems(t, "the API", api, wantAll)
			checkProblems(t, "validate -f", asProblems(run.validate), append(slices.Clone(wantAll), c.fileOnly...))
			checkProblems(t, "serve --config", asProblems(run.serve), append(slices.Clone(wantAll), c.fileOnly...))
			// File problems name the line of their field.
			for _, w := range append(slices.Clone(wantAll), c.fileOnly...) {
				wantLine := lineContaining(t, string(text), w.at)
				for _, p := range run.validate {
					if p.Object == w.object && p.Field == w.field && p.Line != wantLine {
						t.Errorf("%s %s: line %d, want %d (%q)", w.object, w.field, p.Line, wantLine, w.at)
					}
				}
			}
		})
	}
}

func lineContaining(t *testing.T, text, at string) int {
	t.Helper()
	if strings.Count(text, at) != 1 {
		t.Fatalf("%q is not once in the file:\n%s", at, text)
	}
	return 1 + strings.Count(text[:strings.Index(text, at)], "\n")
}

// checkProblems asserts that got holds exactly the wanted problems, each once.
func checkProblems(t *testing.T, path string, got []problem, want []want) {
	t.Helper()
	matched := make([]bool, len(got))
	for _, w := range want {
		found := false
		for i, p := range got {
			if !matched[i] && p.Object == w.object && p.Field == w.field && strings.Contains(p.Problem, w.contains) {
				matched[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("%s: missing %s: %s (%q); got:\n  %s", path, w.object, w.field, w.contains, joinProblems(got))
		}
	}
	for i, p := range got {
		if !matched[i] {
			t.Errorf("%s: unexpected problem %s", path, p)
		}
	}
}

func joinProblems(ps []problem) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, "\n  ")
}

func asProblems(fps []manage.FileProblem) []problem {
	out := make([]problem, len(fps))
	for i, p := range fps {
		out[i] = problem{p.Object, p.Field, p.Problem}
	}
	return out
}

func fileProblemLines(fps []manage.FileProblem) []string {
	out := make([]string, len(fps))
	for i, p := range fps {
		out[i] = p.String()
	}
	slices.Sort(out)
	return out
}

// validateProblems runs `api-gateway validate -f file`, which must fail, and reads its
// problems back from its output (one FileProblem.String() a line).
func validateProblems(t *testing.T, file string) []manage.FileProblem {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := runValidate([]string{"-f", file}, &out, &errOut); code != 1 {
		t.Fatalf("validate %s: exit %d\n%s%s", file, code, out.String(), errOut.String())
	}
	var probs []manage.FileProblem
	sc := bufio.NewScanner(&errOut)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	prefix := file + ":"
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue // the summary line
		}
		probs = append(probs, parseProblemLine(t, file, line))
	}
	return probs
}

// parseProblemLine reads "file:line: object: field: problem" (object and field optional; an
// object is kind/id, a field a JSON path, neither holds a space).
func parseProblemLine(t *testing.T, file, line string) manage.FileProblem {
	t.Helper()
	p := manage.FileProblem{File: file}
	rest := strings.TrimPrefix(line, file+":")
	n, rest, ok := strings.Cut(rest, ": ")
	if !ok {
		t.Fatalf("not a problem line: %q", line)
	}
	if _, err := fmt.Sscan(n, &p.Line); err != nil {
		t.Fatalf("no line number in %q", line)
	}
	for _, dst := range []*string{&p.Object, &p.Field} {
		tok, after, ok := strings.Cut(rest, ": ")
		if !ok || strings.ContainsAny(tok, " \t") {
			break
		}
		if dst == &p.Object && !strings.Contains(tok, "/") {
			continue // no object: tok may be the field
		}
		*dst, rest = tok, after
	}
	p.Problem = rest
	if p.String() != line {
		t.Fatalf("problem line %q reads back as %q", line, p.String())
	}
	return p
}

// serveConfigProblems starts the gateway with --config file, in process as main would, and
// returns the problems it logs when it refuses the file; it must refuse it.
func serveConfigProblems(t *testing.T, file string) []manage.FileProblem {
	t.Helper()
	cfg := gatewayConfig(t)
	cfg.ConfigFile = file
	var logs syncBuf
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := serve(ctx, cfg, log)
	if err == nil || !strings.Contains(err.Error(), "config file "+file) {
		t.Fatalf("serve --config %s: %v\n%s", file, err, logs.String())
	}
	var probs []manage.FileProblem
	dec := json.NewDecoder(strings.NewReader(logs.String()))
	for {
		var rec struct {
			Msg string `json:"msg"`
			manage.FileProblem
		}
		if err := dec.Decode(&rec); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if rec.Msg == "config file problem" {
			probs = append(probs, rec.FileProblem)
		}
	}
	if len(probs) == 0 {
		t.Fatalf("serve refused %s without naming a problem: %v", file, err)
	}
	return probs
}

// gatewayConfig is serve's configuration from the environment main reads, on free
// loopback ports and a new data directory.
func gatewayConfig(t *testing.T) config {
	t.Helper()
	for k, v := range map[string]string{
		"PORT": fmt.Sprint(testutil.FreePort(t)), "GRPC_PORT": fmt.Sprint(testutil.FreePort(t)), "METRICS_PORT": fmt.Sprint(testutil.FreePort(t)),
		"BIND_ADDRESS": "127.0.0.1", "DATA_DIR": t.TempDir(), "ADMIN_TOKEN": "validation-paths-admin-token", "REDIS_URL": "",
	} {
		t.Setenv(k, v)
	}
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// inProcessGateway is serve running in this process, as main runs it.
type inProcessGateway struct {
	base, token string
}

func startInProcessGateway(t *testing.T) *inProcessGateway {
	t.Helper()
	cfg := gatewayConfig(t)
	var logs syncBuf
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	g := &inProcessGateway{base: fmt.Sprintf("http://127.0.0.1:%d", cfg.Port), token: cfg.AdminToken}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("serve stopped at start: %v\n%s", err, logs.String())
		default:
		}
		if res, err := http.Get(g.base + "/ready"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var apiCollections = map[string]string{
	"routes": "routes", "services": "services", "api_keys": "api-keys", "rate_limits": "rate-limits",
	"ip_rules": "ip-rules", "policies": "policies", "tenants": "tenants", "settings": "settings",
}

// apply writes a row's objects through the API in order and returns the problems of the
// writes it refuses; what it accepts is deleted again (settings put back) afterwards.
func (g *inProcessGateway) apply(t *testing.T, c validationCase) []problem {
	t.Helper()
	var probs []problem
	var created []string
	for i, o := range c.objs {
		var v any
		var body []byte
		if i < len(c.bodies) && c.bodies[i] != "" {
			body = []byte(c.bodies[i])
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := yaml.Unmarshal([]byte(o.yaml), &v); err != nil {
				t.Fatal(err)
			}
			var err error
			if body, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		coll := apiCollections[o.section]
		method, path, id := "POST", "/api/v1/management/"+coll, "global"
		if o.section == "settings" {
			method = "PUT"
		} else {
			id, _ = v.(map[string]any)["id"].(string)
		}
		code, answer := g.do(t, method, path, body)
		ref := coll + "/" + id
		switch {
		case code < 300:
			if o.section != "settings" {
				created = append(created, path+"/"+id)
			} else {
				created = append(created, "settings")
			}
		case code == http.StatusBadRequest || code == http.StatusConflict:
			var eb manage.ErrorBody
			if err := json.Unmarshal(answer, &eb); err != nil {
				t.Fatalf("%s %s: %d %s", method, path, code, answer)
			}
			if eb.Error.Code != manage.CodeInvalid && eb.Error.Code != manage.CodeRevisionRefused {
				t.Fatalf("%s %s: %d %s", method, path, code, answer)
			}
			for _, d := range eb.Error.Details {
				probs = append(probs, problem{ref, d.Field, d.Problem})
			}
		default:
			t.Fatalf("%s %s: %d %s", method, path, code, answer)
		}
	}
	for i := len(created) - 1; i >= 0; i-- {
		if created[i] == "settings" {
			if code, answer := g.do(t, "PUT", "/api/v1/management/settings", []byte(`{}`)); code != 200 {
				t.Fatalf("restore settings: %d %s", code, answer)
			}
			continue
		}
		if code, answer := g.do(t, "DELETE", created[i], nil); code != 204 {
			t.Fatalf("DELETE %s: %d %s", created[i], code, answer)
		}
	}
	return probs
}

func (g *inProcessGateway) do(t *testing.T, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+g.token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, raw
}

// deepDomainYAML is a domain config whose one descriptor chain is depth deep.
func deepDomainYAML(id string, depth int) string {
	var b strings.Builder
	b.WriteString("id: " + id + "\ndomain: " + id + "\ndescriptors:\n")
	indent := ""
	for i := 1; i <= depth; i++ {
		fmt.Fprintf(&b, "%s  - key: %s-%d\n", indent, id, i)
		if i == depth {
			b.WriteString(indent + "    rate_limit:\n" + indent + "      unit: second\n" + indent + "      requests_per_unit: 1\n")
		} else {
			b.WriteString(indent + "    descriptors:\n")
		}
		indent += "    "
	}
	return b.String()
}

// inlineLimitsYAML is the body of a rate_limit block with n inline limits.
func inlineLimitsYAML(n int) string {
	return "  limits:\n" + strings.Repeat("    - {requests_per_unit: 5, time_unit: 1m, by: ip}\n", n)
}
