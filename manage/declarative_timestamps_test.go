package manage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/model"
)

// A YAML scalar that looks like a date is the text written, as a JSON string in a body is:
// a string field keeps it unchanged, and a time field takes what the API takes (RFC 3339)
// and refuses what the API refuses, for the same field.
func TestFileReadsDatesAsTheAPIDoes(t *testing.T) {
	e := newEnv(t)
	file := "routes:\n" +
		"  - id: r1\n" +
		"    conditions: [{path_prefix: /r1}]\n" +
		"    targets: [{host: 10.0.0.1, port: 80}]\n" +
		"    require_auth: false\n" +
		"    metadata: {released: 2024-01-01, at: 2024-01-01 10:00:00}\n" +
		"ip_rules:\n" +
		"  - {id: ok, cidrs: [10.0.0.0/8], action: deny, expires_at: 2030-01-01T00:00:00Z}\n"
	objs, probs := e.api.CheckFileData(context.Background(), "d.yaml", []byte(file))
	if len(probs) != 0 {
		t.Fatalf("problems: %v", probs)
	}
	for _, o := range objs {
		if r, ok := o.Obj.(*model.Route); ok {
			if r.Metadata["released"] != "2024-01-01" || r.Metadata["at"] != "2024-01-01 10:00:00" {
				t.Errorf("the metadata was rewritten: %v", r.Metadata)
			}
		}
	}

	bad := "ip_rules:\n  - {id: day, cidrs: [10.0.0.0/8], action: deny, expires_at: 2030-01-01}\n"
	_, probs = e.api.CheckFileData(context.Background(), "d.yaml", []byte(bad))
	if len(probs) != 1 || probs[0].Field != "expires_at" {
		t.Errorf("a date that is not RFC 3339 in a file: %v", probs)
	}
	if r := e.do("POST", "/api/v1/management/ip-rules", `{"id":"day","cidrs":["10.0.0.0/8"],"action":"deny","expires_at":"2030-01-01"}`); r.code != 400 || detailFields(r)["expires_at"] == "" {
		t.Errorf("the API: %d %s", r.code, r.raw)
	}

	// An alias to a date is read as text too, and an explicit !!timestamp stays the author's.
	aliased := "routes:\n" +
		"  - id: r2\n" +
		"    conditions: [{path_prefix: /r2}]\n" +
		"    targets: [{host: 10.0.0.1, port: 80}]\n" +
		"    require_auth: false\n" +
		"    metadata: {a: &d 2024-02-02, b: *d}\n"
	objs, probs = e.api.CheckFileData(context.Background(), "d.yaml", []byte(aliased))
	if len(probs) != 0 {
		t.Fatalf("problems: %v", probs)
	}
	for _, o := range objs {
		if r, ok := o.Obj.(*model.Route); ok && (r.Metadata["a"] != "2024-02-02" || r.Metadata["b"] != "2024-02-02") {
			t.Errorf("an aliased date: %v", r.Metadata)
		}
	}
	tagged := "ip_rules:\n  - {id: t, cidrs: [10.0.0.0/8], action: deny, expires_at: !!timestamp 2030-01-01}\n"
	if _, probs := e.api.CheckFileData(context.Background(), "d.yaml", []byte(tagged)); len(probs) != 0 && !strings.Contains(probs[0].Field, "expires_at") {
		t.Errorf("an explicit timestamp: %v", probs)
	}
}
