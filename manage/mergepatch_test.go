package manage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

const mp = "application/merge-patch+json"

func revOf(t *testing.T, r resp) string {
	t.Helper()
	n, ok := r.body["revision"].(float64)
	if !ok {
		t.Fatalf("no revision in %s", r.raw)
	}
	return fmt.Sprint(int(n))
}

// A merge patch changes the fields it names and nothing else: a value replaces, a null
// removes, an object merges key by key, an array replaces the whole array.
func TestPatchMergesOnlyWhatItNames(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/management/routes"
	r := e.do("POST", base, `{"id":"r1","name":"orders","conditions":[{"path_prefix":"/orders"}],
		"targets":[{"host":"10.0.0.1","port":8080},{"host":"10.0.0.2","port":8080}],
		"timeout":"30s","retries":2,"require_auth":false,"metadata":{"team":"a","tier":"gold"}}`)
	if r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	p := e.do("PATCH", base+"/r1", `{"timeout":"10s","retries":null,"metadata":{"tier":null,"owner":"b"},"targets":[{"host":"10.0.0.3","port":9090}]}`, "Content-Type", mp)
	if p.code != 200 {
		t.Fatalf("patch: %d %s", p.code, p.raw)
	}
	g := e.do("GET", base+"/r1", nil)
	if g.body["timeout"] != "10s" || g.body["retries"] != nil || g.body["name"] != "orders" || g.body["require_auth"] != false {
		t.Fatalf("scalars after the patch: %s", g.raw)
	}
	if md := g.body["metadata"].(map[string]any); !reflect.DeepEqual(md, map[string]any{"team": "a", "owner": "b"}) {
		t.Fatalf("metadata merges key by key: %v", md)
	}
	if ts := g.body["targets"].([]any); len(ts) != 1 || ts[0].(map[string]any)["host"] != "10.0.0.3" {
		t.Fatalf("an array replaces the whole array: %v", ts)
	}
	if g.hdr.Get("ETag") == r.hdr.Get("ETag") || g.body["created_at"] != r.body["created_at"] {
		t.Fatalf("a patch is a new revision of the same object: %s then %s", r.raw, g.raw)
	}
	// application/json is accepted as the same document.
	if p := e.do("PATCH", base+"/r1", `{"name":"orders-v2"}`); p.code != 200 || p.body["name"] != "orders-v2" || p.body["timeout"] != "10s" {
		t.Fatalf("patch as application/json: %d %s", p.code, p.raw)
	}
}

// PUT replaces: an API key PUT with only a new name drops its scopes and restrictions, as the
// README says. PATCH with only a new name keeps them, and the secret still works.
func TestAPIKeyPatchKeepsWhatPutReplaces(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/management/api-keys"
	create := `{"name":"ci","scopes":["read","write"],"restrictions":{"allowed_ips":["10.0.0.0/8"]},"quota":{"per_day":100}}`
	r := e.do("POST", base, create)
	if r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	id := r.body["id"].(string)
	hash := func() string {
		raw, err := e.store.Get(context.Background(), model.KindAPIKeys, id)
		if err != nil {
			t.Fatal(err)
		}
		var k model.APIKey
		_ = json.Unmarshal(raw.Data, &k)
		return k.SecretHash
	}
	h0 := hash()
	p := e.do("PATCH", base+"/"+id, `{"name":"ci-renamed"}`, "Content-Type", mp)
	if p.code != 200 || p.body["name"] != "ci-renamed" || p.body["scopes"] == nil || p.body["restrictions"] == nil || p.body["quota"] == nil {
		t.Fatalf("patch of the name must keep scopes, restrictions and quota: %d %s", p.code, p.raw)
	}
	if strings.Contains(string(p.raw), "secret_hash") || hash() != h0 {
		t.Fatalf("a patch keeps the secret and never shows its hash: %s", p.raw)
	}
	p = e.do("PATCH", base+"/"+id, `{"scopes":["read"],"restrictions":{"allowed_ips":null}}`, "Content-Type", mp)
	if p.code != 200 || !reflect.DeepEqual(p.body["scopes"], []any{"read"}) {
		t.Fatalf("patch scopes: %d %s", p.code, p.raw)
	}
	if u := e.do("PUT", base+"/"+id, `{"name":"only-a-name"}`); u.code != 200 || u.body["scopes"] != nil || u.body["quota"] != nil {
		t.Fatalf("PUT replaces the whole key: %d %s", u.code, u.raw)
	}
	if hash() != h0 {
		t.Fatal("PUT must keep the secret")
	}
}

// A patch may not change what no write may change: the id, the secret, server-owned fields.
// Each attempt is a 400 naming the field, all at once, and nothing is stored. Repeating a
// server-owned field's current value (a client patching back what it read) is no change.
func TestPatchRefusesServerOwnedFields(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/management/api-keys"
	r := e.do("POST", base, `{"id":"k1","name":"ci","scopes":["read"]}`)
	if r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	if o := e.do("POST", base, `{"id":"k2","name":"other"}`); o.code != 201 {
		t.Fatalf("create: %d %s", o.code, o.raw)
	}
	before := e.do("GET", base+"/k1", nil)
	p := e.do("PATCH", base+"/k1", `{"id":"k2","secret_hash":"sha256:00","created_at":"2020-01-01T00:00:00Z","updated_at":null,"revoked_at":"2020-01-01T00:00:00Z","name":"x"}`, "Content-Type", mp)
	fields := detailFields(p)
	for _, f := range []string{"id", "secret_hash", "created_at", "updated_at", "revoked_at"} {
		if _, ok := fields[f]; !ok {
			t.Errorf("%s not reported: %d %s", f, p.code, p.raw)
		}
	}
	if p.code != 400 {
		t.Fatalf("patching server-owned fields: %d %s", p.code, p.raw)
	}
	if after := e.do("GET", base+"/k1", nil); string(after.raw) != string(before.raw) {
		t.Fatalf("a refused patch changed the key:\n%s\n%s", before.raw, after.raw)
	}
	if k2 := e.do("GET", base+"/k2", nil); k2.body["name"] != "other" {
		t.Fatalf("patching the id to another key's id touched that key: %s", k2.raw)
	}
	// What GET answered, patched back with one change, is accepted.
	doc := before.body
	doc["name"] = "ci-2"
	ok := e.do("PATCH", base+"/k1", doc, "Content-Type", mp)
	if ok.code != 200 || ok.body["name"] != "ci-2" || ok.body["created_at"] != before.body["created_at"] {
		t.Fatalf("patching back the GET document: %d %s", ok.code, ok.raw)
	}
	// A route's status is the server's report, never the client's.
	if r := e.do("POST", "/api/v1/management/routes", seedRoute); r.code != 201 {
		t.Fatalf("create route: %d %s", r.code, r.raw)
	}
	rid := e.do("GET", "/api/v1/management/routes", nil).body["items"].([]any)[0].(map[string]any)["id"].(string)
	if p := e.do("PATCH", "/api/v1/management/routes/"+rid, `{"status":{}}`, "Content-Type", mp); p.code != 400 || detailFields(p)["status"] == "" {
		t.Fatalf("patching a route's status: %d %s", p.code, p.raw)
	}
}

// The merged object goes through PUT's validation: wrong types and bad values from the patch
// are reported together, a null for a required field is a field error, and nothing changes.
func TestPatchResultIsValidatedLikeAPut(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/management/routes"
	if r := e.do("POST", base, `{"id":"r1","conditions":[{"path_prefix":"/a"}],"targets":[{"host":"10.0.0.1","port":80}],"require_auth":false}`); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	before := e.do("GET", base+"/r1", nil)
	p := e.do("PATCH", base+"/r1", `{"timeout":"30 seconds","load_balance":"fastest","targets":[{"host":"10.0.0.1","port":70000}]}`, "Content-Type", mp)
	fields := detailFields(p)
	if p.code != 400 || len(fields) != 3 || fields["timeout"] == "" || fields["load_balance"] == "" || fields["targets[0].port"] == "" {
		t.Fatalf("a patch with one wrong type and two bad values: %d %s", p.code, p.raw)
	}
	if p := e.do("PATCH", base+"/r1", `{"targets":null}`, "Content-Type", mp); p.code != 400 || detailFields(p)["targets"] == "" {
		t.Fatalf("null for a required field: %d %s", p.code, p.raw)
	}
	if p := e.do("PATCH", base+"/r1", `{"retries":"three","no_such_field":1}`, "Content-Type", mp); p.code != 400 || detailFields(p)["retries"] == "" || detailFields(p)["no_such_field"] == "" {
		t.Fatalf("a patch that turns a type wrong: %d %s", p.code, p.raw)
	}
	if after := e.do("GET", base+"/r1", nil); string(after.raw) != string(before.raw) {
		t.Fatalf("a refused patch changed the route:\n%s\n%s", before.raw, after.raw)
	}
}

// Revisions, dry runs, missing objects and media types work as for PUT.
func TestPatchPreconditionsAndDryRun(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/management/tenants"
	r := e.do("POST", base, `{"id":"acme","name":"Acme"}`)
	if r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	rev := revOf(t, r)
	ok := e.do("PATCH", base+"/acme", `{"name":"Acme Inc"}`, "Content-Type", mp, "If-Match", `"`+rev+`"`)
	if ok.code != 200 {
		t.Fatalf("patch with the current revision: %d %s", ok.code, ok.raw)
	}
	if stale := e.do("PATCH", base+"/acme", `{"name":"stale"}`, "Content-Type", mp, "If-Match", rev); stale.code != 409 {
		t.Fatalf("patch with a stale If-Match: %d %s", stale.code, stale.raw)
	}
	if stale := e.do("PATCH", base+"/acme", `{"name":"stale","revision":`+rev+`}`, "Content-Type", mp); stale.code != 409 {
		t.Fatalf("patch with a stale revision field: %d %s", stale.code, stale.raw)
	}
	if bad := e.do("PATCH", base+"/acme", `{"revision":"latest"}`, "Content-Type", mp); bad.code != 400 || detailFields(bad)["revision"] == "" {
		t.Fatalf("a revision that is no revision: %d %s", bad.code, bad.raw)
	}
	dry := e.do("PATCH", base+"/acme?dry_run=true", `{"name":"Dry"}`, "Content-Type", mp)
	if dry.code != 200 || dry.body["dry_run"] != true || dry.body["object"].(map[string]any)["name"] != "Dry" {
		t.Fatalf("dry run: %d %s", dry.code, dry.raw)
	}
	if g := e.do("GET", base+"/acme", nil); g.body["name"] != "Acme Inc" {
		t.Fatalf("a dry run stored the patch: %s", g.raw)
	}
	if nf := e.do("PATCH", base+"/nope", `{"name":"x"}`, "Content-Type", mp); nf.code != 404 {
		t.Fatalf("patch of a missing object: %d %s", nf.code, nf.raw)
	}
	if nf := e.do("GET", base+"/nope", nil); nf.code != 404 {
		t.Fatalf("a patch of a missing object created it: %d", nf.code)
	}
	for _, ct := range []string{"application/json-patch+json", "text/plain", "application/x-www-form-urlencoded"} {
		if r := e.do("PATCH", base+"/acme", `{"name":"x"}`, "Content-Type", ct); r.code != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %s: %d %s", ct, r.code, r.raw)
		}
	}
	if r := e.do("PUT", base+"/acme", `{"name":"x"}`, "Content-Type", mp); r.code != http.StatusUnsupportedMediaType {
		t.Errorf("a merge patch sent to PUT: %d %s", r.code, r.raw)
	}
	if r := e.do("PATCH", base+"/acme", `{"name":"Charset"}`, "Content-Type", mp+"; charset=utf-8"); r.code != 200 {
		t.Errorf("media type parameters: %d %s", r.code, r.raw)
	}
}

// refuseNamed refuses every revision holding a tenant named "poison".
var refuseNamed = pipeline.ConsumerFunc{N: "named", F: func(_ context.Context, s *model.Snapshot) (func(), error) {
	for _, tn := range s.Tenants {
		if tn.Name == "poison" {
			return nil, fmt.Errorf("tenant %q is named poison", tn.ID)
		}
	}
	return func() {}, nil
}}

// A patch whose revision a consumer refuses is 409 revision_refused, as the PUT would be,
// and nothing is stored.
func TestPatchRefusedRevision(t *testing.T) {
	e := newEnvWith(t, refuseNamed)
	if r := e.do("POST", "/api/v1/management/tenants", `{"id":"acme","name":"Acme"}`); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	p := e.do("PATCH", "/api/v1/management/tenants/acme", `{"name":"poison"}`, "Content-Type", mp)
	if code, msg := errorOf(p); p.code != http.StatusConflict || code != "revision_refused" || !strings.Contains(msg, "named poison") {
		t.Fatalf("a refused patch: %d %s", p.code, p.raw)
	}
	if g := e.do("GET", "/api/v1/management/tenants/acme", nil); g.body["name"] != "Acme" {
		t.Fatalf("the refused patch is stored: %s", g.raw)
	}
}

// Hostile patch documents: not an object, malformed, trailing data, deep nesting, a body
// over the limit. Each is refused before anything is read or written.
func TestPatchHostileDocuments(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/management/tenants"
	if r := e.do("POST", base, `{"id":"acme","name":"Acme"}`); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	before := e.do("GET", base+"/acme", nil)
	deep := strings.Repeat(`{"a":`, 1000) + "1" + strings.Repeat("}", 1000)
	deepArr := `{"metadata":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + "}"
	for name, body := range map[string]string{
		"null": `null`, "array": `[{"name":"x"}]`, "string": `"x"`, "number": `1`, "empty": ``,
		"malformed": `{"name":`, "trailing": `{"name":"x"} {"name":"y"}`,
		"deep object": deep, "deep array": deepArr,
	} {
		r := e.do("PATCH", base+"/acme", body, "Content-Type", mp)
		if r.code != 400 {
			t.Errorf("%s: %d %s", name, r.code, r.raw)
		}
		if strings.HasPrefix(name, "deep") && !strings.Contains(string(r.raw), "nested deeper than") {
			t.Errorf("%s: not refused for its depth: %s", name, r.raw)
		}
	}
	huge := `{"name":"` + strings.Repeat("x", manage.MaxBody) + `"}`
	if r := e.do("PATCH", base+"/acme", huge, "Content-Type", mp); r.code != http.StatusRequestEntityTooLarge {
		t.Errorf("a body over the limit: %d", r.code)
	}
	if after := e.do("GET", base+"/acme", nil); string(after.raw) != string(before.raw) {
		t.Fatalf("a hostile patch changed the tenant:\n%s\n%s", before.raw, after.raw)
	}
}

// Every collection with /{id} answers PATCH, and settings too (from the defaults when none
// were ever stored).
func TestPatchOnEveryCollection(t *testing.T) {
	e := newEnv(t)
	cases := []struct{ kind, body, patch, field string }{
		{"routes", seedRoute, `{"name":"patched"}`, "name"},
		{"services", `{"id":"s1","name":"users","host":"10.1.2.3","port":9000}`, `{"zone":"patched"}`, "zone"},
		{"api-keys", `{"name":"ci"}`, `{"name":"patched"}`, "name"},
		{"rate-limits", `{"id":"rl1","algorithm":"fixed_window","requests_per_unit":10,"time_unit":"1m"}`, `{"name":"patched"}`, "name"},
		{"ip-rules", `{"id":"office","action":"allow","cidrs":["10.0.0.0/8"]}`, `{"comment":"patched"}`, "comment"},
		{"policies", `{"id":"p1","rules":[{"expression":"true","action":"allow"}]}`, `{"name":"patched"}`, "name"},
		{"tenants", `{"id":"acme"}`, `{"name":"patched"}`, "name"},
	}
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			base := "/api/v1/management/" + c.kind
			r := e.do("POST", base, c.body)
			if r.code != 201 {
				t.Fatalf("create: %d %s", r.code, r.raw)
			}
			id := r.body["id"].(string)
			p := e.do("PATCH", base+"/"+id, c.patch, "Content-Type", mp)
			if p.code != 200 || p.body[c.field] != "patched" {
				t.Fatalf("patch: %d %s", p.code, p.raw)
			}
			if g := e.do("GET", base+"/"+id, nil); g.body[c.field] != "patched" {
				t.Fatalf("after the patch: %s", g.raw)
			}
		})
	}
	s := e.do("PATCH", "/api/v1/management/settings", `{"auth":{"trusted_proxy_hops":1}}`, "Content-Type", mp)
	if s.code != 201 && s.code != 200 {
		t.Fatalf("patch of never-stored settings: %d %s", s.code, s.raw)
	}
	s = e.do("PATCH", "/api/v1/management/settings", `{"auth":{"max_token_bytes":4096}}`, "Content-Type", mp)
	auth, _ := s.body["auth"].(map[string]any)
	if s.code != 200 || auth["trusted_proxy_hops"] != float64(1) || auth["max_token_bytes"] != float64(4096) {
		t.Fatalf("settings patches merge: %d %s", s.code, s.raw)
	}
	if s := e.do("PATCH", "/api/v1/management/settings", `{"id":"other"}`, "Content-Type", mp); s.code != 400 {
		t.Fatalf("patching the settings id: %d %s", s.code, s.raw)
	}
}

// racingStore is the store with another writer: armed, the next read of the object is
// followed by that writer's change, before the reader can write.
type racingStore struct {
	store.Store
	mu    sync.Mutex
	armed func()
}

func (s *racingStore) Get(ctx context.Context, kind model.Kind, id string) (model.RawObject, error) {
	raw, err := s.Store.Get(ctx, kind, id)
	s.mu.Lock()
	race := s.armed
	s.armed = nil
	s.mu.Unlock()
	if race != nil {
		race()
	}
	return raw, err
}

// A patch without If-Match applies to the revision it merged into: when another writer
// changes the object between the patch's read and its write, the patch answers 409 instead
// of overwriting that change with a merge of the older object.
func TestPatchAfterAnotherWriteIsAConflictNotALostUpdate(t *testing.T) {
	bolt, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	st := &racingStore{Store: bolt}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	pipe := pipeline.New(st, log)
	api := manage.New(manage.Options{Store: st, Model: pipe, Keys: sha256Minter{}, Logger: log, AdminTokenHash: manage.HashToken(token)})
	if err := pipe.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go pipe.Run(ctx)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	e := &env{t: t, srv: srv, store: st, api: api, pipe: pipe}

	base := "/api/v1/management/tenants"
	r := e.do("POST", base, `{"id":"acme","metadata":{"seed":"x"}}`)
	if r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	st.mu.Lock()
	st.armed = func() {
		if _, err := store.Put(context.Background(), bolt, model.KindTenants, "acme", []byte(`{"id":"acme","metadata":{"seed":"x","other":"writer"}}`), 0); err != nil {
			t.Error(err)
		}
	}
	st.mu.Unlock()
	p := e.do("PATCH", base+"/acme", `{"metadata":{"mine":"v"}}`, "Content-Type", mp)
	if p.code != http.StatusConflict {
		t.Fatalf("a patch merged into a revision another write replaced: %d %s", p.code, p.raw)
	}
	if md := e.do("GET", base+"/acme", nil).body["metadata"].(map[string]any); md["other"] != "writer" {
		t.Fatalf("the other writer's change is lost: %v", md)
	}
	// Read again and retried, the patch applies on top of the other change.
	p = e.do("PATCH", base+"/acme", `{"metadata":{"mine":"v"}}`, "Content-Type", mp)
	if md, _ := p.body["metadata"].(map[string]any); p.code != 200 || md["other"] != "writer" || md["mine"] != "v" {
		t.Fatalf("the retried patch: %d %s", p.code, p.raw)
	}
}

// A patch cannot make an object larger than a PUT body may be: patches each under the limit
// that together would grow it past the limit are a 413, as the PUT of the merged object
// would be, and the object stays as it was. (A GET of it could not be PUT back otherwise.)
func TestPatchCannotGrowAnObjectPastTheBodyLimit(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/management/tenants"
	if r := e.do("POST", base, `{"id":"acme"}`); r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	fill := func(prefix string) string {
		var b strings.Builder
		b.WriteString(`{"metadata":{`)
		for i := 0; b.Len() < manage.MaxBody*3/5; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"%s%d":"%s"`, prefix, i, strings.Repeat("v", 64))
		}
		b.WriteString(`}}`)
		return b.String()
	}
	if r := e.do("PATCH", base+"/acme", fill("a"), "Content-Type", mp); r.code != 200 {
		t.Fatalf("a patch under the limit: %d %.300s", r.code, r.raw)
	}
	before := e.do("GET", base+"/acme", nil)
	if r := e.do("PATCH", base+"/acme", fill("b"), "Content-Type", mp); r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a patch that grows the object past %d bytes: %d %.300s", manage.MaxBody, r.code, r.raw)
	}
	if after := e.do("GET", base+"/acme", nil); string(after.raw) != string(before.raw) {
		t.Fatal("a refused patch changed the tenant")
	}
}
