// Package grafana holds the Grafana dashboards (dashboards/*.json) and their provisioning
// files. The JSON is generated from the definitions below so panels stay uniform and a
// change reviews as a small diff: edit this file, then run
//
//	go test ./deploy/grafana/ -update
//
// TestDashboardsUpToDate fails when the checked-in JSON differs from the definitions.
// deploy/prometheus/metricnames_test.go checks every PromQL expression against the metric
// names that exist.
package grafana

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite dashboards/*.json from the definitions")

// rate is the range used by rate() in panels.
const rate = "[$__rate_interval]"

type panel struct {
	title, unit, kind string // kind: timeseries (default) or stat
	width, height     int
	targets           []target
}

type target struct{ expr, legend string }

type variable struct{ name, query string }

type dashboard struct {
	uid, title, description string
	vars                    []variable
	rows                    [][]panel // panels laid out left to right, row by row
}

func ts(title, unit string, targets ...target) panel {
	return panel{title: title, unit: unit, kind: "timeseries", targets: targets}
}

func stat(title, unit string, expr string) panel {
	return panel{title: title, unit: unit, kind: "stat", height: 4, targets: []target{{expr: expr}}}
}

func t(expr, legend string) target { return target{expr, legend} }

func dashboards() []dashboard {
	routeSel := `route=~"$route"`
	return []dashboard{
		{
			uid: "api-gateway-overview", title: "API Gateway / Overview",
			description: "Traffic, errors and latency of every route (from Envoy access logs) beside Envoy's own stats.",
			rows: [][]panel{
				{
					stat("Requests/s", "reqps", `sum(rate(api_gateway_requests_total`+rate+`))`),
					stat("Server error ratio", "percentunit", `sum(rate(api_gateway_errors_total{status_class=~"5xx|none"}`+rate+`)) / sum(rate(api_gateway_requests_total`+rate+`))`),
					stat("p95 latency", "s", `histogram_quantile(0.95, sum by (le) (rate(api_gateway_request_duration_seconds_bucket`+rate+`)))`),
					stat("Active users (5m)", "short", `sum(api_gateway_active_users)`),
					stat("Connected Envoys", "short", `sum(api_gateway_xds_connected_nodes)`),
					stat("Envoy live", "short", `sum(envoy_server_live)`),
				},
				{
					ts("Requests by status class", "reqps", t(`sum by (status_class) (rate(api_gateway_requests_total`+rate+`))`, "{{status_class}}")),
					ts("Request latency", "s",
						t(`histogram_quantile(0.50, sum by (le) (rate(api_gateway_request_duration_seconds_bucket`+rate+`)))`, "p50"),
						t(`histogram_quantile(0.95, sum by (le) (rate(api_gateway_request_duration_seconds_bucket`+rate+`)))`, "p95"),
						t(`histogram_quantile(0.99, sum by (le) (rate(api_gateway_request_duration_seconds_bucket`+rate+`)))`, "p99")),
				},
				{
					ts("Errors by type", "reqps", t(`sum by (type) (rate(api_gateway_errors_total`+rate+`))`, "{{type}}")),
					ts("Envoy downstream requests by class", "reqps",
						t(`sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx`+rate+`))`, "{{envoy_response_code_class}}xx")),
				},
				{
					ts("Bandwidth", "Bps",
						t(`sum(rate(api_gateway_request_size_bytes_sum`+rate+`))`, "in"),
						t(`sum(rate(api_gateway_response_size_bytes_sum`+rate+`))`, "out")),
					ts("Envoy downstream connections", "short",
						t(`sum(envoy_http_downstream_cx_active)`, "active"),
						t(`sum(rate(envoy_http_downstream_rq_total`+rate+`))`, "requests/s")),
				},
				{
					ts("Gateway memory", "bytes",
						t(`sum by (instance) (process_resident_memory_bytes{job="api-gateway"})`, "RSS {{instance}}"),
						t(`sum by (instance) (go_memstats_heap_inuse_bytes{job="api-gateway"})`, "heap {{instance}}")),
					ts("Gateway CPU and goroutines", "short",
						t(`sum by (instance) (rate(process_cpu_seconds_total{job="api-gateway"}`+rate+`))`, "cpu {{instance}}"),
						t(`sum by (instance) (go_goroutines{job="api-gateway"})`, "goroutines {{instance}}")),
				},
			},
		},
		{
			uid: "api-gateway-routes", title: "API Gateway / Routes",
			description: "Per-route traffic, errors, latency and sizes, with the Envoy upstream clusters behind them.",
			vars:        []variable{{"route", "label_values(api_gateway_requests_total, route)"}},
			rows: [][]panel{
				{
					ts("Requests by route", "reqps", t(`sum by (route) (rate(api_gateway_requests_total{`+routeSel+`}`+rate+`))`, "{{route}}")),
					ts("Server error ratio by route", "percentunit",
						t(`sum by (route) (rate(api_gateway_errors_total{`+routeSel+`,status_class=~"5xx|none"}`+rate+`)) / sum by (route) (rate(api_gateway_requests_total{`+routeSel+`}`+rate+`))`, "{{route}}")),
				},
				{
					ts("p95 latency by route", "s",
						t(`histogram_quantile(0.95, sum by (le, route) (rate(api_gateway_request_duration_seconds_bucket{`+routeSel+`}`+rate+`)))`, "{{route}}")),
					ts("p95 upstream latency by route", "s",
						t(`histogram_quantile(0.95, sum by (le, route) (rate(api_gateway_upstream_latency_seconds_bucket{`+routeSel+`}`+rate+`)))`, "{{route}}")),
				},
				{
					ts("Requests by method and status", "reqps",
						t(`sum by (route, method, status_class) (rate(api_gateway_requests_total{`+routeSel+`}`+rate+`))`, "{{route}} {{method}} {{status_class}}")),
					ts("p95 sizes by route", "bytes",
						t(`histogram_quantile(0.95, sum by (le, route) (rate(api_gateway_request_size_bytes_bucket{`+routeSel+`}`+rate+`)))`, "request {{route}}"),
						t(`histogram_quantile(0.95, sum by (le, route) (rate(api_gateway_response_size_bytes_bucket{`+routeSel+`}`+rate+`)))`, "response {{route}}")),
				},
				{
					ts("Envoy upstream requests by cluster and class", "reqps",
						t(`sum by (envoy_cluster_name, envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx`+rate+`))`, "{{envoy_cluster_name}} {{envoy_response_code_class}}xx")),
					ts("Envoy upstream p95 time by cluster", "ms",
						t(`histogram_quantile(0.95, sum by (le, envoy_cluster_name) (rate(envoy_cluster_upstream_rq_time_bucket`+rate+`)))`, "{{envoy_cluster_name}}")),
				},
				{
					ts("Healthy endpoints by cluster", "short",
						t(`sum by (envoy_cluster_name) (envoy_cluster_membership_healthy)`, "healthy {{envoy_cluster_name}}"),
						t(`sum by (envoy_cluster_name) (envoy_cluster_membership_total)`, "total {{envoy_cluster_name}}")),
					ts("Envoy upstream timeouts and retries", "reqps",
						t(`sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_timeout`+rate+`))`, "timeout {{envoy_cluster_name}}"),
						t(`sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_retry`+rate+`))`, "retry {{envoy_cluster_name}}"),
						t(`sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_cx_connect_fail`+rate+`))`, "connect fail {{envoy_cluster_name}}")),
				},
			},
		},
		{
			uid: "api-gateway-security", title: "API Gateway / Security",
			description: "WAF detections and ext_authz decisions.",
			rows: [][]panel{
				{
					stat("Threats/min", "short", `sum(rate(api_gateway_security_threats_total`+rate+`)) * 60`),
					stat("Denied checks", "percentunit", `sum(rate(api_gateway_authz_decisions_total{decision="deny"}`+rate+`)) / sum(rate(api_gateway_authz_decisions_total`+rate+`))`),
					stat("Check p99", "s", `histogram_quantile(0.99, sum by (le) (rate(api_gateway_authz_check_duration_seconds_bucket`+rate+`)))`),
				},
				{
					ts("WAF threats by category", "reqps", t(`sum by (category) (rate(api_gateway_security_threats_total`+rate+`))`, "{{category}}")),
					ts("WAF threats by route", "reqps", t(`sum by (route) (rate(api_gateway_security_threats_total`+rate+`))`, "{{route}}")),
				},
				{
					ts("Top WAF rules", "short", t(`topk(10, sum by (rule) (increase(api_gateway_security_threats_total[$__range])))`, "{{rule}}")),
					ts("ext_authz decisions", "reqps", t(`sum by (decision) (rate(api_gateway_authz_decisions_total`+rate+`))`, "{{decision}}")),
				},
				{
					ts("Deny reasons by checker", "reqps",
						t(`sum by (checker, reason) (rate(api_gateway_authz_decisions_total{decision="deny"}`+rate+`))`, "{{checker}} {{reason}}")),
					ts("ext_authz check latency", "s",
						t(`histogram_quantile(0.50, sum by (le) (rate(api_gateway_authz_check_duration_seconds_bucket`+rate+`)))`, "p50"),
						t(`histogram_quantile(0.99, sum by (le) (rate(api_gateway_authz_check_duration_seconds_bucket`+rate+`)))`, "p99")),
				},
				{
					ts("Envoy ext_authz filter", "reqps",
						t(`sum(rate(envoy_http_ext_authz_ok`+rate+`))`, "ok"),
						t(`sum(rate(envoy_http_ext_authz_denied`+rate+`))`, "denied"),
						t(`sum(rate(envoy_http_ext_authz_error`+rate+`))`, "error")),
					ts("Unauthorized responses by route", "reqps",
						t(`sum by (route) (rate(api_gateway_errors_total{type="unauthorized"}`+rate+`))`, "{{route}}")),
				},
			},
		},
		{
			uid: "api-gateway-rate-limits", title: "API Gateway / Rate limits",
			description: "Rate-limit service decisions and the 429s clients see.",
			vars:        []variable{{"domain", "label_values(api_gateway_rate_limit_hits_total, domain)"}},
			rows: [][]panel{
				{
					stat("Over-limit ratio", "percentunit", `sum(rate(api_gateway_rate_limit_hits_total{domain=~"$domain",result="over_limit"}`+rate+`)) / sum(rate(api_gateway_rate_limit_hits_total{domain=~"$domain"}`+rate+`))`),
					stat("429 responses/s", "reqps", `sum(rate(api_gateway_errors_total{type="rate_limited"}`+rate+`))`),
				},
				{
					ts("Rate-limit checks by result", "reqps",
						t(`sum by (result) (rate(api_gateway_rate_limit_hits_total{domain=~"$domain"}`+rate+`))`, "{{result}}")),
					ts("Over limit by descriptor", "reqps",
						t(`sum by (domain, descriptor) (rate(api_gateway_rate_limit_hits_total{domain=~"$domain",result="over_limit"}`+rate+`))`, "{{domain}} {{descriptor}}")),
				},
				{
					ts("Checks by algorithm", "reqps",
						t(`sum by (algorithm, result) (rate(api_gateway_rate_limit_hits_total{domain=~"$domain"}`+rate+`))`, "{{algorithm}} {{result}}")),
					ts("429 responses by route", "reqps",
						t(`sum by (route) (rate(api_gateway_errors_total{type="rate_limited"}`+rate+`))`, "{{route}}")),
				},
				{
					ts("Envoy rate-limit filter", "reqps",
						t(`sum(rate(envoy_cluster_ratelimit_ok`+rate+`))`, "ok"),
						t(`sum(rate(envoy_cluster_ratelimit_over_limit`+rate+`))`, "over limit"),
						t(`sum(rate(envoy_cluster_ratelimit_error`+rate+`))`, "error")),
				},
				{
					ts("Counter store latency", "s",
						t(`histogram_quantile(0.99, sum by (le, store) (rate(api_gateway_rate_limit_store_duration_seconds_bucket{result="ok"}`+rate+`)))`, "p99 {{store}}"),
						t(`histogram_quantile(0.5, sum by (le, store) (rate(api_gateway_rate_limit_store_duration_seconds_bucket{result="ok"}`+rate+`)))`, "p50 {{store}}")),
					ts("Reserved fixed-window units (RATE_LIMIT_RESERVE)", "short",
						t(`sum by (event) (rate(api_gateway_rate_limit_reserved_units_total`+rate+`))`, "{{event}}")),
				},
			},
		},
		{
			uid: "api-gateway-control-plane", title: "API Gateway / Control plane",
			description: "xDS pushes and NACKs, access-log ingestion and analytics persistence, and the gateway process.",
			rows: [][]panel{
				{
					stat("Connected Envoys", "short", `sum(api_gateway_xds_connected_nodes)`),
					stat("NACKs (1h)", "short", `sum(increase(api_gateway_xds_nacks_total[1h]))`),
					stat("Envoys connected to xDS", "short", `sum(envoy_control_plane_connected_state)`),
					stat("ALS streams", "short", `sum(api_gateway_als_streams_active)`),
				},
				{
					ts("xDS pushes by type", "ops", t(`sum by (type) (rate(api_gateway_xds_pushes_total`+rate+`))`, "{{type}}")),
					ts("xDS NACKs by type", "short", t(`sum by (type) (increase(api_gateway_xds_nacks_total`+rate+`))`, "{{type}}")),
				},
				{
					ts("Snapshot build time", "s",
						t(`histogram_quantile(0.50, sum by (le) (rate(api_gateway_xds_snapshot_build_seconds_bucket`+rate+`)))`, "p50"),
						t(`histogram_quantile(0.99, sum by (le) (rate(api_gateway_xds_snapshot_build_seconds_bucket`+rate+`)))`, "p99")),
					ts("Envoy config rejected", "short",
						t(`sum(increase(envoy_cluster_manager_cds_update_rejected`+rate+`))`, "CDS"),
						t(`sum(increase(envoy_listener_manager_lds_update_rejected`+rate+`))`, "LDS")),
				},
				{
					ts("Access-log entries", "ops", t(`sum by (type) (rate(api_gateway_als_entries_total`+rate+`))`, "{{type}}")),
					ts("Analytics flushes", "ops",
						t(`sum by (result) (rate(api_gateway_analytics_flushes_total`+rate+`))`, "{{result}}"),
						t(`sum(rate(api_gateway_analytics_key_overflow_total`+rate+`))`, "requests folded into other"),
						t(`sum(rate(api_gateway_analytics_dropped_requests_total`+rate+`))`, "requests dropped (store down)")),
				},
				{
					ts("Analytics flush time and backlog", "short",
						t(`histogram_quantile(0.99, sum by (le) (rate(api_gateway_analytics_flush_duration_seconds_bucket`+rate+`)))`, "flush p99 (s)"),
						t(`sum(api_gateway_analytics_pending_rows)`, "pending rows")),
					ts("Gateway process", "short",
						t(`sum by (instance) (go_goroutines{job="api-gateway"})`, "goroutines {{instance}}"),
						t(`sum by (instance) (process_open_fds{job="api-gateway"})`, "open fds {{instance}}")),
				},
			},
		},
	}
}

// ---- JSON model -------------------------------------------------------------------------

var datasource = map[string]any{"type": "prometheus", "uid": "${datasource}"}

func (d dashboard) model() map[string]any {
	templ := []any{map[string]any{
		"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
		"current": map[string]any{}, "hide": 0, "refresh": 1,
	}}
	for _, v := range d.vars {
		templ = append(templ, map[string]any{
			"name": v.name, "label": v.name, "type": "query", "datasource": datasource,
			"query":      map[string]any{"query": v.query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
			"definition": v.query, "includeAll": true, "multi": true, "allValue": ".*", "refresh": 2, "sort": 1,
			"current": map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}},
		})
	}
	var panels []any
	id, y := 1, 0
	for _, row := range d.rows {
		x, h := 0, 0
		for _, p := range row {
			w := p.width
			if w == 0 {
				w = 24 / len(row)
			}
			ph := p.height
			if ph == 0 {
				ph = 8
			}
			panels = append(panels, p.model(id, x, y, w, ph))
			id++
			x += w
			h = max(h, ph)
		}
		y += h
	}
	return map[string]any{
		"uid": d.uid, "title": d.title, "description": d.description, "tags": []string{"api-gateway"},
		"editable": true, "graphTooltip": 1, "schemaVersion": 39, "version": 1, "refresh": "30s",
		"time": map[string]any{"from": "now-6h", "to": "now"}, "timezone": "browser",
		"templating": map[string]any{"list": templ}, "annotations": map[string]any{"list": []any{}},
		"panels": panels,
	}
}

func (p panel) model(id, x, y, w, h int) map[string]any {
	var targets []any
	for i, t := range p.targets {
		tm := map[string]any{"refId": string(rune('A' + i)), "expr": t.expr, "datasource": datasource, "range": true}
		if t.legend != "" {
			tm["legendFormat"] = t.legend
		}
		targets = append(targets, tm)
	}
	m := map[string]any{
		"id": id, "type": p.kind, "title": p.title, "datasource": datasource, "targets": targets,
		"gridPos":     map[string]any{"x": x, "y": y, "w": w, "h": h},
		"fieldConfig": map[string]any{"defaults": map[string]any{"unit": p.unit}, "overrides": []any{}},
	}
	if p.kind == "stat" {
		m["options"] = map[string]any{"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"colorMode": "value", "graphMode": "area"}
	} else {
		m["options"] = map[string]any{"legend": map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"}}
	}
	return m
}

func render(d dashboard) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d.model()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func TestDashboardsUpToDate(t *testing.T) {
	dir := "dashboards"
	want := map[string]bool{}
	for _, d := range dashboards() {
		b, err := render(d)
		if err != nil {
			t.Fatal(err)
		}
		name := d.uid + ".json"
		want[name] = true
		path := filepath.Join(dir, name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run: go test ./deploy/grafana/ -update)", err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s is out of date with dashboards_test.go (run: go test ./deploy/grafana/ -update)", path)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		if !want[filepath.Base(f)] {
			t.Errorf("%s is not generated by dashboards_test.go", f)
		}
	}
}

// TestDashboardShape checks what Grafana needs to load the JSON: unique panel ids, a
// datasource and at least one target on every panel, panels within the 24-column grid.
func TestDashboardShape(t *testing.T) {
	uids := map[string]bool{}
	for _, d := range dashboards() {
		if uids[d.uid] {
			t.Errorf("duplicate uid %s", d.uid)
		}
		uids[d.uid] = true
		b, err := render(d)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Panels []struct {
				ID      int            `json:"id"`
				Title   string         `json:"title"`
				GridPos map[string]int `json:"gridPos"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		ids := map[int]bool{}
		for _, p := range m.Panels {
			if ids[p.ID] {
				t.Errorf("%s: duplicate panel id %d", d.uid, p.ID)
			}
			ids[p.ID] = true
			if len(p.Targets) == 0 || p.Targets[0].Expr == "" {
				t.Errorf("%s/%s: no query", d.uid, p.Title)
			}
			if p.GridPos["x"]+p.GridPos["w"] > 24 {
				t.Errorf("%s/%s: wider than the grid", d.uid, p.Title)
			}
		}
	}
	if len(uids) != 5 {
		t.Errorf("%d dashboards, want overview, routes, security, rate limits, control plane", len(uids))
	}
}
