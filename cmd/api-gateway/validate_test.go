package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file `serve` refuses, here a route whose WAF rules do not compile and a policy whose rule
// does not compile (checks the serving components register with the API), is refused by
// `validate` too, naming the field: validate runs the same checks as serve.
func TestValidateRunsTheChecksServeRuns(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gw.yaml")
	err := os.WriteFile(file, []byte(`routes:
  - id: guarded
    conditions:
      - path_prefix: /guarded
    targets:
      - host: 127.0.0.1
        port: 9001
    require_auth: false
    waf:
      custom_rules: 'SecRule ARGS "@nosuchop x" "id:9001,deny"'
policies:
  - id: broken
    rules:
      - expression: "((("
        action: deny
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := runValidate([]string{"-f", file}, &out, &errOut); code != 1 {
		t.Fatalf("validate: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"routes/guarded: waf.custom_rules", "policies/broken: rules[0].expression"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("missing %q in:\n%s", want, errOut.String())
		}
	}
}
