// Package hostile sends the built binary's management API and its config-file commands
// input meant to break them: values that overflow, ids that are not path segments, control
// characters where headers are built, look-alike host names, and files of several YAML
// documents. Every one is refused with the field (or file:line) named, never stored.
package hostile

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Details []struct {
			Field   string `json:"field"`
			Problem string `json:"problem"`
		} `json:"details"`
	} `json:"error"`
}

func fields(t *testing.T, raw []byte) map[string]string {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("not a JSON error: %s", raw)
	}
	m := map[string]string{}
	for _, d := range e.Error.Details {
		m[d.Field] = d.Problem
	}
	return m
}

func route(id string) map[string]any {
	return map[string]any{"id": id, "require_auth": false,
		"conditions": []any{map[string]any{"path_pattern": "/" + id}},
		"targets":    []any{map[string]any{"host": "10.0.0.1", "port": 80}}}
}

func TestHostileRoutesThroughTheAPI(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{"LOG_LEVEL=warn"}})

	// One body, every kind of bad field: all reported in one 400, nothing stored.
	t.Run("every bad field at once", func(t *testing.T) {
		r := route("..")
		r["hosts"] = []string{"a\tb.example", "ok.example", "evil.example;x", "a,b.example", "nul\x00.example", "ex\u0430mple.com"}
		r["timeout"] = "99999999d"
		r["sticky_session"] = map[string]any{"path": "/cart\r\nSet-Cookie: admin=1", "ttl": 1e300}
		r["rewrite"] = map[string]any{"host": "backend\r\nX-Evil: 1"}
		code, raw := g.Do("POST", "/api/v1/management/routes", r, nil)
		if code != http.StatusBadRequest {
			t.Fatalf("POST: %d %s", code, raw)
		}
		f := fields(t, raw)
		for _, want := range []string{"id", "hosts[0]", "hosts[2]", "hosts[3]", "hosts[4]", "hosts[5]", "timeout",
			"sticky_session.path", "sticky_session.ttl", "rewrite.host"} {
			if _, ok := f[want]; !ok {
				t.Errorf("%s not reported: %v", want, f)
			}
		}
		if _, ok := f["hosts[1]"]; ok {
			t.Errorf("a good host reported: %v", f)
		}
		if !strings.Contains(f["timeout"], "out of range") || !strings.Contains(f["hosts[5]"], "punycode") {
			t.Errorf("problems: %v", f)
		}
	})

	// "." and ".." could be created and then never reached: the client (and Go's own mux)
	// cleans them out of the URL. Refused on create and as the id of a PUT.
	t.Run("dot ids", func(t *testing.T) {
		for _, id := range []string{".", ".."} {
			if code, raw := g.Do("POST", "/api/v1/management/routes", route(id), nil); code != http.StatusBadRequest {
				t.Fatalf("POST id %q: %d %s", id, code, raw)
			} else if _, ok := fields(t, raw)["id"]; !ok {
				t.Fatalf("POST id %q: id not named: %s", id, raw)
			}
		}
		if code, raw := g.Do("POST", "/api/v1/management/routes", route("v1.2"), nil); code != http.StatusCreated {
			t.Fatalf("an id with a dot inside: %d %s", code, raw)
		}
		if code, _ := g.Do("GET", "/api/v1/management/routes/v1.2", nil, nil); code != http.StatusOK {
			t.Fatalf("GET v1.2: %d", code)
		}
	})

	// Huge values are field errors (or the body limit), never a 5xx.
	t.Run("huge values", func(t *testing.T) {
		r := route(strings.Repeat("a", 10_000))
		r["hosts"] = []string{strings.Repeat("x", 100_000) + ".example"}
		r["timeout"] = 1e308
		code, raw := g.Do("POST", "/api/v1/management/routes", r, nil)
		if code != http.StatusBadRequest {
			t.Fatalf("POST: %d %.300s", code, raw)
		}
		f := fields(t, raw)
		for _, want := range []string{"id", "hosts[0]", "timeout"} {
			if _, ok := f[want]; !ok {
				t.Errorf("%s not reported: %.300v", want, f)
			}
		}
		big := `{"id":"big","conditions":[{"path_pattern":"/` + strings.Repeat("a", 20<<20) + `"}]}`
		if code, _ := g.Do("POST", "/api/v1/management/routes", big, nil); code < 400 || code >= 500 {
			t.Fatalf("a 20 MB body: %d", code)
		}
	})

	code, raw := g.Do("GET", "/api/v1/management/routes", nil, nil)
	if code != http.StatusOK || strings.Contains(string(raw), `"id":".."`) || strings.Contains(string(raw), "99999999") {
		t.Fatalf("stored after refusal: %d %.500s", code, raw)
	}
}

// `api-gateway validate -f` refuses a file of several YAML documents, naming the file and the
// line of each extra document; the first document alone used to be checked (and applied).
func TestValidateRefusesSeveralYAMLDocuments(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "gateway.yaml")
	doc := "routes:\n  - id: a\n    conditions: [{path_pattern: /a}]\n    targets: [{host: h, port: 80}]\n"
	if err := os.WriteFile(file, []byte(doc+"---\n"+strings.Replace(doc, "id: a", "id: b", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.BuildGateway(t), "validate", "-f", file)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), file+":5:") ||
		!strings.Contains(string(out), "second YAML document") {
		t.Fatalf("validate of two documents: %v\n%s", err, out)
	}
	if err := os.WriteFile(file, []byte("---\n"+doc+"---\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(testutil.BuildGateway(t), "validate", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("one document between markers: %v\n%s", err, out)
	}
}
