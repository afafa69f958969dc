package manage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

const token = "test-admin-token"

// sha256Minter mints secrets the way a deployment would: random, hashed, hash stored.
type sha256Minter struct{}

func (sha256Minter) NewSecret(id string) (string, string, error) {
	s := "agw_" + id + "_" + hex.EncodeToString([]byte(id+"-secret"))
	h := sha256.Sum256([]byte(s))
	return s, "sha256:" + hex.EncodeToString(h[:]), nil
}

type env struct {
	t     *testing.T
	srv   *httptest.Server
	store store.Store
	api   *manage.API
	pipe  *pipeline.Pipeline
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t)
}

// newEnvWith is newEnv with pipeline consumers.
func newEnvWith(t *testing.T, consumers ...pipeline.Consumer) *env {
	t.Helper()
	return newEnvWait(t, 0, consumers...)
}

// newEnvWait is newEnvWith with the API's WriteWait (0: the default).
func newEnvWait(t *testing.T, wait time.Duration, consumers ...pipeline.Consumer) *env {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	pipe := pipeline.New(st, log, consumers...)
	api := manage.New(manage.Options{Store: st, Model: pipe, Keys: sha256Minter{}, Logger: log, AdminTokenHash: manage.HashToken(token), CORSOrigins: []string{"https://console.example"}, WriteWait: wait})
	if err := pipe.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go pipe.Run(ctx)
	t.Cleanup(cancel)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, store: st, api: api, pipe: pipe}
}

type resp struct {
	code int
	hdr  http.Header
	body map[string]any
	raw  []byte
}

func (e *env) do(method, path string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp{code: res.StatusCode, hdr: res.Header, body: m, raw: raw}
}

const seedRoute = `{
  "id": "user-service",
  "name": "User Service",
  "conditions": [{"path_pattern": "/api/v1/users/*", "method": "GET"}],
  "targets": [{"host": "user-service", "port": 8080, "weight": 100, "healthy": true}],
  "load_balance": "weighted",
  "timeout": "30s",
  "retries": 3,
  "require_auth": true
}`

func TestSeedShapesAcceptedVerbatim(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/management/routes", seedRoute)
	if r.code != 201 {
		t.Fatalf("seed route: %d %s", r.code, r.raw)
	}
	if r.body["timeout"] != "30s" || r.body["load_balance"] != "weighted" {
		t.Fatalf("route echoed wrong: %s", r.raw)
	}
	svc := `{"name": "user-service", "host": "user-service.local", "port": 8080, "health": "http://user-service.local:8080/health"}`
	if r := e.do("POST", "/api/v1/management/services", svc); r.code != 201 || r.body["id"] != "user-service-user-service.local-8080" {
		t.Fatalf("seed service: %d %s", r.code, r.raw)
	}
	key := `{"name": "Mobile App Key", "scopes": ["read", "write"], "restrictions": {"allowed_ips": ["192.168.1.0/24"]}}`
	if r := e.do("POST", "/api/v1/management/api-keys", key); r.code != 201 {
		t.Fatalf("seed key: %d %s", r.code, r.raw)
	}
	rl := `{"id": "std", "strategy": "token_bucket", "requests_per_unit": 100, "time_unit": "1m", "burst_capacity": 150,
	  "headers": {"enable": true, "remaining": true, "reset": true, "total": true, "retry_after": true}}`
	if r := e.do("POST", "/api/v1/management/rate-limits", rl); r.code != 201 {
		t.Fatalf("seed rate limit: %d %s", r.code, r.raw)
	}
	waf := `{"waf": {"enabled": true, "block_malicious_ips": true, "max_request_body_size": 10485760, "max_header_size": 8192, "geoblocking_enabled": false, "blocked_countries": []}}`
	if r := e.do("PUT", "/api/v1/management/settings", waf); r.code != 201 && r.code != 200 {
		t.Fatalf("seed WAF settings: %d %s", r.code, r.raw)
	}
}

func TestRouteCRUD(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/management/routes", seedRoute)
	if r.code != 201 || r.hdr.Get("Location") != "/api/v1/management/routes/user-service" {
		t.Fatalf("create: %d %v", r.code, r.hdr)
	}
	rev := r.body["revision"].(float64)
	if e.pipe.Applied() < uint64(rev) {
		t.Fatalf("write answered before revision %v was applied (applied %d)", rev, e.pipe.Applied())
	}
	g := e.do("GET", "/api/v1/management/routes/user-service", nil)
	if g.code != 200 || g.hdr.Get("ETag") != fmt.Sprintf(`"%d"`, int(rev)) || g.body["name"] != "User Service" {
		t.Fatalf("get: %d %v %s", g.code, g.hdr, g.raw)
	}
	l := e.do("GET", "/api/v1/management/routes", nil)
	if l.code != 200 || l.body["count"].(float64) != 1 {
		t.Fatalf("list: %s", l.raw)
	}
	upd := strings.Replace(seedRoute, `"User Service"`, `"Users v2"`, 1)
	u := e.do("PUT", "/api/v1/management/routes/user-service", upd, "If-Match", fmt.Sprintf(`"%d"`, int(rev)))
	if u.code != 200 || u.body["name"] != "Users v2" || u.body["created_at"] != r.body["created_at"] {
		t.Fatalf("put: %d %s", u.code, u.raw)
	}
	stale := e.do("PUT", "/api/v1/management/routes/user-service", upd, "If-Match", fmt.Sprint(int(rev)))
	if stale.code != 409 || stale.body["error"].(map[string]any)["code"] != "conflict" {
		t.Fatalf("stale put: %d %s", stale.code, stale.raw)
	}
	// The revision field in the body works like If-Match.
	var withRev map[string]any
	_ = json.Unmarshal([]byte(upd), &withRev)
	withRev["revision"] = rev
	if s := e.do("PUT", "/api/v1/management/routes/user-service", withRev); s.code != 409 {
		t.Fatalf("stale body revision: %d %s", s.code, s.raw)
	}
	if d := e.do("DELETE", "/api/v1/management/routes/user-service", nil, "If-Match", fmt.Sprint(int(rev))); d.code != 409 {
		t.Fatalf("stale delete: %d", d.code)
	}
	if d := e.do("DELETE", "/api/v1/management/routes/user-service", nil); d.code != 204 {
		t.Fatalf("delete: %d %s", d.code, d.raw)
	}
	if g := e.do("GET", "/api/v1/management/routes/user-service", nil); g.code != 404 {
		t.Fatalf("get deleted: %d", g.code)
	}
	if d := e.do("DELETE", "/api/v1/management/routes/user-service", nil); d.code != 404 {
		t.Fatalf("delete missing: %d", d.code)
	}
	// PUT to a new id creates.
	if p := e.do("PUT", "/api/v1/management/routes/new-one", seedRoute); p.code != 400 {
		t.Fatalf("id mismatch between path and body must be 400, got %d", p.code)
	}
	noID := strings.Replace(seedRoute, `"id": "user-service",`, "", 1)
	if p := e.do("PUT", "/api/v1/management/routes/new-one", noID); p.code != 201 || p.body["id"] != "new-one" {
		t.Fatalf("put-create: %d %s", p.code, p.raw)
	}
	if p := e.do("POST", "/api/v1/management/routes", noID); p.code != 201 || p.body["id"] == "" {
		t.Fatalf("create without id gets a generated id: %d %s", p.code, p.raw)
	}
}

func TestOtherKindsCRUD(t *testing.T) {
	e := newEnv(t)
	cases := []struct{ kind, body, update string }{
		{"ip-rules", `{"id":"office","action":"allow","cidrs":["10.0.0.0/8","2001:db8::/32"]}`, `{"action":"deny","cidrs":["10.0.0.0/8"]}`},
		{"policies", `{"id":"no-delete","rules":[{"expression":"request.method == \"DELETE\"","action":"deny"}]}`, `{"rules":[{"expression":"true","action":"allow"}]}`},
		{"tenants", `{"id":"acme","name":"Acme"}`, `{"name":"Acme Inc"}`},
		{"rate-limits", `{"id":"rl1","algorithm":"fixed_window","requests_per_unit":10,"time_unit":"1m"}`, `{"algorithm":"sliding_window","requests_per_unit":20,"time_unit":"1h"}`},
		{"services", `{"id":"s1","name":"users","host":"10.1.2.3","port":9000}`, `{"name":"users","host":"10.1.2.4","port":9000}`},
	}
	for _, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			base := "/api/v1/management/" + c.kind
			r := e.do("POST", base, c.body)
			if r.code != 201 {
				t.Fatalf("create: %d %s", r.code, r.raw)
			}
			id := r.body["id"].(string)
			if g := e.do("GET", base+"/"+id, nil); g.code != 200 {
				t.Fatalf("get: %d", g.code)
			}
			if u := e.do("PUT", base+"/"+id, c.update, "If-Match", fmt.Sprint(int(r.body["revision"].(float64)))); u.code != 200 {
				t.Fatalf("update: %d %s", u.code, u.raw)
			}
			if l := e.do("GET", base, nil); l.code != 200 || l.body["count"].(float64) != 1 {
				t.Fatalf("list: %s", l.raw)
			}
			if d := e.do("DELETE", base+"/"+id, nil); d.code != 204 {
				t.Fatalf("delete: %d", d.code)
			}
		})
	}
}

func TestAPIKeyLifecycle(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/management/api-keys", `{"name":"ci","scopes":["read"]}`)
	if r.code != 201 {
		t.Fatalf("create: %d %s", r.code, r.raw)
	}
	id, secret := r.body["id"].(string), r.body["key"].(string)
	if secret == "" || strings.Contains(string(r.raw), "secret_hash") {
		t.Fatalf("create must return the secret once and never the hash: %s", r.raw)
	}
	for _, path := range []string{"/api/v1/management/api-keys", "/api/v1/management/api-keys/" + id} {
		g := e.do("GET", path, nil)
		if strings.Contains(string(g.raw), secret) || strings.Contains(string(g.raw), "secret_hash") || strings.Contains(string(g.raw), `"key"`) {
			t.Fatalf("%s leaks the secret: %s", path, g.raw)
		}
	}
	raw, _ := e.store.Get(context.Background(), model.KindAPIKeys, id)
	if strings.Contains(string(raw.Data), secret) || !strings.Contains(string(raw.Data), "sha256:") {
		t.Fatalf("the store must hold only the hash: %s", raw.Data)
	}
	if u := e.do("PUT", "/api/v1/management/api-keys/"+id, `{"name":"ci","scopes":["read"],"secret_hash":"sha256:00"}`); u.code != 400 {
		t.Fatalf("secret_hash must be read-only: %d", u.code)
	}
	u := e.do("PUT", "/api/v1/management/api-keys/"+id, `{"name":"ci-renamed","scopes":["read","write"]}`)
	if u.code != 200 {
		t.Fatalf("update: %d %s", u.code, u.raw)
	}
	after, _ := e.store.Get(context.Background(), model.KindAPIKeys, id)
	var k model.APIKey
	_ = json.Unmarshal(after.Data, &k)
	var k0 model.APIKey
	_ = json.Unmarshal(raw.Data, &k0)
	if k.SecretHash != k0.SecretHash || k.Name != "ci-renamed" {
		t.Fatalf("update must keep the hash: %+v", k)
	}
	rot := e.do("POST", "/api/v1/management/api-keys/"+id+"/rotate", nil)
	if rot.code != 200 || rot.body["key"] == "" {
		t.Fatalf("rotate: %d %s", rot.code, rot.raw)
	}
	rv := e.do("POST", "/api/v1/management/api-keys/"+id+"/revoke", nil)
	if rv.code != 200 || rv.body["revoked"] != true || rv.body["revoked_at"] == nil {
		t.Fatalf("revoke: %d %s", rv.code, rv.raw)
	}
	if rot := e.do("POST", "/api/v1/management/api-keys/"+id+"/rotate", nil); rot.code != 409 {
		t.Fatalf("rotating a revoked key: %d", rot.code)
	}
	if rv := e.do("POST", "/api/v1/management/api-keys/nope/revoke", nil); rv.code != 404 {
		t.Fatalf("revoke unknown: %d", rv.code)
	}
}

func TestServicesHeartbeat(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/management/services", `{"name":"users","host":"10.0.0.5","port":8080,"ttl":"30s"}`)
	if r.code != 201 {
		t.Fatalf("register: %d %s", r.code, r.raw)
	}
	id := r.body["id"].(string)
	again := e.do("POST", "/api/v1/management/services", `{"name":"users","host":"10.0.0.5","port":8080,"ttl":"30s","weight":3}`)
	if again.code != 200 || again.body["weight"].(float64) != 3 {
		t.Fatalf("re-register is an upsert: %d %s", again.code, again.raw)
	}
	hb := e.do("PUT", "/api/v1/management/services/"+id+"/heartbeat", nil)
	if hb.code != 200 || hb.body["last_heartbeat"] == nil {
		t.Fatalf("heartbeat: %d %s", hb.code, hb.raw)
	}
	if hb := e.do("PUT", "/api/v1/management/services/nope/heartbeat", nil); hb.code != 404 {
		t.Fatalf("heartbeat unknown: %d", hb.code)
	}
	e.do("POST", "/api/v1/management/services", `{"name":"orders","host":"10.0.0.6","port":8080}`)
	l := e.do("GET", "/api/v1/management/services?name=users", nil)
	if l.body["count"].(float64) != 1 {
		t.Fatalf("filter by name: %s", l.raw)
	}
	if d := e.do("DELETE", "/api/v1/management/services/"+id, nil); d.code != 204 {
		t.Fatalf("deregister: %d", d.code)
	}
}

func detailFields(r resp) map[string]string {
	out := map[string]string{}
	e, _ := r.body["error"].(map[string]any)
	ds, _ := e["details"].([]any)
	for _, d := range ds {
		m := d.(map[string]any)
		out[m["field"].(string)] = m["problem"].(string)
	}
	return out
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	if r := e.do("POST", "/api/v1/management/routes", seedRoute); r.code != 201 {
		t.Fatal(r.code)
	}
	revBefore, _ := e.store.Revision(context.Background())
	route := func(mut func(m map[string]any)) []byte {
		var m map[string]any
		_ = json.Unmarshal([]byte(seedRoute), &m)
		m["id"] = "other"
		mut(m)
		b, _ := json.Marshal(m)
		return b
	}
	target := func(m map[string]any) map[string]any { return m["targets"].([]any)[0].(map[string]any) }
	cond := func(m map[string]any) map[string]any { return m["conditions"].([]any)[0].(map[string]any) }
	cases := []struct {
		name  string
		body  any
		code  int
		field string
	}{
		{"malformed JSON", `{"id": "x", "conditions": [`, 400, ""},
		{"not an object", `[1,2]`, 400, ""},
		{"unknown field", route(func(m map[string]any) { m["colour"] = "red" }), 400, "colour"},
		{"unknown nested field", route(func(m map[string]any) { target(m)["hots"] = "x" }), 400, "targets[0].hots"},
		{"wrong type", route(func(m map[string]any) { target(m)["port"] = "8080" }), 400, "targets[0].port"},
		{"wrong type bool", route(func(m map[string]any) { m["require_auth"] = "yes" }), 400, "require_auth"},
		{"missing conditions", route(func(m map[string]any) { delete(m, "conditions") }), 400, "conditions"},
		{"missing targets", route(func(m map[string]any) { delete(m, "targets") }), 400, "targets"},
		{"missing host", route(func(m map[string]any) { delete(target(m), "host") }), 400, "targets[0].host"},
		{"port out of range", route(func(m map[string]any) { target(m)["port"] = 70000 }), 400, "targets[0].port"},
		{"port zero", route(func(m map[string]any) { target(m)["port"] = 0 }), 400, "targets[0].port"},
		{"negative weight", route(func(m map[string]any) { target(m)["weight"] = -1 }), 400, "targets[0].weight"},
		{"all-zero weights", route(func(m map[string]any) { target(m)["weight"] = 0 }), 400, "targets"},
		{"bad duration", route(func(m map[string]any) { m["timeout"] = "30 seconds" }), 400, "timeout"},
		{"unknown load_balance", route(func(m map[string]any) { m["load_balance"] = "fastest" }), 400, "load_balance"},
		{"invalid regex", route(func(m map[string]any) { delete(cond(m), "path_pattern"); cond(m)["path_regex"] = "^/users/(" }), 400, "conditions[0].path_regex"},
		{"invalid path pattern", route(func(m map[string]any) { cond(m)["path_pattern"] = "users/*" }), 400, "conditions[0].path_pattern"},
		{"invalid template", route(func(m map[string]any) { cond(m)["path_pattern"] = "/users/{id" }), 400, "conditions[0].path_pattern"},
		{"bad method", route(func(m map[string]any) { cond(m)["method"] = "FETCH" }), 400, "conditions[0].method"},
		{"bad id", route(func(m map[string]any) { m["id"] = "a b" }), 400, "id"},
		{"duplicate id", seedRoute, 409, ""},
		{"unknown rate-limit policy", route(func(m map[string]any) { m["rate_limit"] = map[string]any{"policies": []any{"nope"}} }), 400, "rate_limit.policies[0]"},
		{"mirror to an unknown service", route(func(m map[string]any) { m["mirror"] = map[string]any{"service": "nope"} }), 400, "mirror.service"},
		{"mirror percent over 100", route(func(m map[string]any) {
			m["mirror"] = map[string]any{"target": map[string]any{"host": "10.9.9.9", "port": 80}, "percent": 101}
		}), 400, "mirror.percent"},
		{"fault percent 1e9", route(func(m map[string]any) {
			m["fault"] = map[string]any{"abort": map[string]any{"status": 503, "percent": 1e9}}
		}), 400, "fault.abort.percent"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("POST", "/api/v1/management/routes", c.body)
			if r.code != c.code {
				t.Fatalf("status %d, want %d: %s", r.code, c.code, r.raw)
			}
			if r.hdr.Get("Content-Type") != "application/json" || r.body["error"] == nil {
				t.Fatalf("error body is not the JSON error shape: %s", r.raw)
			}
			if c.code == 400 {
				e := r.body["error"].(map[string]any)
				if e["code"] != "invalid_argument" || e["message"] == "" {
					t.Fatalf("error shape: %s", r.raw)
				}
				if c.field != "" {
					if _, ok := detailFields(r)[c.field]; !ok {
						t.Fatalf("details do not name %q: %s", c.field, r.raw)
					}
				}
			}
		})
	}
	t.Run("every bad field at once", func(t *testing.T) {
		r := e.do("POST", "/api/v1/management/routes", route(func(m map[string]any) {
			target(m)["port"] = 0
			m["load_balance"] = "x"
			m["timeout"] = "-5s"
		}))
		f := detailFields(r)
		if r.code != 400 || len(f) < 3 {
			t.Fatalf("want all three problems, got %s", r.raw)
		}
		if f["targets[0].port"] != "must be 1-65535" {
			t.Fatalf("port problem: %q", f["targets[0].port"])
		}
	})
	t.Run("body over 1 MiB", func(t *testing.T) {
		big := `{"id":"big","name":"` + strings.Repeat("x", 1<<20) + `"}`
		if r := e.do("POST", "/api/v1/management/routes", big); r.code != 413 {
			t.Fatalf("status %d", r.code)
		}
	})
	t.Run("unknown id", func(t *testing.T) {
		for _, p := range []string{"/api/v1/management/routes/nope", "/api/v1/management/api-keys/nope", "/api/v1/management/policies/nope"} {
			if r := e.do("GET", p, nil); r.code != 404 {
				t.Fatalf("%s: %d", p, r.code)
			}
		}
	})
	t.Run("wrong content type", func(t *testing.T) {
		if r := e.do("POST", "/api/v1/management/routes", seedRoute, "Content-Type", "text/plain"); r.code != 415 {
			t.Fatalf("status %d", r.code)
		}
	})
	t.Run("other kinds", func(t *testing.T) {
		for _, c := range []struct{ kind, body, field string }{
			{"ip-rules", `{"action":"block","cidrs":["300.1.1.1/8"]}`, "cidrs[0]"},
			{"services", `{"name":"x","host":"h","port":99999}`, "port"},
			{"api-keys", `{"name":"k","restrictions":{"allowed_time_windows":[{"start":"25:00","end":"10:00","timezone":"Mars/Base"}]}}`, "restrictions.allowed_time_windows[0].start"},
			{"policies", `{"rules":[{"expression":"true","action":"maybe"}]}`, "rules[0].action"},
			{"rate-limits", `{"algorithm":"magic","requests_per_unit":10,"time_unit":"1m"}`, ""},
		} {
			r := e.do("POST", "/api/v1/management/"+c.kind, c.body)
			if r.code != 400 {
				t.Fatalf("%s: %d %s", c.kind, r.code, r.raw)
			}
			if _, ok := detailFields(r)[c.field]; c.field != "" && !ok {
				t.Fatalf("%s: details do not name %q: %s", c.kind, c.field, r.raw)
			}
		}
	})
	revAfter, _ := e.store.Revision(context.Background())
	if revAfter != revBefore {
		t.Fatalf("a rejected write changed the store: revision %d -> %d", revBefore, revAfter)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	for _, h := range [][]string{{"Authorization", ""}, {"Authorization", "Bearer wrong"}, {"Authorization", "Basic " + token}, {"Authorization", token}} {
		r := e.do("GET", "/api/v1/management/routes", nil, h...)
		if r.code != 401 || r.hdr.Get("WWW-Authenticate") == "" {
			t.Fatalf("%v: %d", h, r.code)
		}
		if strings.Contains(string(r.raw), token) || strings.Contains(strings.ToLower(string(r.raw)), "wrong") {
			t.Fatalf("401 leaks something: %s", r.raw)
		}
		if r.body["error"].(map[string]any)["message"] != "a valid admin bearer token is required" {
			t.Fatalf("every 401 must read the same: %s", r.raw)
		}
	}
	if r := e.do("POST", "/api/v1/management/routes", seedRoute, "Authorization", ""); r.code != 401 {
		t.Fatalf("unauthenticated write: %d", r.code)
	}
	if rev, _ := e.store.Revision(context.Background()); rev != 0 {
		t.Fatalf("an unauthenticated write changed the store")
	}
	for _, p := range []string{"/health", "/ready"} {
		if r := e.do("GET", p, nil, "Authorization", ""); r.code != 200 {
			t.Fatalf("%s: %d %s", p, r.code, r.raw)
		}
	}
	if r := e.do("GET", "/docs", nil, "Authorization", ""); r.code != 200 || !strings.Contains(string(r.raw), "openapi.json") {
		t.Fatalf("/docs: %d", r.code)
	}
}

func TestRequestIDAndCORS(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/api/v1/management/routes", nil, "X-Request-Id", "abc-123")
	if r.hdr.Get("X-Request-Id") != "abc-123" {
		t.Fatalf("request id not echoed: %v", r.hdr)
	}
	r = e.do("GET", "/api/v1/management/routes/nope", nil)
	id := r.hdr.Get("X-Request-Id")
	if id == "" || r.body["error"].(map[string]any)["request_id"] != id {
		t.Fatalf("generated request id must be echoed and in the error: %v %s", r.hdr, r.raw)
	}
	req, _ := http.NewRequest("OPTIONS", e.srv.URL+"/api/v1/management/routes", nil)
	req.Header.Set("Origin", "https://console.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Origin") != "https://console.example" {
		t.Fatalf("preflight: %d %v", res.StatusCode, res.Header)
	}
	req.Header.Set("Origin", "https://evil.example")
	res, _ = http.DefaultClient.Do(req)
	res.Body.Close()
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("a foreign origin got CORS headers")
	}
}

func TestDryRun(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/api/v1/management/routes?dry_run=true", seedRoute)
	if r.code != 200 || r.body["valid"] != true {
		t.Fatalf("dry run: %d %s", r.code, r.raw)
	}
	if g := e.do("GET", "/api/v1/management/routes/user-service", nil); g.code != 404 {
		t.Fatalf("a dry run wrote: %d", g.code)
	}
}

// TestConcurrentPUTs: 50 clients increment a counter held in a route's metadata with
// If-Match; every 200 must count, every other answer must be a 409.
func TestConcurrentPUTs(t *testing.T) {
	e := newEnv(t)
	body := func(n int) map[string]any {
		var m map[string]any
		_ = json.Unmarshal([]byte(seedRoute), &m)
		m["metadata"] = map[string]any{"n": fmt.Sprint(n)}
		return m
	}
	if r := e.do("POST", "/api/v1/management/routes", body(0)); r.code != 201 {
		t.Fatal(r.code)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for w := 0; w < 50; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < 2; {
				g := e.do("GET", "/api/v1/management/routes/user-service", nil)
				var n int
				fmt.Sscan(g.body["metadata"].(map[string]any)["n"].(string), &n)
				u := e.do("PUT", "/api/v1/management/routes/user-service", body(n+1), "If-Match", g.hdr.Get("ETag"))
				switch u.code {
				case 200:
					mu.Lock()
					acked++
					mu.Unlock()
					done++
				case 409:
				default:
					t.Errorf("unexpected %d %s", u.code, u.raw)
					return
				}
			}
		}()
	}
	wg.Wait()
	g := e.do("GET", "/api/v1/management/routes/user-service", nil)
	if got := g.body["metadata"].(map[string]any)["n"]; got != fmt.Sprint(acked) || acked != 100 {
		t.Fatalf("counter %v after %d acknowledged PUTs: an update was lost", got, acked)
	}
}
