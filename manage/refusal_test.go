package manage_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// strict refuses every revision holding a tenant named "poison" (the way a consumer refuses a
// revision it cannot build) and takes the others.
var strict = pipeline.ConsumerFunc{N: "strict", F: func(_ context.Context, s *model.Snapshot) (func(), error) {
	for _, tn := range s.Tenants {
		if tn.ID == "poison" {
			return nil, errors.New(`tenant "poison" cannot be built`)
		}
	}
	return func() {}, nil
}}

func errorOf(r resp) (code, message string) {
	e, _ := r.body["error"].(map[string]any)
	code, _ = e["code"].(string)
	message, _ = e["message"].(string)
	return code, message
}

// A write whose revision a consumer would refuse is refused before it is stored: 409
// revision_refused naming the consumer and its reason; nothing is stored, a dry run says the
// same, and the gateway stays ready.
func TestWriteWhoseRevisionIsRefusedIsNotStored(t *testing.T) {
	e := newEnvWith(t, strict)
	for _, path := range []string{"/api/v1/management/tenants?dry_run=true", "/api/v1/management/tenants"} {
		r := e.do("POST", path, `{"id":"poison"}`)
		code, msg := errorOf(r)
		if r.code != http.StatusConflict || code != "revision_refused" || !strings.Contains(msg, `strict: tenant "poison" cannot be built`) {
			t.Fatalf("%s: %d %s", path, r.code, r.raw)
		}
	}
	if r := e.do("GET", "/api/v1/management/tenants/poison", nil); r.code != 404 {
		t.Fatalf("the refused tenant is stored: %d", r.code)
	}
	if r := e.do("GET", "/ready", nil); r.code != 200 {
		t.Fatalf("/ready: %d %s", r.code, r.raw)
	}
	if r := e.do("POST", "/api/v1/management/tenants", `{"id":"fine"}`); r.code != 201 {
		t.Fatalf("a good write: %d %s", r.code, r.raw)
	}
}

// When the store already holds what the consumers refuse (a replica raced this one, or an
// object was written around the API), the next write's revision is refused after it is
// stored: the write is undone and answers 409, /ready answers 503 naming the refusal, and
// deleting the refused object makes the gateway apply and be ready again.
func TestWriteRefusedAfterStoringIsUndone(t *testing.T) {
	e := newEnvWith(t, strict)
	ctx := context.Background()
	if _, err := store.Put(ctx, e.store, model.KindTenants, "poison", []byte(`{"id":"poison"}`), 0); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/api/v1/management/tenants", `{"id":"acme"}`)
	code, msg := errorOf(r)
	if r.code != http.StatusConflict || code != "revision_refused" || !strings.Contains(msg, "undone") || !strings.Contains(msg, "poison") {
		t.Fatalf("write whose stored revision is refused: %d %s", r.code, r.raw)
	}
	if r := e.do("GET", "/api/v1/management/tenants/acme", nil); r.code != 404 {
		t.Fatalf("the refused write is still stored: %d", r.code)
	}
	r = e.do("GET", "/ready", nil)
	checks, _ := r.body["checks"].(map[string]any)
	if cfg, _ := checks["config"].(string); r.code != 503 || !strings.Contains(cfg, "refused") || !strings.Contains(cfg, "poison") {
		t.Fatalf("/ready while refused: %d %s", r.code, r.raw)
	}
	// Without the admin token, /ready (a public probe) says a revision is refused, not why.
	r = e.do("GET", "/ready", nil, "Authorization", "")
	checks, _ = r.body["checks"].(map[string]any)
	if cfg, _ := checks["config"].(string); r.code != 503 || !strings.Contains(cfg, "refused") || strings.Contains(cfg, "poison") {
		t.Fatalf("unauthenticated /ready while refused: %d %s", r.code, r.raw)
	}
	// The load balancer's question (?serving=true): the last good revision is served, so this
	// replica stays in rotation, the refusal reported.
	r = e.do("GET", "/ready?serving=true", nil, "Authorization", "")
	checks, _ = r.body["checks"].(map[string]any)
	if cfg, _ := checks["config"].(string); r.code != 200 || !strings.Contains(cfg, "refused") || strings.Contains(cfg, "poison") {
		t.Fatalf("/ready?serving=true while refused: %d %s", r.code, r.raw)
	}
	if r := e.do("DELETE", "/api/v1/management/tenants/poison", nil); r.code != 204 {
		t.Fatalf("delete the refused object: %d %s", r.code, r.raw)
	}
	if r := e.do("GET", "/ready", nil); r.code != 200 {
		t.Fatalf("/ready after the fix: %d %s", r.code, r.raw)
	}
	if r := e.do("POST", "/api/v1/management/tenants", `{"id":"acme"}`); r.code != 201 {
		t.Fatalf("the write after the fix: %d %s", r.code, r.raw)
	}
}

// Writes arriving together are checked together; a refused batch is checked write by write,
// so only the write whose own revision is refused gets 409 and its neighbours are stored.
func TestConcurrentWritesAreRefusedOnlyForTheirOwnRevision(t *testing.T) {
	e := newEnvWith(t, strict)
	ids := []string{"poison"}
	for i := 0; i < 16; i++ {
		ids = append(ids, fmt.Sprintf("t%02d", i))
	}
	codes := make([]int, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = e.do("POST", "/api/v1/management/tenants", fmt.Sprintf(`{"id":%q}`, id)).code
		}()
	}
	wg.Wait()
	for i, id := range ids {
		want := http.StatusCreated
		if id == "poison" {
			want = http.StatusConflict
		}
		if codes[i] != want {
			t.Errorf("tenant %s: %d, want %d", id, codes[i], want)
		}
	}
	if r := e.do("GET", "/ready", nil); r.code != 200 {
		t.Fatalf("/ready: %d %s", r.code, r.raw)
	}
}

// slow takes longer than the API's wait to apply a revision holding a tenant named "slow".
var slow = pipeline.ConsumerFunc{N: "slow", F: func(_ context.Context, s *model.Snapshot) (func(), error) {
	for _, tn := range s.Tenants {
		if tn.ID == "slow" {
			time.Sleep(400 * time.Millisecond)
		}
	}
	return func() {}, nil
}}

// A write whose revision has neither applied nor been refused when the wait ends is not a
// success: it answers 504 apply_pending with the stored revision as ETag (it is stored and
// may still apply), and so does a delete.
func TestWriteWhoseRevisionIsNotAppliedInTimeIsNotASuccess(t *testing.T) {
	e := newEnvWait(t, 50*time.Millisecond, slow)
	if r := e.do("POST", "/api/v1/management/tenants", `{"id":"other"}`); r.code != 201 {
		t.Fatalf("a write applied in time: %d %s", r.code, r.raw)
	}
	r := e.do("POST", "/api/v1/management/tenants", `{"id":"slow"}`)
	code, msg := errorOf(r)
	if r.code != http.StatusGatewayTimeout || code != "apply_pending" || !strings.Contains(msg, "stored") || r.hdr.Get("ETag") == "" {
		t.Fatalf("write not applied in time: %d %s", r.code, r.raw)
	}
	if r := e.do("GET", "/api/v1/management/tenants/slow", nil); r.code != 200 {
		t.Fatalf("the pending write is not stored: %d", r.code)
	}
	time.Sleep(time.Second) // the revision applies; every revision holding "slow" is slow
	r = e.do("DELETE", "/api/v1/management/tenants/other", nil)
	if code, _ := errorOf(r); r.code != http.StatusGatewayTimeout || code != "apply_pending" {
		t.Fatalf("delete not applied in time: %d %s", r.code, r.raw)
	}
	// A created key's secret is shown once: the 504 carries it (and the id) with the error.
	time.Sleep(time.Second)
	r = e.do("POST", "/api/v1/management/api-keys", `{"name":"ci","scopes":["read"]}`)
	obj, _ := r.body["object"].(map[string]any)
	if code, _ := errorOf(r); r.code != http.StatusGatewayTimeout || code != "apply_pending" || obj["key"] == nil || obj["id"] == nil {
		t.Fatalf("key create not applied in time: %d %s", r.code, r.raw)
	}
}

// keysServed records the API keys of the last committed revision, as ext_authz serves them.
type keysServed struct {
	mu   sync.Mutex
	keys map[string]*model.APIKey
}

func (k *keysServed) consumer() pipeline.Consumer {
	return pipeline.ConsumerFunc{N: "keys", F: func(_ context.Context, s *model.Snapshot) (func(), error) {
		return func() {
			k.mu.Lock()
			defer k.mu.Unlock()
			k.keys = map[string]*model.APIKey{}
			for _, key := range s.APIKeys {
				k.keys[key.ID] = key
			}
		}, nil
	}}
}

func (k *keysServed) get(id string) *model.APIKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[id]
}

// A revoked or deleted API key stops working even while another object keeps every revision
// refused: the revoke answers 200 and the delete 204 because the keys are served, not 409
// with the revoke undone and the key still accepted.
func TestKeyRevokeAndDeleteApplyWhileAnotherObjectIsRefused(t *testing.T) {
	served := &keysServed{}
	e := newEnvWith(t, strict, served.consumer())
	var ids []string
	for i := 0; i < 2; i++ {
		r := e.do("POST", "/api/v1/management/api-keys", `{"name":"ci","scopes":["read"]}`)
		if r.code != 201 {
			t.Fatalf("create key: %d %s", r.code, r.raw)
		}
		id, _ := r.body["id"].(string)
		ids = append(ids, id)
	}
	if _, err := store.Put(context.Background(), e.store, model.KindTenants, "poison", []byte(`{"id":"poison"}`), 0); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/api/v1/management/api-keys/"+ids[0]+"/revoke", nil)
	if r.code != http.StatusOK {
		t.Fatalf("revoke while another object is refused: %d %s", r.code, r.raw)
	}
	if k := served.get(ids[0]); k == nil || !k.Revoked {
		t.Fatalf("the revoked key is still served unrevoked: %+v", k)
	}
	if r := e.do("DELETE", "/api/v1/management/api-keys/"+ids[1], nil); r.code != http.StatusNoContent {
		t.Fatalf("delete key while another object is refused: %d %s", r.code, r.raw)
	}
	if k := served.get(ids[1]); k != nil {
		t.Fatal("the deleted key is still served")
	}
	// The refusal itself is still reported: only the keys are taken apart.
	if r := e.do("GET", "/ready", nil); r.code != 503 {
		t.Fatalf("/ready while refused: %d %s", r.code, r.raw)
	}
	if r := e.do("POST", "/api/v1/management/tenants", `{"id":"acme"}`); r.code != http.StatusConflict {
		t.Fatalf("another write while refused: %d %s", r.code, r.raw)
	}
}
