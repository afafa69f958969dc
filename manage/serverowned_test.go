package manage_test

import (
	"testing"
	"time"
)

// What the server sets is the server's on every write, not only on PATCH: a PUT that carries
// a last_heartbeat (a future one would keep an instance with a TTL from ever expiring) or a
// revoked_at keeps the server's value, as it does for created_at and updated_at.
func TestPutKeepsServerOwnedTimes(t *testing.T) {
	e := newEnv(t)
	future := "2999-01-01T00:00:00Z"
	past := "2001-01-01T00:00:00Z"
	svc := "/api/v1/management/services/s1"
	for _, w := range []struct{ method, path string }{{"PUT", svc}, {"PUT", svc}} { // create, then replace
		r := e.do(w.method, w.path, `{"name":"users","host":"10.0.0.1","port":80,"ttl":"10s","last_heartbeat":"`+future+`"}`)
		if r.code != 200 && r.code != 201 {
			t.Fatalf("PUT service: %d %s", r.code, r.raw)
		}
		hb, _ := time.Parse(time.RFC3339Nano, r.body["last_heartbeat"].(string))
		if hb.Year() == 2999 || time.Since(hb) > time.Minute {
			t.Fatalf("PUT set last_heartbeat to the client's %s: %s", future, r.raw)
		}
	}
	keys := "/api/v1/management/api-keys"
	if r := e.do("POST", keys, `{"id":"k1","name":"ci"}`); r.code != 201 {
		t.Fatalf("create key: %d %s", r.code, r.raw)
	}
	r := e.do("PUT", keys+"/k1", `{"name":"ci","revoked":true,"revoked_at":"`+past+`"}`)
	if r.code != 200 {
		t.Fatalf("revoke by PUT: %d %s", r.code, r.raw)
	}
	if at, _ := time.Parse(time.RFC3339Nano, r.body["revoked_at"].(string)); at.Year() == 2001 || time.Since(at) > time.Minute {
		t.Fatalf("PUT set revoked_at to the client's %s: %s", past, r.raw)
	}
	if r := e.do("POST", keys, `{"id":"k2","name":"ci","revoked_at":"`+past+`"}`); r.code != 201 || r.body["revoked_at"] != nil {
		t.Fatalf("an unrevoked key with a revoked_at: %d %s", r.code, r.raw)
	}
}
