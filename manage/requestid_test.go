package manage_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/internal/telemetry"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/store"
)

// The request id comes from the options the API is built with (serve passes telemetry's),
// never from package state: an id a middleware in front gave the request is answered and
// logged; without the options the client's X-Request-Id is answered, and the log (which reads
// telemetry's id) does not carry it.
func TestRequestIDFromOptions(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, tc := range []struct {
		name     string
		withOpts bool
		wantID   string
		wantLog  bool
	}{
		{"telemetry options", true, "front-1", true},
		{"no options", false, "client-2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			o := manage.Options{Store: st, Logger: telemetry.NewLogger("info", &logs), AdminTokenHash: manage.HashToken(token)}
			if tc.withOpts {
				o.RequestIDFromContext, o.RequestIDContext = telemetry.RequestIDFrom, telemetry.WithRequestID
			}
			api := manage.New(o)
			// A middleware in front that names the request itself, as telemetry.HTTPMiddleware does.
			front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				api.ServeHTTP(w, r.WithContext(telemetry.WithRequestID(r.Context(), "front-1")))
			})
			req := httptest.NewRequest("GET", "/api/v1/management/routes/nope", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("X-Request-Id", "client-2")
			rec := httptest.NewRecorder()
			front.ServeHTTP(rec, req)
			if got := rec.Header().Get("X-Request-Id"); got != tc.wantID {
				t.Fatalf("X-Request-Id %q, want %q", got, tc.wantID)
			}
			var body struct {
				Error struct {
					RequestID string `json:"request_id"`
				} `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.RequestID != tc.wantID {
				t.Fatalf("error body request_id %q (want %q): %s", body.Error.RequestID, tc.wantID, rec.Body.Bytes())
			}
			var logged bool
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "http request" {
					logged = rec["request_id"] == tc.wantID
				}
			}
			if logged != tc.wantLog {
				t.Fatalf("request log carries the id: %v, want %v\n%s", logged, tc.wantLog, logs.String())
			}
		})
	}
}
