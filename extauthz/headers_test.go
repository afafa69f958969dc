package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/api-gateway/api-gateway/model"
)

func TestIdentityHeaderSettings(t *testing.T) {
	h := newHarness(t, Options{})
	k, s := newKey(t, "k", func(k *model.APIKey) { k.UserID = "u"; k.Scopes = []string{"a", "b"} })
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", nil)}, APIKeys: []*model.APIKey{k},
		Settings: &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{KeepCredentials: true,
			IdentityHeaders: map[string]string{"user_id": "X-Caller", "scopes": "-"}}}})
	resp := h.check(envoyReq{routeID: rid("r"), headers: map[string]string{"x-api-key": s, "x-auth-scopes": "forged"}})
	hd := okHeaders(resp)
	if hd["x-caller"] != "u" || hd["x-api-key-id"] != "k" || hd["x-user-id"] != "" || hd["x-auth-scopes"] != "" {
		t.Fatalf("headers %v", hd)
	}
	removed := strings.Join(resp.GetOkResponse().GetHeadersToRemove(), ",")
	if strings.Contains(removed, "x-api-key,") || strings.HasSuffix(removed, "x-api-key") || strings.Contains(removed, "authorization") {
		t.Fatalf("keep_credentials removed credentials: %q", removed)
	}
	if !strings.Contains(removed, "x-tenant-id") {
		t.Fatalf("empty identity header not removed: %q", removed)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func TestDecisionsAreLogged(t *testing.T) {
	var buf syncBuf
	h := newHarness(t, Options{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	k, s := newKey(t, "k", nil)
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", nil)}, APIKeys: []*model.APIKey{k}})
	h.check(envoyReq{routeID: rid("r"), id: "allowed-1", headers: map[string]string{"x-api-key": s}})
	h.check(envoyReq{routeID: rid("r"), id: "denied-1", headers: map[string]string{"x-api-key": s + "x"}})
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 1 { // the allow is logged at debug, below this handler's level
		t.Fatalf("log lines %v", lines)
	}
	l := lines[0]
	if l["request_id"] != "denied-1" || l["route_id"] != "r" || l["checker"] != "api_key" || l["reason"] != "invalid_api_key" || l["decision"] != "deny" {
		t.Fatalf("log line %v", l)
	}
}

func TestRawHeaderMap(t *testing.T) {
	h := newHarness(t, Options{})
	k, s := newKey(t, "k", nil)
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", nil)}, APIKeys: []*model.APIKey{k}})
	req := envoyReq{routeID: rid("r")}.build()
	hr := req.Attributes.Request.Http
	raw := &corev3.HeaderMap{}
	for name, v := range hr.Headers {
		raw.Headers = append(raw.Headers, &corev3.HeaderValue{Key: name, RawValue: []byte(v)})
	}
	raw.Headers = append(raw.Headers, &corev3.HeaderValue{Key: "x-api-key", RawValue: []byte(s)})
	hr.Headers, hr.HeaderMap = nil, raw
	resp, err := h.client.Check(context.Background(), req)
	if err != nil || httpStatus(resp) != 200 {
		t.Fatalf("raw header map: %v %d %s", err, httpStatus(resp), resp.GetDeniedResponse().GetBody())
	}
}
