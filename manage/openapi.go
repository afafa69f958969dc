package manage

import (
	"encoding/json"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/invopop/jsonschema"

	"github.com/api-gateway/api-gateway/model"
)

var (
	durationType = reflect.TypeOf(model.Duration(0))
	timeType     = reflect.TypeOf(time.Time{})
)

// schemaMapper describes the model's custom JSON forms.
func schemaMapper(t reflect.Type) *jsonschema.Schema {
	switch t {
	case durationType:
		return &jsonschema.Schema{Type: "string", Pattern: `^[0-9.]+(ns|us|µs|ms|s|m|h|d)([0-9.]+(ns|us|µs|ms|s|m|h))*$`,
			Description: "a duration such as \"500ms\", \"30s\", \"1m\", \"24h\" or \"7d\"", Examples: []any{"30s"}}
	case timeType:
		return &jsonschema.Schema{Type: "string", Format: "date-time"}
	}
	return nil
}

// OpenAPI builds the OpenAPI 3.1 document from the endpoint table and the model's Go types,
// so it cannot drift from what the handlers accept.
func (a *API) OpenAPI() map[string]any {
	r := &jsonschema.Reflector{Mapper: schemaMapper, AllowAdditionalProperties: false, RequiredFromJSONSchemaTags: true, ExpandedStruct: false}
	schemas := map[string]any{}
	ref := func(v any) map[string]any {
		if v == nil {
			return nil
		}
		s := r.Reflect(v)
		name := reflect.TypeOf(v).Elem().Name()
		for defName, def := range s.Definitions {
			schemas[defName] = cleanSchema(def)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	errRef := ref(&ErrorBody{})
	paths := map[string]map[string]any{}
	a.mu.RLock()
	eps := append([]endpoint(nil), a.endpoints...)
	a.mu.RUnlock()
	for _, e := range eps {
		if paths[e.path] == nil {
			paths[e.path] = map[string]any{}
		}
		op := map[string]any{
			"summary":     e.summary,
			"tags":        []string{e.tag},
			"operationId": operationID(e),
		}
		if strings.Contains(e.path, "{id}") {
			op["parameters"] = []any{map[string]any{"name": "id", "in": "path", "required": true, "schema": map[string]any{"type": "string"}}}
		}
		switch {
		case e.request != nil && e.contentType == MergePatchType:
			// A merge patch is a partial object: none of the type's fields is required, a
			// null removes one. application/json is accepted as the same document.
			name := reflect.TypeOf(e.request).Elem().Name()
			ref(e.request)
			schema := map[string]any{"type": "object", "description": "JSON Merge Patch (RFC 7396) of a " + name +
				" (#/components/schemas/" + name + "): only the fields to change; null removes a field; an array replaces the whole array; " +
				"id, revision-stamped and server-owned fields (created_at, updated_at, secret_hash, ...) cannot be changed (400 naming the field)"}
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				MergePatchType: map[string]any{"schema": schema}, "application/json": map[string]any{"schema": schema}}}
		case e.request != nil:
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": ref(e.request)}}}
		}
		status := e.status
		if status == 0 {
			status = 200
		}
		resp := map[string]any{"description": http.StatusText(status)}
		if e.response != nil {
			schema := ref(e.response)
			if e.list {
				schema = map[string]any{"type": "object", "properties": map[string]any{
					"items": map[string]any{"type": "array", "items": schema}, "count": map[string]any{"type": "integer"},
					"revision": map[string]any{"type": "integer"}}}
			}
			resp["content"] = map[string]any{"application/json": map[string]any{"schema": schema}}
		}
		errResp := func(desc string) map[string]any {
			return map[string]any{"description": desc, "content": map[string]any{"application/json": map[string]any{"schema": errRef}}}
		}
		responses := map[string]any{itoa(status): resp}
		if !e.public {
			responses["401"] = errResp("missing or wrong admin token")
			op["security"] = []any{map[string]any{"bearer": []string{}}}
		}
		if e.request != nil {
			responses["400"] = errResp("invalid fields; details name each one")
			responses["409"] = errResp("duplicate id, stale revision, or revision_refused: the configuration revision the write makes cannot apply (details name each reason); nothing is stored")
			responses["413"] = errResp("body over 1 MiB")
			responses["415"] = errResp("a body of another media type")
		}
		if e.method != "GET" && !e.public {
			responses["500"] = errResp("not_applied: the write is stored but its configuration revision was refused; GET /ready names the reason")
			responses["504"] = errResp("apply_pending: the write is stored (ETag: its revision; the body's object: what success would have answered, a created key with its secret) but had not applied when the wait ended; GET /ready reports when it does")
		}
		if strings.Contains(e.path, "{id}") {
			responses["404"] = errResp("no such object")
		}
		op["responses"] = responses
		paths[e.path][strings.ToLower(e.method)] = op
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "api-gateway management API", "version": "v1",
			"description": "Manage routes, services, API keys, rate limits, IP rules, policies, tenants and settings of the api-gateway control plane."},
		"paths": paths,
		"components": map[string]any{
			"schemas":         schemas,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
		},
	}
}

func operationID(e endpoint) string {
	p := strings.NewReplacer(Prefix, "", "{id}", "by_id", "/", "_", "-", "_", ".", "_").Replace(e.path)
	return strings.ToLower(e.method) + strings.TrimRight(p, "_")
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// cleanSchema rewrites $defs references into components references.
func cleanSchema(s *jsonschema.Schema) any {
	b, _ := json.Marshal(s)
	out := strings.ReplaceAll(string(b), `"#/$defs/`, `"#/components/schemas/`)
	var v map[string]any
	_ = json.Unmarshal([]byte(out), &v)
	delete(v, "$schema")
	delete(v, "$id")
	return v
}

func (a *API) openapi(w http.ResponseWriter, r *http.Request) {
	doc, _ := json.MarshalIndent(a.OpenAPI(), "", "  ")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(doc)
}

// SortedPaths lists the API's method+path pairs (for tests and docs).
func (a *API) SortedPaths() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]string, 0, len(a.endpoints))
	for _, e := range a.endpoints {
		out = append(out, e.method+" "+e.path)
	}
	sort.Strings(out)
	return out
}
