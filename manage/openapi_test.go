package manage_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

func TestOpenAPIDocument(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/api/v1/management/openapi.json", nil)
	if r.code != 200 {
		t.Fatalf("openapi.json: %d", r.code)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(r.raw)
	if err != nil {
		t.Fatalf("the document does not parse: %v", err)
	}
	if doc.OpenAPI != "3.1.0" || doc.Paths == nil {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	var generic map[string]any
	_ = json.Unmarshal(r.raw, &generic)
	paths := generic["paths"].(map[string]any)
	for _, mp := range e.api.SortedPaths() {
		method, path, _ := strings.Cut(mp, " ")
		ops, ok := paths[path].(map[string]any)
		if !ok {
			t.Errorf("%s is not in the document", path)
			continue
		}
		if _, ok := ops[strings.ToLower(method)]; !ok {
			t.Errorf("%s %s is not in the document", method, path)
		}
	}
	// Every path that replaces with PUT also changes with PATCH, documented as a merge patch.
	for path, v := range paths {
		ops := v.(map[string]any)
		if _, put := ops["put"]; !put || strings.HasSuffix(path, "/heartbeat") {
			continue
		}
		patch, ok := ops["patch"].(map[string]any)
		if !ok {
			t.Errorf("%s has PUT but no PATCH", path)
			continue
		}
		content := patch["requestBody"].(map[string]any)["content"].(map[string]any)
		if _, ok := content["application/merge-patch+json"]; !ok {
			t.Errorf("PATCH %s: no application/merge-patch+json body: %v", path, content)
		}
		if put := ops["put"].(map[string]any); !strings.Contains(put["summary"].(string), "left out is removed") {
			t.Errorf("PUT %s does not say that it replaces: %q", path, put["summary"])
		}
	}
	if len(e.api.SortedPaths()) < 40 {
		t.Fatalf("only %d endpoints registered", len(e.api.SortedPaths()))
	}
	schemas := generic["components"].(map[string]any)["schemas"].(map[string]any)
	for _, name := range []string{"Route", "Condition", "Target", "Redirect", "DirectResponse", "Service", "APIKey", "RateLimit", "IPRule", "Policy", "Tenant", "Settings", "ErrorBody"} {
		if _, ok := schemas[name]; !ok {
			t.Errorf("schema %s missing", name)
		}
	}
	route := schemas["Route"].(map[string]any)["properties"].(map[string]any)
	for _, f := range []string{"path_pattern"} {
		cond := schemas["Condition"].(map[string]any)["properties"].(map[string]any)
		if _, ok := cond[f]; !ok {
			t.Errorf("Condition.%s missing", f)
		}
	}
	for _, f := range []string{"load_balance", "require_auth", "timeout", "targets", "conditions", "redirect", "direct_response"} {
		if _, ok := route[f]; !ok {
			t.Errorf("Route.%s missing", f)
		}
	}
	if tm := route["timeout"].(map[string]any); tm["type"] != "string" {
		t.Errorf("timeout must be documented as a duration string: %v", tm)
	}
	// Every $ref resolves.
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				name := strings.TrimPrefix(ref, "#/components/schemas/")
				if _, ok := schemas[name]; !ok {
					t.Errorf("dangling $ref %s", ref)
				}
			}
			for _, vv := range x {
				walk(vv)
			}
		case []any:
			for _, vv := range x {
				walk(vv)
			}
		}
	}
	walk(generic)
}
