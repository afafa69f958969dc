package manage

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// Error codes of the JSON error body.
const (
	CodeInvalid      = "invalid_argument"
	CodeNotFound     = "not_found"
	CodeExists       = "already_exists"
	CodeConflict     = "conflict"
	CodeUnauth       = "unauthenticated"
	CodeTooLarge     = "payload_too_large"
	CodeUnsupported  = "unsupported_media_type"
	CodeInternal     = "internal"
	CodeUnavailable  = "unavailable"
	CodeMethodNotAll = "method_not_allowed"
)

// ErrorBody is the JSON shape of every error response.
type ErrorBody struct {
	Error ErrorInfo `json:"error"`
}

// ErrorInfo describes one error; Details lists every bad field of a 400.
type ErrorInfo struct {
	Code      string             `json:"code"`
	Message   string             `json:"message"`
	Details   []model.FieldError `json:"details,omitempty"`
	RequestID string             `json:"request_id,omitempty"`
}

// WriteError writes the project's JSON error body.
func WriteError(w http.ResponseWriter, r *http.Request, status int, code, msg string, details []model.FieldError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ErrorBody{Error: ErrorInfo{Code: code, Message: msg, Details: details, RequestID: RequestIDFrom(r.Context())}})
}

func writeInvalid(w http.ResponseWriter, r *http.Request, errs model.FieldErrors) {
	WriteError(w, r, http.StatusBadRequest, CodeInvalid, "the request has invalid fields", errs)
}

// writeStoreError maps store errors to HTTP.
func (a *API) writeStoreError(w http.ResponseWriter, r *http.Request, kind model.Kind, id string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		WriteError(w, r, http.StatusNotFound, CodeNotFound, string(kind)+" "+quote(id)+" does not exist", nil)
	case errors.Is(err, store.ErrExists):
		WriteError(w, r, http.StatusConflict, CodeExists, string(kind)+" "+quote(id)+" already exists", nil)
	case errors.Is(err, store.ErrConflict):
		WriteError(w, r, http.StatusConflict, CodeConflict, "the object changed since the revision you sent; read it again and retry", nil)
	default:
		a.log.ErrorContext(r.Context(), "store error", "kind", string(kind), "id", id, "error", err.Error())
		WriteError(w, r, http.StatusServiceUnavailable, CodeUnavailable, "the store is unavailable; try again", nil)
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
