package manage_test

import (
	"context"
	"testing"
)

// A whole number written as a float (80.0, 1e3) is refused by the API for a whole-number
// field; the same object in a file is refused too, for the same field, instead of being
// read as 80. A whole number stays one.
func TestFileAndAPIReadNumbersAlike(t *testing.T) {
	e := newEnv(t)
	cases := []struct{ yaml, json, field string }{
		{"services:\n  - {id: s1, name: users, host: 10.0.0.1, port: 80.0}\n", `{"id":"s1","name":"users","host":"10.0.0.1","port":80.0}`, "port"},
		{"api_keys:\n  - {id: k1, name: ci, quota: {per_day: 1e3}}\n", `{"id":"k1","name":"ci","quota":{"per_day":1e3}}`, "quota.per_day"},
	}
	for _, c := range cases {
		_, probs := e.api.CheckFileData(context.Background(), "n.yaml", []byte(c.yaml))
		if len(probs) != 1 || probs[0].Field != c.field {
			t.Errorf("file %q: %v", c.yaml, probs)
		}
		coll := "services"
		if c.field != "port" {
			coll = "api-keys"
		}
		if r := e.do("POST", "/api/v1/management/"+coll, c.json); r.code != 400 || detailFields(r)[c.field] == "" {
			t.Errorf("API %s: %d %s", c.json, r.code, r.raw)
		}
	}
	if _, probs := e.api.CheckFileData(context.Background(), "n.yaml", []byte("services:\n  - {id: s2, name: users, host: 10.0.0.1, port: 80}\n")); len(probs) != 0 {
		t.Errorf("a whole number: %v", probs)
	}
}
