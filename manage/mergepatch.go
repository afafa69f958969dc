package manage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"unicode/utf8"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// PATCH is a JSON Merge Patch (RFC 7396) of the stored object: the merged object is then
// written exactly as a PUT of it would be (strict decoding, every validator, the revision
// check, dry_run, If-Match), so a patch can do nothing a PUT could not, and reports the same
// field errors.
//
// RFC 7396 is written here rather than taken from a library: the algorithm is the RFC's
// fifteen lines, and the gateway needs what a byte-to-byte library merge hides. The patch is
// decoded once with json.Number (a float64 round trip would change uint64 counters above
// 2^53, such as cache_bytes or requests_per_unit), its server-owned fields are checked
// before merging (a change to them is a field error, not silently dropped), and its nesting
// is bounded.

// MergePatchType is the media type of a JSON Merge Patch body.
const MergePatchType = "application/merge-patch+json"

// maxPatchDepth bounds the nesting of a patch document: the model is at most a few levels
// deep, and the merge recurses once per level.
const maxPatchDepth = 32

// mergePatch applies patch to target as RFC 7396 section 2 specifies: an object patch
// merges key by key (null removes the key), anything else replaces the target, arrays
// included.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}

// parsePatch decodes a merge patch document: one JSON object, nested at most maxPatchDepth.
func parsePatch(data []byte) (map[string]any, model.FieldErrors) {
	var errs model.FieldErrors
	if !utf8.Valid(data) {
		errs.Add("", "the body is not valid UTF-8 (JSON text is UTF-8)") // as model.DecodeStrict
		return nil, errs
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		errs.Add("", "malformed JSON: %v", err)
		return nil, errs
	}
	if _, err := dec.Token(); err == nil {
		errs.Add("", "malformed JSON: unexpected data after the patch")
		return nil, errs
	}
	if dups := model.DuplicateKeys(data); len(dups) > 0 {
		// The merge would keep one of the two silently (see model.DuplicateKeys).
		return nil, dups
	}
	m, ok := v.(map[string]any)
	if !ok {
		// RFC 7396 lets a non-object patch replace the whole target; an object of the model
		// is always an object, so such a patch could only be refused later, less clearly.
		errs.Add("", "a merge patch must be a JSON object naming the fields to change")
		return nil, errs
	}
	if path, deep := tooDeep(m, "", 1); deep {
		errs.Add(path, "the patch is nested deeper than %d levels", maxPatchDepth)
		return nil, errs
	}
	return m, nil
}

func tooDeep(v any, path string, depth int) (string, bool) {
	if depth > maxPatchDepth {
		return path, true
	}
	switch x := v.(type) {
	case map[string]any:
		for k, vv := range x {
			if p, deep := tooDeep(vv, join(path, k), depth+1); deep {
				return p, true
			}
		}
	case []any:
		for i, vv := range x {
			if p, deep := tooDeep(vv, fmt.Sprintf("%s[%d]", path, i), depth+1); deep {
				return p, true
			}
		}
	}
	return "", false
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// serverOwned lists, per kind, the top-level fields the server sets: a patch may repeat
// their current value (a client patching back what it read) but not change or remove them.
// revision is not here: as in a PUT body it is the expected revision (If-Match wins).
func serverOwned(kind model.Kind) map[string]string {
	owned := map[string]string{
		"created_at": "is set by the server when the object is created",
		"updated_at": "is set by the server on every write",
	}
	switch kind {
	case model.KindAPIKeys:
		owned["revoked_at"] = "is set by the server when the key is revoked"
	case model.KindServices:
		owned["last_heartbeat"] = "is set by the server on register and heartbeat"
	case model.KindRoutes:
		owned["status"] = "is the xDS state the server reports"
	}
	return owned
}

// checkPatch reports the patch's changes to fields no write may change: the id (the path
// names the object), server-owned fields, an API key's secret hash (rotate issues a new
// secret). current is the stored object's JSON as read with GET, nil when none is stored.
func checkPatch(kind model.Kind, id string, patch, current map[string]any) model.FieldErrors {
	var errs model.FieldErrors
	if v, ok := patch["id"]; ok {
		if s, isStr := v.(string); !isStr || s != id {
			errs.Add("id", "cannot be changed: the path names the object (%s)", quote(id))
		}
	}
	if v, ok := patch["revision"]; ok {
		if n, isNum := v.(json.Number); !isNum || !isRevision(n) {
			errs.Add("revision", "must be the revision you read (a positive whole number), or left out; If-Match is the usual way")
		}
	}
	if kind == model.KindAPIKeys {
		if _, ok := patch["secret_hash"]; ok {
			errs.Add("secret_hash", "is read-only: POST /api-keys/{id}/rotate issues a new secret")
		}
	}
	for field, why := range serverOwned(kind) {
		v, ok := patch[field]
		if !ok {
			continue
		}
		if cur, has := current[field]; has && v != nil && jsonEqual(cur, v) {
			continue
		}
		errs.Add(field, "%s and cannot be changed", why)
	}
	return errs
}

func isRevision(n json.Number) bool {
	var u uint64
	return json.Unmarshal([]byte(n.String()), &u) == nil && u > 0
}

func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// patchTarget is the stored object as the document a patch applies to: its JSON without the
// fields a PUT body may not carry (the write puts back the server's values), and the
// revision it was read at.
func patchTarget(obj model.Object) (doc, current map[string]any, rev uint64, err error) {
	rev = obj.GetMeta().Revision
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, nil, 0, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&current); err != nil {
		return nil, nil, 0, err
	}
	doc = make(map[string]any, len(current))
	for k, v := range current {
		doc[k] = v
	}
	for _, k := range []string{"revision", "created_at", "updated_at", "revoked_at", "last_heartbeat", "secret_hash"} {
		delete(doc, k)
	}
	if _, isRoute := obj.(*model.Route); isRoute {
		delete(doc, "status") // a service's status is not server-owned: the user sets unhealthy
	}
	return doc, current, rev, nil
}

// patchEndpoint describes a PATCH for the OpenAPI document.
func patchEndpoint(path, summary, tag string, sample any) endpoint {
	return endpoint{method: "PATCH", path: path, tag: tag, request: sample, response: sample, status: 200, contentType: MergePatchType,
		summary: summary + ": a JSON Merge Patch (RFC 7396) naming only the fields to change; null removes a field, an array replaces the whole array; " +
			"the merged object is validated and written as a PUT of it would be (If-Match: revision, dry_run)"}
}

// patch handles PATCH /{kind}/{id} (and /settings): merge the patch into the stored object
// and write the result as a PUT of it.
func (a *API) patch(kind model.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		data, ok := readBody(w, r, MergePatchType, "application/json")
		if !ok {
			return
		}
		p, errs := parsePatch(data)
		if len(errs) > 0 {
			writeInvalid(w, r, errs)
			return
		}
		prev, err := a.load(r.Context(), kind, id)
		if errors.Is(err, store.ErrNotFound) && kind == model.KindSettings {
			// Settings always exist (GET answers the defaults): a patch of the defaults.
			prev, err = &model.Settings{ID: model.SettingsID}, nil
		}
		if err != nil {
			a.writeStoreError(w, r, kind, id, err)
			return
		}
		doc, current, baseRev, err := patchTarget(prev)
		if err != nil {
			WriteError(w, r, http.StatusInternalServerError, CodeInternal, "could not read the stored object", nil)
			return
		}
		if errs := checkPatch(kind, id, p, current); len(errs) > 0 {
			writeInvalid(w, r, errs)
			return
		}
		merged, err := json.Marshal(mergePatch(doc, p))
		if err != nil {
			WriteError(w, r, http.StatusInternalServerError, CodeInternal, "could not encode the merged object", nil)
			return
		}
		if len(merged) > MaxBody {
			// Patches each under the limit must not grow an object past what a PUT body may
			// be: it could no longer be read and written back whole.
			WriteError(w, r, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf(
				"the object this patch makes is larger than %d bytes, the largest body a write takes", MaxBody), nil)
			return
		}
		// Without If-Match (or a revision in the patch) the write still expects the revision
		// the patch was merged into: a write in between makes it a 409, never a lost update.
		a.replaceBody(w, r, kind, id, merged, baseRev)
	}
}
