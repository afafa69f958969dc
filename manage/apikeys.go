package manage

import (
	"crypto/rand"
	"encoding/json"
	"errors"
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
	a.handle(endpoint{method: "PUT", path: base + "/{id}", summary: "Update an API key's name, scopes, restrictions, quota (If-Match: revision)", tag: tag, request: sample, response: sample, status: 200}, a.updateKey)
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

func (a *API) serviceRoutes() {
	const tag = "services"
	base := Prefix + "/services"
	sample := &model.Service{}
	a.handle(endpoint{method: "GET", path: base, summary: "List service instances (filter: ?name=)", tag: tag, response: sample, list: true, status: 200}, a.list(model.KindServices))
	a.handle(endpoint{method: "POST", path: base, summary: "Register a service instance (idempotent: the same id replaces)", tag: tag, request: sample, response: sample, status: 201}, a.register)
	a.handle(endpoint{method: "GET", path: base + "/{id}", summary: "Get a service instance", tag: tag, response: sample, status: 200}, a.get(model.KindServices))
	a.handle(endpoint{method: "PUT", path: base + "/{id}", summary: "Replace a service instance", tag: tag, request: sample, response: sample, status: 200}, a.replace(model.KindServices))
	a.handle(endpoint{method: "DELETE", path: base + "/{id}", summary: "Deregister a service instance", tag: tag, status: 204}, a.remove(model.KindServices))
	a.handle(endpoint{method: "PUT", path: base + "/{id}/heartbeat", summary: "Heartbeat: the instance is alive (renews its TTL)", tag: tag, response: sample, status: 200}, a.heartbeat)
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	obj, answered := a.prepareWrite(w, r, model.KindServices, "")
	if answered {
		return
	}
	s := obj.(*model.Service)
	if s.ID == "" {
		s.ID = s.DefaultID()
	}
	s.LastHeartbeat = a.Now().UTC()
	prev, err := a.load(r.Context(), model.KindServices, s.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.writeObject(w, r, model.KindServices, s, store.OpCreate, 0, http.StatusCreated, nil)
	case err != nil:
		a.writeStoreError(w, r, model.KindServices, s.ID, err)
	default:
		a.writeObject(w, r, model.KindServices, s, store.OpPut, prev.GetMeta().Revision, http.StatusOK, prev)
	}
}

func (a *API) heartbeat(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for attempt := 0; ; attempt++ {
		obj, err := a.load(r.Context(), model.KindServices, id)
		if err != nil {
			a.writeStoreError(w, r, model.KindServices, id, err)
			return
		}
		s := obj.(*model.Service)
		rev := s.Revision
		s.LastHeartbeat = a.Now().UTC()
		if s.Status == model.StatusExpired {
			s.Status = ""
		}
		s.UpdatedAt = s.LastHeartbeat
		s.Revision = 0
		data, _ := json.Marshal(s)
		newRev, err := store.Put(r.Context(), a.Store, model.KindServices, id, data, rev)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			a.writeStoreError(w, r, model.KindServices, id, err)
			return
		}
		s.Revision = newRev
		// A heartbeat reports liveness, not a configuration change: a refused revision is
		// the refused object's to fix (GET /ready names it), not the live instance's.
		// A wait that runs out is not answered either: the next heartbeat renews again.
		_ = a.waitApplied(r.Context(), newRev)
		writeJSON(w, http.StatusOK, s)
		return
	}
}

func (a *API) settingsRoutes() {
	const tag = "settings"
	path := Prefix + "/settings"
	sample := &model.Settings{}
	a.handle(endpoint{method: "GET", path: path, summary: "Get the global settings", tag: tag, response: sample, status: 200}, a.getSettings)
	a.handle(endpoint{method: "PUT", path: path, summary: "Replace the global settings (If-Match: revision)", tag: tag, request: sample, response: sample, status: 200}, a.putSettings)
}

func (a *API) getSettings(w http.ResponseWriter, r *http.Request) {
	obj, err := a.load(r.Context(), model.KindSettings, model.SettingsID)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusOK, &model.Settings{ID: model.SettingsID})
		return
	}
	if err != nil {
		a.writeStoreError(w, r, model.KindSettings, model.SettingsID, err)
		return
	}
	w.Header().Set("ETag", fmt.Sprintf(`"%d"`, obj.GetMeta().Revision))
	writeJSON(w, http.StatusOK, obj)
}

func (a *API) putSettings(w http.ResponseWriter, r *http.Request) {
	r.SetPathValue("id", model.SettingsID)
	a.replace(model.KindSettings)(w, r)
}
