// Package promconfig holds the Prometheus scrape config, the alert rules and their promtool
// unit tests. Its Go tests run promtool (promtool.sh) and check that every metric name used
// by a rule or a Grafana dashboard exists.
package promconfig

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/analytics"
	"github.com/api-gateway/api-gateway/internal/telemetry"
)

// otherOwners lists the api_gateway_* metrics defined by other components (and their type),
// which the rules and dashboards may use.
var otherOwners = map[string]struct{ owner, typ string }{
	"api_gateway_rate_limit_hits_total":             {"ratelimit", "counter"},
	"api_gateway_rate_limit_store_duration_seconds": {"ratelimit", "histogram"},
	"api_gateway_rate_limit_fail_open_total":        {"ratelimit", "counter"},
	"api_gateway_rate_limit_reserved_units_total":   {"ratelimit", "counter"},
	"api_gateway_security_threats_total":            {"waf", "counter"},
	"api_gateway_xds_pushes_total":                  {"xds/server", "counter"},
	"api_gateway_xds_nacks_total":                   {"xds/server", "counter"},
	"api_gateway_xds_connected_nodes":               {"xds/server", "gauge"},
	"api_gateway_xds_snapshot_build_seconds":        {"xds/server", "histogram"},
	"api_gateway_authz_decisions_total":             {"extauthz", "counter"},
	"api_gateway_authz_check_duration_seconds":      {"extauthz", "histogram"},
	"api_gateway_grpc_panics_total":                 {"internal/telemetry", "counter"},
	"api_gateway_config_revision_rejected":          {"cmd/api-gateway (wire_pipeline.go)", "gauge"},
}

// envoyStats are the Envoy stats (as /stats/prometheus names them) the rules and dashboards
// use, with their types. Envoy histograms are in milliseconds.
var envoyStats = map[string]string{
	"envoy_cluster_upstream_rq_total":            "counter",
	"envoy_cluster_upstream_rq_xx":               "counter", // {envoy_response_code_class="2".."5"}
	"envoy_cluster_upstream_rq_time":             "histogram",
	"envoy_cluster_upstream_rq_timeout":          "counter",
	"envoy_cluster_upstream_rq_retry":            "counter",
	"envoy_cluster_upstream_cx_connect_fail":     "counter",
	"envoy_cluster_membership_healthy":           "gauge",
	"envoy_cluster_membership_total":             "gauge",
	"envoy_cluster_ratelimit_ok":                 "counter",
	"envoy_cluster_ratelimit_over_limit":         "counter",
	"envoy_cluster_ratelimit_error":              "counter",
	"envoy_http_downstream_rq_total":             "counter",
	"envoy_http_downstream_rq_xx":                "counter",
	"envoy_http_downstream_cx_active":            "gauge",
	"envoy_http_ext_authz_ok":                    "counter",
	"envoy_http_ext_authz_denied":                "counter",
	"envoy_http_ext_authz_error":                 "counter",
	"envoy_server_live":                          "gauge",
	"envoy_control_plane_connected_state":        "gauge",
	"envoy_cluster_manager_cds_update_rejected":  "counter",
	"envoy_listener_manager_lds_update_rejected": "counter",
}

// prometheusSynthetic are series Prometheus itself makes.
var prometheusSynthetic = map[string]string{"up": "gauge", "ALERTS": "gauge"}

// knownMetrics returns every metric name that exists, with its type: our registry (the
// analytics service and the Go/process collectors main registers, gathered for real), the
// other components' metrics, Envoy's stats and Prometheus' own series.
func knownMetrics(t *testing.T) map[string]string {
	t.Helper()
	reg := telemetry.NewRegistry() // what main registers: Go runtime and process collectors
	store, err := analytics.OpenBoltStore(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	svc, err := analytics.New(slog.New(slog.DiscardHandler), reg, store, analytics.DefaultRetention(), analytics.WithFlushInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	// One failed request that reached an upstream gives every vector a series to gather.
	svc.Record(&analytics.Entry{Time: time.Now(), Route: "r", Method: "GET", Status: 503, User: "u",
		HasUpstream: true, Upstream: time.Millisecond, Duration: time.Millisecond, ErrorType: analytics.ErrServer})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]string{}
	for _, f := range families {
		known[f.GetName()] = strings.ToLower(dto.MetricType_name[int32(f.GetType())])
	}
	for _, name := range []string{analytics.MetricRequests, analytics.MetricDuration, analytics.MetricRequestSize,
		analytics.MetricResponseSize, analytics.MetricErrors, analytics.MetricActiveUsers, analytics.MetricUpstreamLatency} {
		if known[name] == "" {
			t.Errorf("seed README metric %s is not registered", name)
		}
	}
	for n, o := range otherOwners {
		if _, dup := known[n]; dup {
			t.Errorf("%s is owned by %s but analytics registers it too", n, o.owner)
		}
		known[n] = o.typ
	}
	for n, typ := range envoyStats {
		known[n] = typ
	}
	for n, typ := range prometheusSynthetic {
		known[n] = typ
	}
	return known
}

// resolve maps a series name to the metric that produces it (histogram _bucket/_sum/_count).
func resolve(name string, known map[string]string) bool {
	if _, ok := known[name]; ok {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if typ := known[base]; typ == "histogram" || (typ == "summary" && suf != "_bucket") {
				return true
			}
		}
	}
	return false
}

var (
	stringLit  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	braces     = regexp.MustCompile(`\{[^{}]*\}`)
	brackets   = regexp.MustCompile(`\[[^\[\]]*\]`)
	grafanaVar = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
	// a label list after a grouping or matching modifier
	labelList = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	token     = regexp.MustCompile(`[0-9][0-9A-Za-z_.]*|[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
)

// promqlKeywords are words that are not metric names.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true,
	"limit_ratio": true, "inf": true, "nan": true, "start": true, "end": true,
}

// metricNames extracts the metric names of a PromQL expression: strings, label matchers,
// ranges, Grafana variables and modifier label lists are removed; a word followed by "(" is
// a function; keywords and numbers are skipped.
func metricNames(expr string) []string {
	s := stringLit.ReplaceAllString(expr, `""`)
	s = grafanaVar.ReplaceAllString(s, "")
	for prev := ""; prev != s; {
		prev = s
		s = braces.ReplaceAllString(s, " ")
	}
	s = brackets.ReplaceAllString(s, " ")
	s = labelList.ReplaceAllString(s, " ")
	var out []string
	for _, tok := range token.FindAllString(s, -1) {
		if tok[0] >= '0' && tok[0] <= '9' || strings.HasSuffix(tok, "(") || promqlKeywords[strings.ToLower(tok)] {
			continue
		}
		out = append(out, tok)
	}
	return out
}

func TestMetricNameExtraction(t *testing.T) {
	for expr, want := range map[string]string{
		`histogram_quantile(0.95, sum by (le, route) (rate(api_gateway_request_duration_seconds_bucket{route=~"$route"}[$__rate_interval]))) > 1`: "api_gateway_request_duration_seconds_bucket",
		`sum(rate(a_total{x="by (y)"}[5m] offset 1h)) / on (job) group_left (instance) b unless c > bool 0.5e3`:                                   "a_total b c",
		`up{job=~"api-gateway|envoy"} == 0 and sum without (le) (d:recorded:rate5m) or topk(3, e)`:                                                "up d:recorded:rate5m e",
		`max (f) > Inf`: "f",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert  string `json:"alert"`
			Record string `json:"record"`
			Expr   string `json:"expr"`
		} `json:"rules"`
	} `json:"groups"`
}

// queries returns every PromQL expression of the rules and dashboards, keyed by where it is.
func queries(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	b, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out["alerts.yml "+g.Name+"/"+r.Alert+r.Record] = r.Expr
		}
	}
	files, err := filepath.Glob("../grafana/dashboards/*.json")
	if err != nil || len(files) < 5 {
		t.Fatalf("dashboards: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					RefID string `json:"refId"`
					Expr  string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
			Templating struct {
				List []struct {
					Name       string `json:"name"`
					Definition string `json:"definition"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				out[filepath.Base(f)+" "+p.Title+"/"+tg.RefID] = tg.Expr
			}
		}
		for _, v := range d.Templating.List {
			// label_values(metric, label): the metric is the selector before the comma.
			if sel, ok := strings.CutPrefix(v.Definition, "label_values("); ok {
				if i := strings.LastIndex(sel, ","); i > 0 {
					out[filepath.Base(f)+" $"+v.Name] = sel[:i]
				}
			}
		}
	}
	return out
}

func TestEveryQueriedMetricExists(t *testing.T) {
	known := knownMetrics(t)
	used := map[string]bool{}
	qs := queries(t)
	for where, expr := range qs {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !resolve(n, known) {
				t.Errorf("%s: unknown metric %q in %q", where, n, expr)
			}
		}
	}
	var list []string
	for n := range used {
		list = append(list, n)
	}
	sort.Strings(list)
	t.Logf("%d queries use %d metric names: %s", len(qs), len(list), strings.Join(list, " "))
	// Every seed README metric appears on a dashboard or in a rule.
	for _, n := range []string{"api_gateway_requests_total", "api_gateway_request_duration_seconds_bucket", "api_gateway_request_size_bytes_sum",
		"api_gateway_response_size_bytes_sum", "api_gateway_errors_total", "api_gateway_active_users", "api_gateway_upstream_latency_seconds_bucket",
		"api_gateway_rate_limit_hits_total", "api_gateway_security_threats_total"} {
		if !used[n] {
			t.Errorf("%s is on no dashboard and in no rule", n)
		}
	}
}
