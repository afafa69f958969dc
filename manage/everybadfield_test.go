package manage_test

import (
	"testing"
)

// A body with a wrong type, bad values and a reference to a missing object reports all of
// them in one 400: the checks that need the rest of the model run on what decoded, and a
// refused value is reported once, not again for what its absence makes the object lack.
func TestEveryBadFieldAtOnceAcrossKindsOfCheck(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/management/routes", `{"id":"r1","conditions":[{"path_prefix":"/a"}],
		"targets":[{"host":"10.0.0.1","port":70000}],"timeout":"30 seconds","load_balance":"fastest",
		"rate_limit":{"policies":["missing"]},"auth":{"ip_rules":["gone"]}}`)
	got := detailFields(r)
	for _, f := range []string{"timeout", "load_balance", "targets[0].port", "rate_limit.policies[0]", "auth.ip_rules[0]"} {
		if got[f] == "" {
			t.Errorf("%s not reported: %s", f, r.raw)
		}
	}
	if r.code != 400 || len(got) != 5 {
		t.Fatalf("want 5 problems in one 400: %d %s", r.code, r.raw)
	}
	r = e.do("POST", "/api/v1/management/routes", `{"id":"r2","conditions":[{"path_prefix":"/b"}],"targets":"everywhere","rate_limit":{"policies":["missing"]}}`)
	got = detailFields(r)
	if r.code != 400 || len(got) != 2 || got["targets"] != "must be an array" || got["rate_limit.policies[0]"] == "" {
		t.Fatalf("a wrong-typed required field is reported once, with the reference: %d %s", r.code, r.raw)
	}
	r = e.do("PUT", "/api/v1/management/routes/r3", `{"id":"other","conditions":[{"path_prefix":"/c"}],"targets":[{"host":"h","port":80}],"retries":"x"}`)
	if got := detailFields(r); r.code != 400 || got["id"] == "" || got["retries"] == "" {
		t.Fatalf("a body id that is not the path's, with a wrong type: %d %s", r.code, r.raw)
	}
	r = e.do("POST", "/api/v1/management/api-keys", `{"name":"ci","scopes":"all","secret_hash":"sha256:00"}`)
	if got := detailFields(r); r.code != 400 || got["scopes"] == "" || got["secret_hash"] == "" {
		t.Fatalf("a key body setting its hash, with a wrong type: %d %s", r.code, r.raw)
	}
	if g := e.do("GET", "/api/v1/management/routes", nil); g.body["count"] != float64(0) {
		t.Fatalf("a refused write stored something: %s", g.raw)
	}
}
