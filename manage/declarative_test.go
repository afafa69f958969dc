package manage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
)

// An envoyproxy/ratelimit config file loads unchanged as one rate-limit object.
const envoyRatelimitFile = `domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500
  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
  - key: remote_address
    descriptors:
      - key: path
        value: "/foo*"
        rate_limit:
          unit: minute
          requests_per_unit: 10
        shadow_mode: true
`

func TestParseFileEnvoyRatelimitConfig(t *testing.T) {
	objs, probs := manage.ParseFile("rl.yaml", []byte(envoyRatelimitFile))
	if len(probs) > 0 || len(objs) != 1 {
		t.Fatalf("%v %v", objs, probs)
	}
	rl := objs[0].Obj.(*model.RateLimit)
	if rl.ID != "mongo_cps" || rl.Domain != "mongo_cps" || len(rl.Descriptors) != 3 || !rl.Descriptors[2].Descriptors[0].ShadowMode {
		t.Fatalf("decoded wrong: %+v", rl)
	}
}

func TestParseFileProblemsHaveLines(t *testing.T) {
	file := `routes:
  - id: a
    conditions: [{path_pattern: /a}]
    targets: [{host: h, port: 80}]
  - id: a
    conditions: [{path_pattern: /b}]
    targets: [{host: h, port: 80}]
  - id: b
    colour: red
    conditions: [{path_pattern: /c}]
    targets: [{host: h, port: 80}]
  - conditions: [{path_pattern: /d}]
    targets: [{host: h, port: 80}]
widgets: []
`
	_, probs := manage.ParseFile("g.yaml", []byte(file))
	var lines []string
	for _, p := range probs {
		lines = append(lines, p.String())
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{
		"g.yaml:5: routes/a: id: duplicate id (first at line 2)",
		"g.yaml:9: routes/b: colour: unknown field",
		"g.yaml:12: routes: id: is required",
		"g.yaml:14: widgets: unknown section",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q in:\n%s", want, all)
		}
	}
	if _, probs := manage.ParseFile("x.yaml", []byte("routes: [\n")); len(probs) != 1 || probs[0].Line == 0 {
		t.Fatalf("bad YAML: %v", probs)
	}
}

func TestApplyFileIsAtomicAndIdempotent(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	_ = os.WriteFile(good, []byte(`routes:
  - id: r1
    conditions: [{path_pattern: /a}]
    targets: [{host: h, port: 80}]
    rate_limit: {policies: [p1]}
rate_limits:
  - {id: p1, algorithm: fixed_window, requests_per_unit: 5, time_unit: 1m}
`), 0o644)
	rev, err := e.api.ApplyFile(t.Context(), good)
	if err != nil {
		t.Fatal(err)
	}
	rev2, err := e.api.ApplyFile(t.Context(), good)
	if err != nil || rev2 != rev {
		t.Fatalf("re-applying an unchanged file must not write: %d -> %d %v", rev, rev2, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte(`routes:
  - id: r2
    conditions: [{path_pattern: /b}]
    targets: [{host: h, port: 80}]
    rate_limit: {policies: [missing]}
`), 0o644)
	// The line is the field's, not the object's.
	if _, err := e.api.ApplyFile(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "bad.yaml:5: routes/r2: rate_limit.policies[0]") {
		t.Fatalf("dangling reference: %v", err)
	}
	if cur, _ := e.store.Revision(t.Context()); cur != rev {
		t.Fatalf("a rejected file wrote")
	}
}

// A file of several "---" documents used to load the first and silently drop the rest. It
// is refused, each extra document named by the line of its "---"; an empty document (a
// lone leading or trailing "---", or one of comments only) is no document and still loads.
func TestParseFileRefusesSeveralDocuments(t *testing.T) {
	route := func(id string) string {
		return "routes:\n  - id: " + id + "\n    conditions: [{path_pattern: /" + id + "}]\n    targets: [{host: h, port: 80}]\n"
	}
	two := route("a") + "---\n" + route("b") + "---\n# nothing\n---\n" + route("c")
	objs, probs := manage.ParseFile("multi.yaml", []byte(two))
	if len(objs) != 0 || len(probs) != 2 {
		t.Fatalf("objects %v problems %v; want none and two", objs, probs)
	}
	if probs[0].Line != 5 || probs[1].Line != 12 || !strings.Contains(probs[0].String(), "multi.yaml:5:") ||
		!strings.Contains(probs[0].Problem, "second YAML document") || !strings.Contains(probs[0].Problem, "line 1") {
		t.Fatalf("problems %v; want the lines of the extra documents' ---", probs)
	}
	for _, ok := range []string{"---\n" + route("a"), route("a") + "---\n", route("a") + "---\n# only a comment\n", "# header\n---\n" + route("a")} {
		objs, probs := manage.ParseFile("one.yaml", []byte(ok))
		if len(probs) != 0 || len(objs) != 1 {
			t.Fatalf("%q: objects %v problems %v; want the one route", ok, objs, probs)
		}
	}
	if _, probs := manage.ParseFile("bad.yaml", []byte(route("a")+"---\nroutes: [\n")); len(probs) != 1 || !strings.Contains(probs[0].Problem, "not valid YAML") {
		t.Fatalf("a broken second document: %v", probs)
	}
}

// A file whose revision a consumer refuses names each reason on its own line of output, at
// the line of the object the reason names (kind/id), so no reason is lost in one long
// problem on no line.
func TestFileRevisionRefusalNamesTheObjectLine(t *testing.T) {
	named := pipeline.ConsumerFunc{N: "named", F: func(_ context.Context, s *model.Snapshot) (func(), error) {
		var errs []error
		for _, tn := range s.Tenants {
			if tn.Name == "poison" {
				errs = append(errs, fmt.Errorf("tenants/%s: is named poison", tn.ID))
			}
		}
		if len(errs) > 0 {
			errs = append(errs, errors.New("a reason that names no object"))
		}
		return func() {}, errors.Join(errs...)
	}}
	e := newEnvWith(t, named)
	file := "tenants:\n  - id: t-ok\n    name: fine\n  - id: t-bad\n    name: poison\n  - id: t-bad2\n    name: poison\n"
	_, probs := e.api.CheckFileData(t.Context(), "r.yaml", []byte(file))
	got := map[string]int{}
	for _, p := range probs {
		if strings.Contains(p.Problem, "\n") {
			t.Errorf("one problem holds several reasons: %q", p.Problem)
		}
		got[p.Object] = p.Line
	}
	if got["tenants/t-bad"] != 4 || got["tenants/t-bad2"] != 6 || len(probs) != 3 {
		t.Fatalf("refusal problems: %v", probs)
	}
	for _, p := range probs {
		if p.Object == "" && (p.Line < 1 || !strings.Contains(p.Problem, "names no object")) {
			t.Errorf("a reason without an object: %+v", p)
		}
	}
}
