package manage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// ListResponse is the shape of every list.
type ListResponse[T any] struct {
	Items    []T    `json:"items"`
	Count    int    `json:"count"`
	Revision uint64 `json:"revision"`
}

// readBody reads the request body, answering 413/415/400 itself; ok=false means answered.
// types are the media types accepted (default application/json); a body without a
// Content-Type is read as the first.
func readBody(w http.ResponseWriter, r *http.Request, types ...string) ([]byte, bool) {
	if len(types) == 0 {
		types = []string{"application/json"}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !slices.Contains(types, mt) {
			WriteError(w, r, http.StatusUnsupportedMediaType, CodeUnsupported, "the body must be "+strings.Join(types, " or "), nil)
			return nil, false
		}
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			WriteError(w, r, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("the body is larger than %d bytes", MaxBody), nil)
			return nil, false
		}
		WriteError(w, r, http.StatusBadRequest, CodeInvalid, "could not read the body", nil)
		return nil, false
	}
	return data, true
}

// decodeObject decodes a body into a new object of the kind, reporting every field problem.
// With field problems the object is returned too, holding every value that decoded (the
// refused ones left out), so the checks of other objects and components can still report
// theirs (partialProblems); it is nil when the body is no object at all.
func decodeObject(kind model.Kind, data []byte) (model.Object, model.FieldErrors) {
	obj, err := model.New(kind)
	if err != nil {
		return nil, model.FieldErrors{{Field: "", Problem: err.Error()}}
	}
	errs := model.DecodeStrict(data, obj)
	for _, e := range errs {
		if e.Field == "" {
			return nil, errs // malformed, or not an object: nothing decoded
		}
	}
	return obj, errs
}

// partialProblems keeps, of what the checks beyond the object's own (references, component
// validators) found on an object decoded with field problems (reported), the problems on
// other fields: a wrong type does not hide an unknown service. A problem on a reported
// field, inside one, or on no field (a whole-object verdict on an object missing its refused
// values) is left out.
func partialProblems(reported, found model.FieldErrors) model.FieldErrors {
	seen := map[string]bool{}
	for _, e := range reported {
		seen[e.Field] = true
	}
	var out model.FieldErrors
	for _, e := range found {
		if e.Field == "" || seen[e.Field] || insideField(e.Field, seen) {
			continue
		}
		seen[e.Field] = true
		out = append(out, e)
	}
	return out
}

// insideField tells whether field lies inside one of fields (targets[0].port inside targets
// or targets[0]).
func insideField(field string, fields map[string]bool) bool {
	for i := 0; i < len(field); i++ {
		if (field[i] == '.' || field[i] == '[') && fields[field[:i]] {
			return true
		}
	}
	return false
}

// ifMatch reads the expected revision from If-Match (or the body's revision field).
func ifMatch(r *http.Request, obj model.Object) (uint64, model.FieldErrors) {
	var errs model.FieldErrors
	if h := strings.TrimSpace(r.Header.Get("If-Match")); h != "" && h != "*" {
		h = strings.Trim(strings.TrimPrefix(h, "W/"), `"`)
		n, err := strconv.ParseUint(h, 10, 64)
		if err != nil || n == 0 {
			errs.Add("If-Match", "must be a revision number")
			return 0, errs
		}
		return n, nil
	}
	if obj != nil {
		return obj.GetMeta().Revision, nil
	}
	return 0, nil
}

func (a *API) snapshot() *model.Snapshot {
	if a.Model != nil {
		if s := a.Model.Current(); s != nil {
			return s
		}
	}
	return &model.Snapshot{Settings: &model.Settings{ID: model.SettingsID}}
}

// validate runs the object's own checks and every registered validator.
func (a *API) validate(kind model.Kind, obj model.Object) model.FieldErrors {
	return append(obj.Validate(), a.checkAgainst(kind, obj, a.snapshot())...)
}

// checkAgainst runs the checks of obj that need the rest of the model: references to other
// objects and every registered validator.
func (a *API) checkAgainst(kind model.Kind, obj model.Object, snap *model.Snapshot) model.FieldErrors {
	errs := a.crossCheck(kind, obj, snap)
	a.mu.RLock()
	vs := a.validators[kind]
	a.mu.RUnlock()
	for _, v := range vs {
		errs = append(errs, v(obj, snap)...)
	}
	return errs
}

// crossCheck validates references to other objects.
func (a *API) crossCheck(kind model.Kind, obj model.Object, snap *model.Snapshot) model.FieldErrors {
	var errs model.FieldErrors
	r, ok := obj.(*model.Route)
	if !ok {
		return nil
	}
	has := func(ids []string, id string) bool {
		for _, x := range ids {
			if x == id {
				return true
			}
		}
		return false
	}
	var rl, pol, ipr []string
	for _, o := range snap.RateLimits {
		rl = append(rl, o.ID)
	}
	for _, o := range snap.Policies {
		pol = append(pol, o.ID)
	}
	for _, o := range snap.IPRules {
		ipr = append(ipr, o.ID)
	}
	if r.RateLimit != nil {
		for i, id := range r.RateLimit.Policies {
			if !has(rl, id) {
				errs.Add(fmt.Sprintf("rate_limit.policies[%d]", i), "no rate-limit %q exists", id)
			}
		}
	}
	if m := r.Mirror; m != nil && m.Service != "" {
		known := false
		for _, s := range snap.Services {
			known = known || s.Name == m.Service
		}
		if !known {
			errs.Add("mirror.service", "no service %q is registered", m.Service)
		}
	}
	if r.Auth != nil {
		for i, id := range r.Auth.Policies {
			if !has(pol, id) {
				errs.Add(fmt.Sprintf("auth.policies[%d]", i), "no policy %q exists", id)
			}
		}
		for i, id := range r.Auth.IPRules {
			if !has(ipr, id) {
				errs.Add(fmt.Sprintf("auth.ip_rules[%d]", i), "no ip-rule %q exists", id)
			}
		}
	}
	return errs
}

// waitApplied waits until the consumers serve revision rev (bounded by WriteWait). It
// returns nil once rev (or a later revision) applied, the refusal when the pipeline refused
// it, and a *pendingError when the wait ended first: the revision is stored and may still
// apply or be refused, so the write must not answer success (accepted = served).
func (a *API) waitApplied(ctx context.Context, rev uint64) error {
	if a.Model == nil {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, a.WriteWait)
	defer cancel()
	err := a.Model.WaitFor(wctx, rev)
	if err == nil || isRefusal(err) {
		return err
	}
	if ctx.Err() == nil {
		a.log.WarnContext(ctx, "a write's revision did not apply in time", "revision", rev, "waited", a.WriteWait.String())
	}
	return &pendingError{rev: rev, waited: a.WriteWait}
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func dryRun(r *http.Request) bool {
	v := r.URL.Query().Get("dry_run")
	return v == "true" || v == "1"
}

// crud registers list/create/get/replace/delete for a kind.
func (a *API) crud(kind model.Kind, sample any, tag string) {
	base := Prefix + "/" + string(kind)
	a.handle(endpoint{method: "GET", path: base, summary: "List " + string(kind), tag: tag, response: sample, list: true, status: 200}, a.list(kind))
	a.handle(endpoint{method: "POST", path: base, summary: "Create one of " + string(kind), tag: tag, request: sample, response: sample, status: 201}, a.create(kind))
	a.handle(endpoint{method: "GET", path: base + "/{id}", summary: "Get one of " + string(kind), tag: tag, response: sample, status: 200}, a.get(kind))
	a.handle(endpoint{method: "PUT", path: base + "/{id}", summary: "Replace one of " + string(kind) + ": the body is the whole object, a field left out is removed (If-Match: revision)", tag: tag, request: sample, response: sample, status: 200}, a.replace(kind))
	a.handle(patchEndpoint(base+"/{id}", "Change some fields of one of "+string(kind), tag, sample), a.patch(kind))
	a.handle(endpoint{method: "DELETE", path: base + "/{id}", summary: "Delete one of " + string(kind) + " (If-Match: revision)", tag: tag, status: 204}, a.remove(kind))
}

// present prepares an object for a response.
func (a *API) present(obj model.Object) any {
	switch o := obj.(type) {
	case *model.APIKey:
		return o.Public()
	case *model.Route:
		if a.RouteStatus != nil {
			o.Status = a.RouteStatus(o.ID)
		}
	}
	return obj
}

func (a *API) list(kind model.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rev, err := a.Store.Revision(r.Context())
		if err != nil {
			a.writeStoreError(w, r, kind, "", err)
			return
		}
		raws, err := a.Store.List(r.Context(), kind)
		if err != nil {
			a.writeStoreError(w, r, kind, "", err)
			return
		}
		items := make([]any, 0, len(raws))
		q := r.URL.Query()
		for _, raw := range raws {
			obj, err := decodeRaw(kind, raw)
			if err != nil {
				a.log.WarnContext(r.Context(), "stored object does not decode", "kind", string(kind), "id", raw.ID, "error", err.Error())
				continue
			}
			if !matchFilter(obj, q.Get("name"), q.Get("tenant")) {
				continue
			}
			items = append(items, a.present(obj))
		}
		writeJSON(w, http.StatusOK, ListResponse[any]{Items: items, Count: len(items), Revision: rev})
	}
}

func matchFilter(obj model.Object, name, tenant string) bool {
	switch o := obj.(type) {
	case *model.Service:
		return name == "" || o.Name == name
	case *model.Route:
		return tenant == "" || o.Tenant == tenant
	case *model.APIKey:
		return tenant == "" || o.Tenant == tenant
	}
	return true
}

func decodeRaw(kind model.Kind, raw model.RawObject) (model.Object, error) {
	obj, err := model.New(kind)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw.Data, obj); err != nil {
		return nil, err
	}
	obj.GetMeta().Revision = raw.Revision
	return obj, nil
}

func (a *API) load(ctx context.Context, kind model.Kind, id string) (model.Object, error) {
	raw, err := a.Store.Get(ctx, kind, id)
	if err != nil {
		return nil, err
	}
	return decodeRaw(kind, raw)
}

func (a *API) get(kind model.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		obj, err := a.load(r.Context(), kind, id)
		if err != nil {
			a.writeStoreError(w, r, kind, id, err)
			return
		}
		w.Header().Set("ETag", fmt.Sprintf(`"%d"`, obj.GetMeta().Revision))
		writeJSON(w, http.StatusOK, a.present(obj))
	}
}

// prepareWrite decodes and validates a body for kind; answered=true means an error was written.
func (a *API) prepareWrite(w http.ResponseWriter, r *http.Request, kind model.Kind, pathID string) (model.Object, bool) {
	data, ok := readBody(w, r)
	if !ok {
		return nil, true
	}
	return a.prepareObject(w, r, kind, pathID, data)
}

// prepareObject is prepareWrite of a body already read (a PUT's, or a PATCH's merged object).
func (a *API) prepareObject(w http.ResponseWriter, r *http.Request, kind model.Kind, pathID string, data []byte) (model.Object, bool) {
	obj, errs := decodeObject(kind, data)
	if len(errs) > 0 {
		if obj != nil {
			if pathID != "" {
				if obj.GetID() != "" && obj.GetID() != pathID {
					errs.Add("id", "does not match the id in the path")
				}
				obj.SetID(pathID)
			}
			if k, ok := obj.(*model.APIKey); ok && k.SecretHash != "" {
				errs.Add("secret_hash", "is read-only")
			}
			errs = append(errs, partialProblems(errs, a.checkAgainst(kind, obj, a.snapshot()))...)
		}
		writeInvalid(w, r, errs)
		return nil, true
	}
	if pathID != "" {
		if obj.GetID() != "" && obj.GetID() != pathID {
			writeInvalid(w, r, model.FieldErrors{{Field: "id", Problem: "does not match the id in the path"}})
			return nil, true
		}
		obj.SetID(pathID)
	}
	if k, ok := obj.(*model.APIKey); ok && k.SecretHash != "" {
		writeInvalid(w, r, model.FieldErrors{{Field: "secret_hash", Problem: "is read-only"}})
		return nil, true
	}
	clearServerOwned(obj)
	return obj, false
}

// clearServerOwned drops the values of a written object that only the server sets, so that
// carryOver and the write put in the server's: a route's status (computed for each GET), a
// service's last heartbeat (a client's future one would keep an instance with a TTL from
// ever expiring), a key's revocation time. created_at and updated_at are stamped by every
// write anyway.
func clearServerOwned(obj model.Object) {
	switch o := obj.(type) {
	case *model.Route:
		o.Status = nil
	case *model.Service:
		o.LastHeartbeat = time.Time{}
	case *model.APIKey:
		o.RevokedAt = nil
	}
}

func (a *API) create(kind model.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		obj, answered := a.prepareWrite(w, r, kind, "")
		if answered {
			return
		}
		if obj.GetID() == "" {
			obj.SetID(defaultID(obj))
		}
		a.writeObject(w, r, kind, obj, store.OpCreate, 0, http.StatusCreated, nil)
	}
}

func defaultID(obj model.Object) string {
	if s, ok := obj.(*model.Service); ok && s.Name != "" && s.Host != "" {
		return s.DefaultID()
	}
	return newID()
}

// replace is PUT: the body is the whole object. A field it leaves out is gone (or takes its
// default), as in the stored object after the write; PATCH changes only the fields it names.
func (a *API) replace(kind model.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		data, ok := readBody(w, r)
		if !ok {
			return
		}
		a.replaceBody(w, r, kind, r.PathValue("id"), data, 0)
	}
}

// replaceBody writes data as the whole object kind/id. The expected revision is If-Match,
// else the body's revision, else baseRev (a PATCH's: the revision it merged into), else
// whatever is stored.
func (a *API) replaceBody(w http.ResponseWriter, r *http.Request, kind model.Kind, id string, data []byte, baseRev uint64) {
	obj, answered := a.prepareObject(w, r, kind, id, data)
	if answered {
		return
	}
	ifRev, errs := ifMatch(r, obj)
	if len(errs) > 0 {
		writeInvalid(w, r, errs)
		return
	}
	if ifRev == 0 {
		ifRev = baseRev
	}
	prev, err := a.load(r.Context(), kind, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if ifRev != 0 {
			a.writeStoreError(w, r, kind, id, err)
			return
		}
		a.writeObject(w, r, kind, obj, store.OpCreate, 0, http.StatusCreated, nil)
		return
	case err != nil:
		a.writeStoreError(w, r, kind, id, err)
		return
	}
	if ifRev == 0 {
		ifRev = prev.GetMeta().Revision
	}
	a.writeObject(w, r, kind, obj, store.OpPut, ifRev, http.StatusOK, prev)
}

// writeObject validates, stamps and stores obj, then answers with it.
func (a *API) writeObject(w http.ResponseWriter, r *http.Request, kind model.Kind, obj model.Object, op store.OpType, ifRev uint64, status int, prev model.Object) {
	unrevoke := refuseUnrevoke(obj, prev)
	a.carryOver(obj, prev)
	if errs := append(unrevoke, a.validate(kind, obj)...); len(errs) > 0 {
		writeInvalid(w, r, errs)
		return
	}
	now := a.Now().UTC()
	m := obj.GetMeta()
	m.UpdatedAt = now
	if prev != nil {
		m.CreatedAt = prev.GetMeta().CreatedAt
	} else {
		m.CreatedAt = now
	}
	m.Revision = 0
	if err := a.checkRevision(r.Context(), kind, obj); err != nil {
		writeRefused(w, r, err, false)
		return
	}
	if dryRun(r) {
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "valid": true, "object": a.present(obj)})
		return
	}
	data, err := json.Marshal(obj)
	if err != nil {
		WriteError(w, r, http.StatusInternalServerError, CodeInternal, "could not encode the object", nil)
		return
	}
	rev, err := a.Store.Txn(r.Context(), []store.Op{{Type: op, Kind: kind, ID: obj.GetID(), Data: data, IfRevision: ifRev}})
	if err != nil {
		a.writeStoreError(w, r, kind, obj.GetID(), err)
		return
	}
	m.Revision = rev
	if !a.settle(w, r, kind, obj.GetID(), rev, prev, a.present(obj)) {
		return
	}
	w.Header().Set("ETag", fmt.Sprintf(`"%d"`, rev))
	if status == http.StatusCreated {
		w.Header().Set("Location", Prefix+"/"+string(kind)+"/"+obj.GetID())
	}
	writeJSON(w, status, a.present(obj))
}

// carryOver keeps server-owned fields of the previous version that a PUT cannot set.
func (a *API) carryOver(obj, prev model.Object) {
	switch o := obj.(type) {
	case *model.APIKey:
		if p, ok := prev.(*model.APIKey); ok {
			o.SecretHash = p.SecretHash
			if p.Revoked {
				// Revocation is for good (refuseUnrevoke): a write that leaves it out, such
				// as a file written before the revoke, keeps the key revoked.
				o.Revoked, o.RevokedAt = true, p.RevokedAt
			}
		}
		if o.Revoked && o.RevokedAt == nil {
			t := a.Now().UTC()
			o.RevokedAt = &t
		}
	case *model.Service:
		if p, ok := prev.(*model.Service); ok && o.LastHeartbeat.IsZero() {
			o.LastHeartbeat = p.LastHeartbeat
		}
		if o.LastHeartbeat.IsZero() {
			o.LastHeartbeat = a.Now().UTC()
		}
	}
}

func (a *API) remove(kind model.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		ifRev, errs := ifMatch(r, nil)
		if len(errs) > 0 {
			writeInvalid(w, r, errs)
			return
		}
		rev, err := store.Delete(r.Context(), a.Store, kind, id, ifRev)
		if err != nil {
			a.writeStoreError(w, r, kind, id, err)
			return
		}
		if err := a.waitApplied(r.Context(), rev); err != nil && !(kind == model.KindAPIKeys && keysInEffect(err)) {
			// The delete stays: undoing it would bring back an object the client removed,
			// and deleting is how the object a refusal names is taken out.
			a.notInEffect(w, r, kind, id, rev, err, nil)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
