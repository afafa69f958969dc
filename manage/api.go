// Package manage is the REST management API under /api/v1/management/: CRUD for every kind of
// the model, API key lifecycle, service registration, the OpenAPI document and its page, and
// the unauthenticated /health and /ready probes.
package manage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// Prefix is where the management API lives.
const Prefix = "/api/v1/management"

// MaxBody is the largest request body accepted (413 above it).
const MaxBody = 1 << 20

// KeyMinter creates API key secrets; only the hash is stored.
type KeyMinter interface {
	NewSecret(id string) (secret, hash string, err error)
}

// Snapshotter gives the current model for cross-object validation.
type Snapshotter interface {
	Current() *model.Snapshot
	WaitFor(ctx context.Context, rev uint64) error
}

// Validator is extra validation a component runs before a write is accepted.
type Validator func(obj model.Object, snap *model.Snapshot) model.FieldErrors

// Options configure the API.
type Options struct {
	Store  store.Store
	Model  Snapshotter
	Keys   KeyMinter
	Logger *slog.Logger
	// AdminTokenHash is the SHA-256 of the admin bearer token.
	AdminTokenHash [32]byte
	// CORSOrigins lists allowed origins ("*" for any); empty disables CORS.
	CORSOrigins []string
	// WriteWait bounds how long a write waits for the new revision to be applied locally
	// before answering (so a client's next request sees it). Default 2s.
	WriteWait time.Duration
	// Now is the clock (tests inject one).
	Now func() time.Time
	// RequestIDFromContext reads the id a middleware in front gave the request, answered in
	// X-Request-Id and error bodies (nil: the client's X-Request-Id, else a new id).
	RequestIDFromContext func(context.Context) string
	// RequestIDContext also puts the request's id where the logger reads it (nil: only the
	// API's own error bodies carry it).
	RequestIDContext func(context.Context, string) context.Context
}

// API is the management API's http.Handler.
type API struct {
	Options
	log *slog.Logger
	mux *http.ServeMux

	// RouteStatus fills the status of a route on GET routes/{id} (set by the xDS server).
	RouteStatus func(id string) *model.RouteStatus

	mu         sync.RWMutex
	validators map[model.Kind][]Validator
	ready      map[string]func() error
	endpoints  []endpoint

	checks checkQueue
}

type endpoint struct {
	method, path string
	summary      string
	tag          string
	request      any // a value of the request body type, or nil
	response     any // a value of the response type, or nil
	list         bool
	public       bool
	status       int
	// contentType of the request body (default application/json).
	contentType string
}

// New builds the API.
func New(o Options) *API {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.WriteWait == 0 {
		o.WriteWait = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &API{Options: o, log: o.Logger, mux: http.NewServeMux(), validators: map[model.Kind][]Validator{}, ready: map[string]func() error{}}
	a.routes()
	return a
}

// HashToken returns the SHA-256 of an admin token.
func HashToken(tok string) [32]byte { return sha256.Sum256([]byte(tok)) }

// NewToken returns a new random admin token.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "agwadm_" + hex.EncodeToString(b)
}

// AddValidator registers extra validation for writes of a kind.
func (a *API) AddValidator(kind model.Kind, v Validator) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.validators[kind] = append(a.validators[kind], v)
}

// SetReady registers a readiness check reported by GET /ready.
func (a *API) SetReady(name string, fn func() error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ready[name] = fn
}

// mountedDocs describes the endpoints components mount, for the OpenAPI document.
var mountedDocs = map[string][2]string{
	"GET " + Prefix + "/xds/nodes":        {"xds", "Connected Envoy and gRPC nodes: node group, last ACKed version per type, last NACK"},
	"GET " + Prefix + "/analytics/usage":  {"analytics", "Usage from Envoy's access logs (?start, end, group_by=day|hour, route, api_key, user, tenant)"},
	"GET " + Prefix + "/analytics/errors": {"analytics", "Errors by route and status (?timeframe=24h)"},
}

// Mount adds an authenticated endpoint (Go ServeMux pattern, e.g. "GET /api/v1/management/xds/nodes").
func (a *API) Mount(pattern string, h http.Handler) {
	method, path, _ := strings.Cut(pattern, " ")
	doc, ok := mountedDocs[pattern]
	if !ok {
		doc = [2]string{"components", "mounted by a component"}
	}
	a.mu.Lock()
	a.endpoints = append(a.endpoints, endpoint{method: method, path: path, summary: doc[1], tag: doc[0], status: 200})
	a.mu.Unlock()
	a.mux.Handle(pattern, a.authed(h))
}

func (a *API) handle(e endpoint, h http.HandlerFunc) {
	a.endpoints = append(a.endpoints, e)
	var hh http.Handler = h
	if !e.public {
		hh = a.authed(h)
	}
	a.mux.Handle(e.method+" "+e.path, hh)
}

// ServeHTTP serves the API with request ids, logging, CORS, body limits and recovery.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var id string
	if a.RequestIDFromContext != nil {
		id = a.RequestIDFromContext(r.Context()) // set by a tracing middleware in front, if any
	}
	if id == "" {
		id = r.Header.Get("X-Request-Id")
	}
	if id == "" || len(id) > 128 {
		id = newRequestID()
	}
	w.Header().Set("X-Request-Id", id)
	r = r.WithContext(a.withRequestID(r.Context(), id))
	rec := &statusRecorder{ResponseWriter: w, status: 200}
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			a.log.ErrorContext(r.Context(), "panic in handler", "panic", p, "path", r.URL.Path)
			if !rec.wrote {
				WriteError(rec, r, http.StatusInternalServerError, CodeInternal, "internal error", nil)
			}
		}
		lvl := slog.LevelInfo
		if r.URL.Path == "/health" || r.URL.Path == "/ready" {
			lvl = slog.LevelDebug
		}
		a.log.Log(r.Context(), lvl, "http request", "method", r.Method, "path", r.URL.Path,
			"status_code", rec.status, "response_time_ms", float64(time.Since(start).Microseconds())/1000)
	}()
	if a.cors(rec, r) {
		return
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(rec, r.Body, MaxBody)
	}
	a.mux.ServeHTTP(rec, r)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// cors answers preflights and sets CORS headers; true means the request was answered.
func (a *API) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(a.CORSOrigins) == 0 {
		return false
	}
	allowed := false
	for _, o := range a.CORSOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			allowed = true
			break
		}
	}
	if !allowed {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", "ETag, X-Request-Id")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, X-Request-Id")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// isAdmin tells whether r carries the admin bearer token.
func (a *API) isAdmin(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return ok && subtle.ConstantTimeCompare(sum[:], a.AdminTokenHash[:]) == 1
}

// authed requires the admin bearer token. A missing or wrong token gets the same 401.
func (a *API) authed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.isAdmin(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="api-gateway"`)
			WriteError(w, r, http.StatusUnauthorized, CodeUnauth, "a valid admin bearer token is required", nil)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (a *API) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	checks := map[string]string{}
	ok := true
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	admin := a.isAdmin(r)
	if err := a.Store.Ping(ctx); err != nil {
		// A store error names its address (dial tcp 10.0.0.5:6379: ...): admin only.
		checks["store"], ok = "unavailable (the error: GET /ready with the admin token, or the logs)", false
		if admin {
			checks["store"] = err.Error()
		}
	} else {
		checks["store"] = "ok"
	}
	if a.Model != nil {
		// A refused newest revision is not ready: the gateway serves an older configuration
		// than the store holds (writes since are not in effect) until a revision applies.
		var err error
		if rr, isRR := a.Model.(ReadyReporter); isRR {
			err = rr.Ready()
		} else if a.Model.Current() == nil {
			err = errors.New("no configuration applied yet")
		}
		var summary interface{ Summary() string }
		// ?serving=true is the load balancer's question: does this replica serve a good
		// configuration? A refused newest revision leaves the last good one served, so it is
		// reported but not failed there: failing it would take every replica (each refuses
		// the same stored revision) out of rotation at once, and ext_authz with them.
		degraded := err != nil && r.URL.Query().Get("serving") == "true" && a.Model.Current() != nil && errors.As(err, &summary)
		switch {
		case degraded:
			checks["config"] = "degraded: " + summary.Summary()
		case err != nil && !admin && errors.As(err, &summary):
			// /ready is unauthenticated: a refusal's reason names objects, hosts and rule
			// text. Without the admin token it says only which revision is refused.
			checks["config"], ok = summary.Summary()+" (the reason: GET /ready with the admin token, or the error log)", false
		case err != nil:
			checks["config"], ok = err.Error(), false
		default:
			checks["config"] = "ok"
		}
	}
	a.mu.RLock()
	names := make([]string, 0, len(a.ready))
	for n := range a.ready {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := a.ready[n](); err != nil {
			checks[n], ok = err.Error(), false
		} else {
			checks[n] = "ok"
		}
	}
	a.mu.RUnlock()
	status := http.StatusOK
	state := "ready"
	if !ok {
		status, state = http.StatusServiceUnavailable, "not_ready"
	}
	writeJSON(w, status, map[string]any{"status": state, "checks": checks})
}

type ctxKey struct{}

// withRequestID puts the request id into ctx: the API's own key (RequestIDFrom) and, with
// Options.RequestIDContext, where the logger reads it.
func (a *API) withRequestID(ctx context.Context, id string) context.Context {
	ctx = context.WithValue(ctx, ctxKey{}, id)
	if a.RequestIDContext != nil {
		ctx = a.RequestIDContext(ctx, id)
	}
	return ctx
}

// RequestIDFrom returns the id the API gave the request ("" outside its handlers).
func RequestIDFrom(ctx context.Context) string {
	s, _ := ctx.Value(ctxKey{}).(string)
	return s
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "req-" + hex.EncodeToString(b)
}
