package manage

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// CreatedKey is the answer to create and rotate: the key and, this once, its secret.
type CreatedKey struct {
	*model.APIKey
	// Key is the secret to send in x-api-key. It is shown only in this response.
	Key string `json:"key"`
}

const idAlphabet = "abcdefghijkmnopqrstuvwxyz23456789"

// newKeyID returns a short public prefix id for a key.
func newKeyID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}

func (a *API) apiKeyRoutes() {
	const tag = "api-keys"
	base := Prefix + "/api-keys"
	sample := &model.APIKey{}
	a.handle(endpoint{method: "GET", path: base, summary: "List API keys (never shows secrets)", tag: tag, response: sample, list: true, status: 200}, a.list(model.KindAPIKeys))
	a.handle(endpoint{method: "POST", path: base, summary: "Create an API key; the secret is returned once", tag: tag, request: sample, response: &CreatedKey{}, status: 201}, a.createKey)
	a.handle(endpoint{method: "GET", path: base + "/{id}", summary: "Get an API key", tag: tag, response: sample, status: 200}, a.get(model.KindAPIKeys))
	a.handle(endpoint{method: "PUT", path: base + "/{id}", summary: "Replace an API key's name, scopes, restrictions, quota: a field left out is removed; the secret is kept (If-Match: revision)", tag: tag, request: sample, response: sample, status: 200}, a.updateKey)
	a.handle(patchEndpoint(base+"/{id}", "Change some of an API key's name, scopes, restrictions, quota; never its secret", tag, sample), a.patch(model.KindAPIKeys))
	a.handle(endpoint{method: "DELETE", path: base + "/{id}", summary: "Delete an API key", tag: tag, status: 204}, a.remove(model.KindAPIKeys))
	a.handle(endpoint{method: "POST", path: base + "/{id}/rotate", summary: "Issue a new secret; the old one stops working", tag: tag, response: &CreatedKey{}, status: 200}, a.rotateKey)
	a.handle(endpoint{method: "POST", path: base + "/{id}/revoke", summary: "Revoke an API key", tag: tag, response: sample, status: 200}, a.revokeKey)
}

func (a *API) createKey(w http.ResponseWriter, r *http.Request) {
	obj, answered := a.prepareWrite(w, r, model.KindAPIKeys, "")
	if answered {
		return
	}
	k := obj.(*model.APIKey)
	if k.ID == "" {
		k.ID = newKeyID()
	}
	secret, hash, err := a.Keys.NewSecret(k.ID)
	if err != nil {
		WriteError(w, r, http.StatusInternalServerError, CodeInternal, "could not create a secret", nil)
		return
	}
	k.SecretHash = hash
	a.writeKey(w, r, k, store.OpCreate, 0, nil, secret, http.StatusCreated)
}

func (a *API) updateKey(w http.ResponseWriter, r *http.Request) {
	a.replace(model.KindAPIKeys)(w, r)
}

// writeKey stores a key and answers with the secret when one was made.
func (a *API) writeKey(w http.ResponseWriter, r *http.Request, k *model.APIKey, op store.OpType, ifRev uint64, prev *model.APIKey, secret string, status int) {
	if prev != nil {
		k.CreatedAt = prev.CreatedAt
	}
	if errs := a.validate(model.KindAPIKeys, k); len(errs) > 0 {
		writeInvalid(w, r, errs)
		return
	}
	now := a.Now().UTC()
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now
	}
	k.UpdatedAt = now
	k.Revision = 0
	// A revocation is never refused: a revoked key must stop working whatever else is broken.
	if revoking := k.Revoked && (prev == nil || !prev.Revoked); !revoking {
		if err := a.checkRevision(r.Context(), model.KindAPIKeys, k); err != nil {
			writeRefused(w, r, err, false)
			return
		}
	}
	if dryRun(r) {
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "valid": true, "object": k.Public()})
		return
	}
	data, _ := json.Marshal(k)
	rev, err := a.Store.Txn(r.Context(), []store.Op{{Type: op, Kind: model.KindAPIKeys, ID: k.ID, Data: data, IfRevision: ifRev}})
	if err != nil {
		a.writeStoreError(w, r, model.KindAPIKeys, k.ID, err)
		return
	}
	k.Revision = rev
	var before model.Object
	if prev != nil {
		before = prev
	}
	var body any = k.Public()
	if secret != "" {
		body = CreatedKey{APIKey: k.Public(), Key: secret} // shown once: a 504 carries it too
	}
	if !a.settle(w, r, model.KindAPIKeys, k.ID, rev, before, body) {
		return
	}
	w.Header().Set("ETag", fmt.Sprintf(`"%d"`, rev))
	w.Header().Set("Cache-Control", "no-store")
	if secret != "" && status == http.StatusCreated {
		w.Header().Set("Location", Prefix+"/api-keys/"+k.ID)
	}
	writeJSON(w, status, body)
}

// refuseUnrevoke reports a write of a revoked key that would make it valid again. A revoked
// key may have leaked: it must not start working again because a PUT replaced it without
// "revoked" or a PATCH set it false or null (rotate refuses a revoked key for the same
// reason). Access is given back with a new key.
func refuseUnrevoke(obj, prev model.Object) model.FieldErrors {
	k, ok := obj.(*model.APIKey)
	p, wasKey := prev.(*model.APIKey)
	if !ok || !wasKey || !p.Revoked || k.Revoked {
		return nil
	}
	return model.FieldErrors{{Field: "revoked", Problem: "the key is revoked and stays revoked (send \"revoked\": true, or leave it out of a PATCH); create a new key to give access back"}}
}

// loadKey reads a key for rotate/revoke (bodies are optional and ignored).
func (a *API) loadKey(w http.ResponseWriter, r *http.Request) (*model.APIKey, uint64, bool) {
	id := r.PathValue("id")
	obj, err := a.load(r.Context(), model.KindAPIKeys, id)
	if err != nil {
		a.writeStoreError(w, r, model.KindAPIKeys, id, err)
		return nil, 0, false
	}
	ifRev, errs := ifMatch(r, nil)
	if len(errs) > 0 {
		writeInvalid(w, r, errs)
		return nil, 0, false
	}
	k := obj.(*model.APIKey)
	if ifRev == 0 {
		ifRev = k.Revision
	}
	return k, ifRev, true
}

func (a *API) rotateKey(w http.ResponseWriter, r *http.Request) {
	k, ifRev, ok := a.loadKey(w, r)
	if !ok {
		return
	}
	if k.Revoked {
		WriteError(w, r, http.StatusConflict, CodeConflict, "a revoked key cannot be rotated", nil)
		return
	}
	prev := *k
	secret, hash, err := a.Keys.NewSecret(k.ID)
	if err != nil {
		WriteError(w, r, http.StatusInternalServerError, CodeInternal, "could not create a secret", nil)
		return
	}
	k.SecretHash = hash
	a.writeKey(w, r, k, store.OpPut, ifRev, &prev, secret, http.StatusOK)
}

func (a *API) revokeKey(w http.ResponseWriter, r *http.Request) {
	k, ifRev, ok := a.loadKey(w, r)
	if !ok {
		return
	}
	prev := *k
	if !k.Revoked {
		t := a.Now().UTC()
		k.Revoked, k.RevokedAt = true, &t
	}
	a.writeKey(w, r, k, store.OpPut, ifRev, &prev, "", http.StatusOK)
}
