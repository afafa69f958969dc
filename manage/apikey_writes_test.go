package manage_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/manage"
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
	old, rotated := "sha256:"+strings.Repeat("aa", 32), "sha256:"+strings.Repeat("bb", 32)
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

// A secret_hash in a file that is no SHA-256 digest ("sha256:" and 64 hex digits) is refused
// with its line: such a key would be stored and never let anyone in.
func TestFileSecretHashMustBeADigest(t *testing.T) {
	for _, h := range []string{"sha256:aa", "sha256:" + strings.Repeat("zz", 32), "sha256:" + strings.Repeat("aa", 33), "md5:" + strings.Repeat("aa", 16), "agw_k_secret"} {
		_, probs := manage.ParseFile("k.yaml", []byte("api_keys:\n  - id: k\n    name: k\n    secret_hash: \""+h+"\"\n"))
		if len(probs) != 1 || probs[0].Field != "secret_hash" || probs[0].Line != 4 {
			t.Errorf("secret_hash %q: %v", h, probs)
		}
	}
	if _, probs := manage.ParseFile("k.yaml", []byte("api_keys:\n  - id: k\n    name: k\n    secret_hash: \"sha256:"+strings.Repeat("aB", 32)+"\"\n")); len(probs) != 0 {
		t.Errorf("a digest: %v", probs)
	}
}
