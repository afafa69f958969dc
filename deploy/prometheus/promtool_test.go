package promconfig

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// promtoolPath returns $PROMTOOL or ./bin/promtool of the repository, or skips when it is
// not built (fails in CI, where make test-deps builds it).
func promtoolPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p
	}
	p, err := filepath.Abs("../../bin/promtool")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool is not built at %s; make test-deps runs deploy/prometheus/promtool.sh install", p)
		}
		t.Skip("promtool is not built: run `bash deploy/prometheus/promtool.sh install` (make test-deps) first")
	}
	return p
}

// TestPromtool runs promtool.sh: check rules, check config and the rule unit tests.
func TestPromtool(t *testing.T) {
	promtoolPath(t)
	out, err := exec.Command("bash", "promtool.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool.sh printed no SUCCESS:\n%s", out)
	}
}

// TestDashboardQueriesParse checks every dashboard query with Prometheus' own parser: the
// queries, with Grafana's variables replaced, become recording rules for promtool check.
func TestDashboardQueriesParse(t *testing.T) {
	bin := promtoolPath(t)
	qs := queries(t)
	keys := make([]string, 0, len(qs))
	for k := range qs {
		if !strings.HasPrefix(k, "alerts.yml") && !strings.Contains(k, " $") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	repl := strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$route", ".*", "$domain", ".*")
	var rules []map[string]string
	for i, k := range keys {
		rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:query%d", i), "expr": repl.Replace(qs[k])})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dashboards.rules.yml")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "rules", f).CombinedOutput()
	if err != nil {
		t.Fatalf("dashboard queries do not parse: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(rules)); !strings.Contains(string(out), want) {
		t.Fatalf("promtool: %s (want %q)", out, want)
	}
}

// TestEveryAlertIsUnitTested: each alert of alerts.yml has a promtool case where it fires
// and one where it does not.
func TestEveryAlertIsUnitTested(t *testing.T) {
	b, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	tb, err := os.ReadFile("alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(tb, &tf); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: firing case %v, quiet case %v", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	for _, want := range []string{"HighErrorRate", "HighLatency"} {
		if !fires[want] {
			t.Errorf("seed alert %s is missing", want)
		}
	}
	if n < 10 {
		t.Errorf("only %d alerts", n)
	}
}
