package envoy_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// Every test here starts from input the API accepts today (the model validates and the route
// translates) and shows what Build does with the Envoy resource it would produce: the route is
// left out of both flavors with the reason in RouteErrors, and the other routes stay.

// goodRoute is served next to every offending route: it must survive.
const goodRoute = `
  - id: good
    require_auth: false
    conditions: [{path_pattern: "/good/*"}]
    targets: [{host: 10.0.20.1, port: 8080}]
`

// translateYAML translates routes written as in the API (YAML of its JSON fields).
func translateYAML(t *testing.T, routes string) *ir.Config {
	t.Helper()
	var in golden.Input
	if err := yaml.UnmarshalStrict([]byte("routes:"+goodRoute+routes), &in); err != nil {
		t.Fatal(err)
	}
	snap := &model.Snapshot{Revision: 1, Routes: in.Routes, Settings: &model.Settings{ID: model.SettingsID}}
	for _, r := range in.Routes {
		if errs := r.Validate(); len(errs) > 0 {
			t.Fatalf("the API refuses route %s already: %v", r.ID, errs)
		}
	}
	cfg, err := translate.Translate(snap, translate.Options{ListenerAddress: "0.0.0.0:10000", ControlPlane: "controlplane:18000",
		Now: func() time.Time { return golden.Now }})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RouteErrors) > 0 {
		t.Fatalf("translation refuses already: %v", cfg.RouteErrors)
	}
	return cfg
}

// served lists the route names in the built route configurations.
func served(res *envoy.Resources) map[string]bool {
	names := map[string]bool{}
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				names[r.GetName()] = true
			}
		}
	}
	return names
}

// expectDropped builds both flavors and checks that route id is left out with a reason
// containing want, and that the good route is served.
func expectDropped(t *testing.T, cfg *ir.Config, id, want string) {
	t.Helper()
	for _, fl := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
		res, err := envoy.Build(cfg, envoy.Options{Flavor: fl})
		if err != nil {
			t.Fatalf("flavor %d: %v", fl, err)
		}
		// The gRPC flavor leaves out by design some routes Envoy refuses (a query condition,
		// a path rewrite): not built, so not refused either.
		if got := res.RouteErrors[id]; !strings.Contains(got, want) && (fl != envoy.FlavorGRPC || res.Omitted[id] == "") {
			t.Errorf("flavor %d: route %s: error %q, want it to contain %q", fl, id, got, want)
		}
		names := served(res)
		if names[id] {
			t.Errorf("flavor %d: route %s is served", fl, id)
		}
		if fl == envoy.FlavorEnvoy && !names["good"] {
			t.Errorf("flavor %d: the good route is gone too", fl)
		}
	}
}

// expectServed builds both flavors and checks that route id is served.
func expectServed(t *testing.T, cfg *ir.Config, id string) {
	t.Helper()
	for _, fl := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
		res, err := envoy.Build(cfg, envoy.Options{Flavor: fl})
		if err != nil {
			t.Fatalf("flavor %d: %v", fl, err)
		}
		if e := res.RouteErrors[id]; e != "" {
			t.Errorf("flavor %d: route %s refused: %s", fl, id, e)
		}
	}
}

func headerRoute(id, side, op, name, value string) string {
	return fmt.Sprintf(`
  - id: %s
    require_auth: false
    conditions: [{path_pattern: "/%s"}]
    %s_headers: {%s: {%q: %q}}
    targets: [{host: 10.0.20.2, port: 8080}]
`, id, id, side, op, name, value)
}

// Header values to add are Envoy format strings (header_parser.cc → SubstitutionFormatParser):
// a literal '%' must be written "%%", and a command must be one Envoy knows, with the
// arguments it takes.
func TestRuntimeRulesHeaderFormatString(t *testing.T) {
	refused := []struct{ value, want string }{
		{"50%", "starts no command"},
		{"100% sure", "starts no command"},
		{"%", "starts no command"},
		{"%FOO%", "not a substitution command"},
		{"%REQ%", "needs an argument"},
		{"%REQ()%", "needs an argument"},
		{"%PROTOCOL(x)%", "takes no argument"},
		{"%START_TIME:10%", "takes no length"},
		{"%REQ(x-user", "no closing ')'"},
		{"%REQ(x-user)", "not closed by '%'"},
		{"%DOWNSTREAM_REMOTE_ADDRESS", "not closed by '%'"},
	}
	for i, c := range refused {
		id := fmt.Sprintf("refused-%d", i)
		for _, side := range []string{"request", "response"} {
			cfg := translateYAML(t, headerRoute(id, side, "set", "X-Value", c.value))
			expectDropped(t, cfg, id, c.want)
			expectDropped(t, cfg, id, "write %% for a literal %")
		}
	}
	for i, v := range []string{"50%%", "%%", "plain", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "%REQ(x-user)%",
		"%REQ(x-user?x-other):16%", "%START_TIME%", "%START_TIME(%s)%", "a %%REQ(x)%% b", "%PROTOCOL%/%UPSTREAM_HOST%", "%PROTOCOL()%"} {
		id := fmt.Sprintf("accepted-%d", i)
		expectServed(t, translateYAML(t, headerRoute(id, "request", "add", "X-Value", v)), id)
	}
}

// Each command's formatter checks its argument when Envoy builds it
// (substitution_format_utility.cc parseSubcommandHeaders; stream_info_formatter.cc
// FilterStateFormatter::create, SystemTimeFormatter, the DYNAMIC_METADATA syntax flags).
func TestRuntimeRulesHeaderFormatArguments(t *testing.T) {
	refused := []struct{ value, want string }{
		{"%REQ(x-a?x-b?x-c)%", "more than one alternative header"},
		{"%RESP(x a)%", `"x a" is not a header name`},
		{"%REQ(x-a?)%", `"" is not a header name`},
		{"%FILTER_STATE(k:JSON)%", `serialize type "JSON"`},
		{"%FILTER_STATE(:PLAIN)%", "key is empty"},
		{"%FILTER_STATE(k:FIELD)%", "a field name goes with FIELD"},
		{"%FILTER_STATE(k:PLAIN:f)%", "a field name goes with FIELD"},
		{"%DYNAMIC_METADATA(ns:key):10%", "takes no length"},
		{"%START_TIME(%Y%n)%", "newline specifier"},
		{"%START_TIME(%-2En)%", "newline specifier"},
		{"%REQ(x-a):18446744073709551616%", "length 18446744073709551616 is above"},
	}
	for i, c := range refused {
		id := fmt.Sprintf("refused-arg-%d", i)
		expectDropped(t, translateYAML(t, headerRoute(id, "request", "set", "X-Value", c.value)), id, c.want)
	}
	for i, v := range []string{"%FILTER_STATE(k)%", "%FILTER_STATE(k:PLAIN):8%", "%FILTER_STATE(k:FIELD:f)%",
		"%REQ(:authority)%", "%RESP(x-a?x-b)%", "%START_TIME(%Y-%m-%dT%H:%M:%S)%", "%DYNAMIC_METADATA(ns:key)%",
		"%REQ(x-a):18446744073709551615%"} {
		id := fmt.Sprintf("accepted-arg-%d", i)
		expectServed(t, translateYAML(t, headerRoute(id, "response", "add", "X-Value", v)), id)
	}
}

// Envoy refuses to add, set or remove host or a pseudo-header, on requests and responses
// (header_parser.cc with header_utility.cc isModifiableHeader / isRemovableHeader).
func TestRuntimeRulesHostAndPseudoHeaders(t *testing.T) {
	for i, c := range []struct{ side, op, name string }{
		{"request", "set", "Host"},
		{"request", "add", "host"},
		{"response", "set", "HOST"},
		{"response", "add", "Host"},
	} {
		id := fmt.Sprintf("host-%d", i)
		expectDropped(t, translateYAML(t, headerRoute(id, c.side, c.op, c.name, "x")), id, "cannot be added or set")
	}
	for _, side := range []string{"request", "response"} {
		id := "remove-host-" + side
		cfg := translateYAML(t, fmt.Sprintf(`
  - id: %s
    require_auth: false
    conditions: [{path_pattern: "/%s"}]
    %s_headers: {remove: [Host]}
    targets: [{host: 10.0.20.3, port: 8080}]
`, id, id, side))
		expectDropped(t, cfg, id, "cannot be removed")
	}
	// The API refuses pseudo-header names itself; the rule still holds for the IR.
	cfg := translateYAML(t, headerRoute("pseudo", "request", "set", "X-A", "b"))
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if r.RouteID == "pseudo" {
				r.RequestHeaders.Remove = []string{":path"}
			}
		}
	}
	expectDropped(t, cfg, "pseudo", `":path" cannot be removed`)
}

// Envoy refuses a regex whose RE2 program size exceeds 100 (regex.cc,
// re2.max_program_size.error_level): path templates, path regexes, header and query regexes
// and regex rewrites alike. Ordinary templates stay well below.
func TestRuntimeRulesRegexProgramSize(t *testing.T) {
	cfg := translateYAML(t, `
  - id: long-template
    require_auth: false
    conditions: [{path_pattern: "/api/v1/organizations/{org}/projects/{p}/environments/{e}/deployments/{d}/revisions/{r}/logs"}]
    targets: [{host: 10.0.20.4, port: 8080}]
  - id: letters
    require_auth: false
    conditions: [{path_regex: "^/names/\\pL+$"}]
    targets: [{host: 10.0.20.5, port: 8080}]
  - id: header-regex
    require_auth: false
    conditions: [{path_pattern: "/h", headers: [{name: X-Tag, regex: "[^,]{20}"}]}]
    targets: [{host: 10.0.20.6, port: 8080}]
  - id: query-regex
    require_auth: false
    conditions: [{path_pattern: "/q", query: [{name: tag, regex: "\\w{40}"}]}]
    targets: [{host: 10.0.20.7, port: 8080}]
  - id: rewrite-regex
    require_auth: false
    conditions: [{path_pattern: "/r/{a}"}]
    rewrite: {regex: "^/r/(.+)/(.+)/(.+)/(.+)/(.+)/(.+)/(.+)/(.+)/(.+)/(.+)$", substitution: "/\\1"}
    targets: [{host: 10.0.20.8, port: 8080}]
  - id: four-variables
    require_auth: false
    conditions: [{path_pattern: "/api/v1/orgs/{org}/projects/{p}/envs/{e}/deployments/{d}"}]
    targets: [{host: 10.0.20.9, port: 8080}]
  - id: rest-of-path
    require_auth: false
    conditions: [{path_pattern: "/api/v1/files/{path=**}", headers: [{name: X-Version, regex: "v[0-9]+"}]}]
    rewrite: {regex: "^/api/v1/files/(.*)$", substitution: "/\\1"}
    targets: [{host: 10.0.20.10, port: 8080}]
`)
	expectDropped(t, cfg, "long-template", "RE2 program size 102;")
	expectDropped(t, cfg, "letters", "RE2 program size 1198;")
	expectDropped(t, cfg, "header-regex", "RE2 program size 164;")
	expectDropped(t, cfg, "query-regex", "RE2 program size 124;")
	expectDropped(t, cfg, "rewrite-regex", "RE2 program size 123;")
	expectServed(t, cfg, "four-variables")
	expectServed(t, cfg, "rest-of-path")
}

// Envoy and grpc-go refuse weighted clusters whose weights sum above 2^32-1
// (weighted_cluster_specifier.cc; grpc-go unmarshal_rds.go). The API caps one target's
// weight at 1,000,000, not their number: 4,295 targets are enough, when their weights have
// no common divisor (translation divides weights that overflow by theirs).
func TestRuntimeRulesWeightTotal(t *testing.T) {
	var b strings.Builder
	b.WriteString(`
  - id: heavy
    require_auth: false
    conditions: [{path_pattern: "/heavy"}]
    targets:
`)
	for i := 0; i < 4295; i++ {
		w := 1_000_000
		if i == 4294 {
			w = 999_999
		}
		fmt.Fprintf(&b, "      - {host: 10.1.%d.%d, port: 8080, weight: %d}\n", i/250, i%250+1, w)
	}
	cfg := translateYAML(t, b.String())
	expectDropped(t, cfg, "heavy", "sum to 4294999999; Envoy and grpc-go refuse a sum above 4294967295")

	// One target fewer sums to 4,293,999,999: served.
	cfg = translateYAML(t, strings.Replace(b.String(), "      - {host: 10.1.0.1, port: 8080, weight: 1000000}\n", "", 1))
	expectServed(t, cfg, "heavy")
}

// Envoy reads durations through DurationUtil (utility.cc), which refuses more than
// 9223372035 s: one second less than the largest Go duration the API's parser accepts.
func TestRuntimeRulesDurationRange(t *testing.T) {
	cfg := translateYAML(t, `
  - id: forever
    require_auth: false
    conditions: [{path_pattern: "/forever"}]
    timeout: 2562047h47m16s
    targets: [{host: 10.0.20.11, port: 8080}]
  - id: health-forever
    require_auth: false
    conditions: [{path_pattern: "/health-forever"}]
    health_check: {path: /healthz, interval: 2562047h47m16s, timeout: 1s}
    targets: [{host: 10.0.20.12, port: 8080}]
  - id: long
    require_auth: false
    conditions: [{path_pattern: "/long"}]
    timeout: 2562047h
    targets: [{host: 10.0.20.13, port: 8080}]
`)
	expectDropped(t, cfg, "forever", "outside Envoy's range")
	// A cluster's duration: the route of the cluster is dropped (Envoy flavor only: the gRPC
	// flavor sends no health checks).
	res, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	if e := res.RouteErrors["health-forever"]; !strings.Contains(e, "outside Envoy's range") {
		t.Errorf("health-forever: %q", e)
	}
	expectServed(t, cfg, "long")
}

// Envoy refuses a cluster whose base ejection time is above its max ejection time, 300 s when
// unset (outlier_detection_impl.cc DetectorImpl::create); the route of the cluster is left out.
func TestRuntimeRulesOutlierEjectionTime(t *testing.T) {
	cfg := translateYAML(t, `
  - id: eject-long
    require_auth: false
    conditions: [{path_pattern: "/eject-long"}]
    outlier_detection: {consecutive_5xx: 5, interval: 10s, base_ejection_time: 10m}
    targets: [{host: 10.0.20.16, port: 8080}]
  - id: eject-max
    require_auth: false
    conditions: [{path_pattern: "/eject-max"}]
    outlier_detection: {consecutive_5xx: 5, interval: 10s, base_ejection_time: 5m}
    targets: [{host: 10.0.20.17, port: 8080}]
`)
	expectDropped(t, cfg, "eject-long", "base ejection time 10m0s is above the max ejection time 5m0s")
	expectServed(t, cfg, "eject-max")
}

// Envoy refuses a health check expecting a status outside [100, 600) (health_checker_impl.cc
// HttpStatusChecker). The API refuses such statuses itself; the rule holds for the IR.
func TestRuntimeRulesHealthCheckStatuses(t *testing.T) {
	cfg := translateYAML(t, `
  - id: checked
    require_auth: false
    conditions: [{path_pattern: "/checked"}]
    health_check: {path: /healthz, interval: 5s, timeout: 1s, expected_statuses: [200, 599]}
    targets: [{host: 10.0.20.18, port: 8080}]
`)
	res, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil || res.RouteErrors["checked"] != "" {
		t.Fatalf("%v %v", err, res.RouteErrors)
	}
	for _, c := range cfg.Clusters {
		if c.RouteID == "checked" {
			c.HealthCheck.ExpectedStatuses = []uint32{200, 600}
		}
	}
	res, err = envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil || !strings.Contains(res.RouteErrors["checked"], "[600, 601) is not within [100, 600)") {
		t.Fatalf("%v %v", err, res.RouteErrors)
	}
}

// Envoy reads the retry back-off in whole milliseconds and refuses a max below the base
// (config_impl.cc RetryPolicyImpl). The API refuses base > max itself; the rule holds for the
// IR, and sub-millisecond differences that Envoy rounds away are accepted.
func TestRuntimeRulesRetryBackOff(t *testing.T) {
	cfg := translateYAML(t, `
  - id: retry
    require_auth: false
    conditions: [{path_pattern: "/retry"}]
    retries: 2
    targets: [{host: 10.0.20.14, port: 8080}]
`)
	var rt *ir.Route
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if r.RouteID == "retry" {
				rt = r
			}
		}
	}
	rt.Retry.BaseInterval, rt.Retry.MaxInterval = 1900*time.Microsecond, 1200*time.Microsecond
	expectServed(t, cfg, "retry") // both 1 ms for Envoy
	rt.Retry.BaseInterval, rt.Retry.MaxInterval = 3*time.Millisecond, 2*time.Millisecond
	expectDropped(t, cfg, "retry", "retry max interval 2ms is below the base interval 3ms")
}

// Two virtual hosts with the same domain in another case make Envoy refuse the whole route
// configuration (config_impl.cc RouteMatcher): Build refuses it, so nothing is published.
func TestRuntimeRulesDuplicateDomains(t *testing.T) {
	cfg := translateYAML(t, "")
	cfg.VirtualHosts = append(cfg.VirtualHosts,
		&ir.VirtualHost{Name: "a", Domains: []string{"API.test"}},
		&ir.VirtualHost{Name: "b", Domains: []string{"api.test"}})
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the IR accepts it: %v", err)
	}
	if _, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy}); err == nil || !strings.Contains(err.Error(), "appears twice") {
		t.Fatalf("got %v", err)
	}
}

// Hostile input stays cheap: the most headers a route can carry, and regexes built to blow up RE2's
// compiler (the emulation stops at a fixed instruction budget).
func TestRuntimeRulesHostileInputsBounded(t *testing.T) {
	start := time.Now()
	var b strings.Builder
	b.WriteString(`
  - id: many-headers
    require_auth: false
    conditions: [{path_pattern: "/many"}]
    request_headers:
      add:
`)
	// ValidateAll caps a route at 1000 headers to add; the check walks them all.
	for i := 0; i < 999; i++ {
		fmt.Fprintf(&b, "        X-H-%d: \"%%REQ(x-a)%% and %%%% and %%START_TIME%%\"\n", i)
	}
	b.WriteString("        X-Last: \"50%\"\n    targets: [{host: 10.0.20.15, port: 8080}]\n")
	expectDropped(t, translateYAML(t, b.String()), "many-headers", `"x-last"`)

	for _, re := range []string{
		`^(\pL{1000})$`,
		`((((a{100}){100}){100}){100})`,
		`(?:[\x{80}-\x{10FFFF}]{50}){20}`,
		strings.Repeat(`(?:ab|cd)*`, 2000),
		strings.Repeat("(", 900) + "a" + strings.Repeat(")", 900),
		`(a|aa|aaa|aaaa)*(b|bb|bbb)*` + strings.Repeat(`[^/]`, 1000),
	} {
		n, err := envoy.RE2ProgramSize(re)
		if err == nil && n <= 100 {
			t.Errorf("%.40s...: size %d", re, n)
		}
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("hostile inputs took %v", d)
	}
}

// A mirror policy with no cluster (an IR written around translation) would make Envoy refuse
// the whole route configuration (config_impl.cc ShadowPolicyImpl): the route is dropped.
func TestRuntimeRulesMirrorNamesACluster(t *testing.T) {
	cfg := translateYAML(t, `
  - id: mirrored
    hosts: [mirrored.test]
    require_auth: false
    conditions: [{path_pattern: "/m"}]
    mirror: {target: {host: 10.0.20.15, port: 8080}, percent: 25}
    targets: [{host: 10.0.20.16, port: 8080}]
`)
	var rt *ir.Route
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if r.RouteID == "mirrored" {
				rt = r
			}
		}
	}
	expectServed(t, cfg, "mirrored")
	rt.Mirror.Cluster = ""
	res, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.RouteErrors["mirrored"]; !strings.Contains(got, "exactly one of cluster and cluster_header") || served(res)["mirrored"] || !served(res)["good"] {
		t.Errorf("route error %q, served %v", got, served(res))
	}
	// The gRPC flavor sends no mirror policy: the route stays served there.
	expectServedIn(t, cfg, envoy.FlavorGRPC, "mirrored")
}

func expectServedIn(t *testing.T, cfg *ir.Config, fl envoy.Flavor, id string) {
	t.Helper()
	res, err := envoy.Build(cfg, envoy.Options{Flavor: fl})
	if err != nil {
		t.Fatal(err)
	}
	if !served(res)[id] {
		t.Errorf("flavor %d: route %s not served: %q", fl, id, res.RouteErrors[id])
	}
}
