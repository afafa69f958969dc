package manage_test

import "testing"

// A JSON body that names a field twice is refused with the field, as a declarative file with
// a key written twice is. Parsers disagree on which of the two wins (Go's last, many others
// the first): a proxy or audit log in front of the API could read another value than the
// gateway stores. Nested objects and merge patches are checked too, and the body's other
// problems are still reported.
func TestDuplicateJSONKeysAreRefused(t *testing.T) {
	e := newEnv(t)
	if r := e.do("POST", "/api/v1/management/api-keys", `{"id":"k1","name":"ci","scopes":["read"]}`); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	before := e.do("GET", "/api/v1/management/api-keys/k1", nil)
	for _, c := range []struct {
		method, path, body string
		fields             []string
	}{
		{"POST", "/api/v1/management/tenants", `{"id":"t1","name":"a","name":"b"}`, []string{"name"}},
		{"POST", "/api/v1/management/tenants", `{"id":"t1","metadata":{"team":"a","team":"b"},"disabled":"perhaps"}`, []string{"metadata.team", "disabled"}},
		{"PUT", "/api/v1/management/api-keys/k1", `{"name":"ci","scopes":["read"],"scopes":["admin"]}`, []string{"scopes"}},
		{"PATCH", "/api/v1/management/api-keys/k1", `{"scopes":["admin"],"scopes":["read"]}`, []string{"scopes"}},
		{"PATCH", "/api/v1/management/api-keys/k1", `{"restrictions":{"allowed_ips":["10.0.0.0/8"],"allowed_ips":[]}}`, []string{"restrictions.allowed_ips"}},
		{"POST", "/api/v1/management/routes", `{"id":"r1","conditions":[{"path_prefix":"/a","path_prefix":"/b"}],"targets":[{"host":"10.0.0.1","port":80}],"require_auth":false}`, []string{"conditions[0].path_prefix"}},
	} {
		hdr := []string{}
		if c.method == "PATCH" {
			hdr = []string{"Content-Type", mp}
		}
		r := e.do(c.method, c.path, c.body, hdr...)
		fields := detailFields(r)
		if r.code != 400 || len(fields) != len(c.fields) {
			t.Errorf("%s %s %s: %d %s", c.method, c.path, c.body, r.code, r.raw)
			continue
		}
		for _, f := range c.fields {
			if fields[f] == "" {
				t.Errorf("%s %s: %s not named: %s", c.method, c.body, f, r.raw)
			}
		}
	}
	if g := e.do("GET", "/api/v1/management/tenants/t1", nil); g.code != 404 {
		t.Fatalf("a refused body was stored: %d %s", g.code, g.raw)
	}
	if after := e.do("GET", "/api/v1/management/api-keys/k1", nil); string(after.raw) != string(before.raw) {
		t.Fatalf("a refused write changed the key:\n%s\n%s", before.raw, after.raw)
	}
}

// A body that is not UTF-8 is refused, as JSON (RFC 8259) and a YAML file require: Go would
// store each bad byte as U+FFFD, so two names that differ only in bad bytes would become one
// name, silently, and a value would be stored other than it was sent.
func TestBodyThatIsNotUTF8IsRefused(t *testing.T) {
	e := newEnv(t)
	if r := e.do("POST", "/api/v1/management/tenants", "{\"id\":\"t1\",\"name\":\"caf\xe9\"}"); r.code != 400 {
		t.Fatalf("POST: %d %s", r.code, r.raw)
	}
	if r := e.do("POST", "/api/v1/management/tenants", `{"id":"t1"}`); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	if r := e.do("PATCH", "/api/v1/management/tenants/t1", "{\"metadata\":{\"k\xff\":\"a\",\"k\xfe\":\"b\"}}", "Content-Type", mp); r.code != 400 {
		t.Fatalf("PATCH: %d %s", r.code, r.raw)
	}
	if g := e.do("GET", "/api/v1/management/tenants/t1", nil); g.body["metadata"] != nil {
		t.Fatalf("a refused patch was stored: %s", g.raw)
	}
}
