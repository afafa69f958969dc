package manage_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/api-gateway/api-gateway/model"
)

// A revoked key stays revoked: no write brings it back, whether it says so (revoked false or
// null in a PATCH or a PUT) or leaves the field out (a PUT replaces, a file re-applied after
// the revoke). A leaked key an operator revoked must not start working again because
// someone renamed it, nor on the next SIGHUP. rotate refuses a revoked key for the same
// reason; a new key is how access is given back.
func TestRevokedKeyStaysRevoked(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/management/api-keys"
	if r := e.do("POST", base, `{"id":"leaked","name":"ci","scopes":["read"]}`); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	rv := e.do("POST", base+"/leaked/revoke", nil)
	if rv.code != 200 || rv.body["revoked"] != true {
		t.Fatalf("revoke: %d %s", rv.code, rv.raw)
	}
	stored := func() *model.APIKey {
		t.Helper()
		raw, err := e.store.Get(context.Background(), model.KindAPIKeys, "leaked")
		if err != nil {
			t.Fatal(err)
		}
		var k model.APIKey
		if err := json.Unmarshal(raw.Data, &k); err != nil {
			t.Fatal(err)
		}
		return &k
	}
	revokedAt := stored().RevokedAt
	if revokedAt == nil {
		t.Fatal("a revoked key has no revoked_at")
	}
	for _, w := range []struct{ method, body string }{
		{"PATCH", `{"revoked":false}`},
		{"PATCH", `{"revoked":null}`},
		{"PATCH", `{"revoked":false,"name":"renamed"}`},
		{"PUT", `{"name":"ci","scopes":["read"],"revoked":false}`},
		{"PUT", `{"name":"ci","scopes":["read"]}`},
	} {
		ct := "application/json"
		if w.method == "PATCH" {
			ct = mp
		}
		r := e.do(w.method, base+"/leaked", w.body, "Content-Type", ct)
		if r.code != 400 || detailFields(r)["revoked"] == "" {
			t.Errorf("%s %s on a revoked key: %d %s", w.method, w.body, r.code, r.raw)
		}
		if k := stored(); !k.Revoked || k.RevokedAt == nil || !k.RevokedAt.Equal(*revokedAt) {
			t.Fatalf("%s %s brought the key back: %+v", w.method, w.body, k)
		}
	}
	// Other changes to a revoked key are writes like any other; it stays revoked.
	if r := e.do("PATCH", base+"/leaked", `{"name":"leaked-ci"}`, "Content-Type", mp); r.code != 200 || r.body["revoked"] != true {
		t.Fatalf("rename a revoked key: %d %s", r.code, r.raw)
	}
	if r := e.do("PUT", base+"/leaked", `{"name":"leaked-ci","revoked":true}`); r.code != 200 || r.body["revoked"] != true {
		t.Fatalf("PUT of a revoked key that keeps it revoked: %d %s", r.code, r.raw)
	}
	if k := stored(); !k.Revoked || !k.RevokedAt.Equal(*revokedAt) {
		t.Fatalf("revoked_at moved: %+v", k)
	}
	// A declarative file that still lists the key unrevoked (written before the revoke) does
	// not bring it back when it is applied again.
	path := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(path, []byte("api_keys:\n  - id: leaked\n    name: leaked-ci\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.api.ApplyFile(t.Context(), path); err != nil {
		t.Fatal(err)
	}
	if k := stored(); !k.Revoked || !k.RevokedAt.Equal(*revokedAt) {
		t.Fatalf("re-applying the file brought the key back: %+v", k)
	}
}

// A file that sets an API key's secret_hash sets it, also for a key already stored: an
// operator who rotates a leaked secret by writing its new hash in the file and reloading
// must not be left with the old secret working and the new one refused. A file without a
// secret_hash keeps the stored one.
func TestFileSecretHashReplacesTheStoredOne(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "gw.yaml")
	apply := func(hash string) {
		t.Helper()
		body := "api_keys:\n  - id: deploy\n    name: deploy\n"
		if hash != "" {
			body += "    secret_hash: \"" + hash + "\"\n"
		}
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := e.api.ApplyFile(t.Context(), path); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() string {
		t.Helper()
		raw, err := e.store.Get(context.Background(), model.KindAPIKeys, "deploy")
		if err != nil {
			t.Fatal(err)
		}
		var k model.APIKey
		if err := json.Unmarshal(raw.Data, &k); err != nil {
			t.Fatal(err)
		}
		return k.SecretHash
	}
	const old, rotated = "sha256:" + "aa", "sha256:" + "bb"
	apply(old)
	if h := stored(); h != old {
		t.Fatalf("first apply: %q", h)
	}
	apply(rotated)
	if h := stored(); h != rotated {
		t.Fatalf("the file's new secret_hash was dropped: stored %q, file %q", h, rotated)
	}
	apply("")
	if h := stored(); h != rotated {
		t.Fatalf("a file without secret_hash must keep the stored one: %q", h)
	}
}
