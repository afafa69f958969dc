// Package authz tests ext_authz against the built binary: objects are created through the
// REST API with the admin token, and Envoy-shaped Check requests go to the gRPC port.
package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

type env struct {
	t      *testing.T
	g      *testutil.Gateway
	client authv3.AuthorizationClient
	oidc   *mockoidc.MockOIDC
}

func start(t *testing.T) *env {
	geo := filepath.Join(testutil.GeoIPDir(), "GeoIP2-Country-Test.mmdb")
	if _, err := os.Stat(geo); err != nil {
		t.Fatalf("MaxMind test database missing: %v", err)
	}
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{
		"GEOIP_DB=" + geo, "JWT_ISSUER=" + m.Issuer(), "JWT_AUDIENCE=" + m.ClientID,
	}})
	conn, err := grpc.NewClient(g.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{t: t, g: g, client: authv3.NewAuthorizationClient(conn), oidc: m}
}

// api calls the management API and decodes the answer into out (when not nil).
func (e *env) api(method, path string, body any, out any) int {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.g.URL("/api/v1/management"+path), rd)
	req.Header.Set("Authorization", "Bearer "+e.g.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
	}
	if resp.StatusCode >= 300 && out == nil {
		e.t.Logf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

func (e *env) check(routeID, src string, headers map[string]string) *authv3.CheckResponse {
	e.t.Helper()
	h := map[string]string{":authority": "api.example.com", ":method": "GET", ":path": "/" + routeID + "/x",
		":scheme": "http", "x-request-id": fmt.Sprintf("e2e-%d", time.Now().UnixNano()), "user-agent": "e2e"}
	for k, v := range headers {
		h[k] = v
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: src, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 10000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: h["x-request-id"], Method: "GET", Path: h[":path"], Host: "api.example.com", Scheme: "http", Protocol: "HTTP/1.1", Headers: h}},
		ContextExtensions: map[string]string{"route_id": routeID},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := e.client.Check(ctx, req)
	if err != nil {
		e.t.Fatalf("Check: %v", err)
	}
	return resp
}

func status(r *authv3.CheckResponse) int {
	if r.GetOkResponse() != nil {
		return 200
	}
	return int(r.GetDeniedResponse().GetStatus().GetCode())
}

func TestAuthzThroughTheBinary(t *testing.T) {
	e := start(t)
	route := map[string]any{
		"id": "orders", "tenant": "acme",
		"conditions": []map[string]any{{"path_prefix": "/orders"}},
		"targets":    []map[string]any{{"host": "127.0.0.1", "port": 9}},
		"auth":       map[string]any{"scopes": []string{"orders:read"}},
	}
	if st := e.api("POST", "/routes", route, nil); st != 201 {
		t.Fatalf("create route: %d", st)
	}
	const src = "81.2.69.142" // GB in MaxMind's test data

	// No key yet: 401.
	if st := status(e.check("orders", src, nil)); st != 401 {
		t.Fatalf("no credentials: %d", st)
	}
	// A key created through the API works on the next Check.
	var created struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if st := e.api("POST", "/api-keys", map[string]any{"name": "e2e", "tenant": "acme", "user_id": "svc-e2e",
		"scopes": []string{"orders:read"}}, &created); st != 201 || created.Key == "" {
		t.Fatalf("create key: %d %+v", st, created)
	}
	resp := e.check("orders", src, map[string]string{"x-api-key": created.Key})
	if status(resp) != 200 {
		t.Fatalf("new key: %d %s", status(resp), resp.GetDeniedResponse().GetBody())
	}
	md := resp.GetDynamicMetadata().GetFields()
	if md["api_key_id"].GetStringValue() != created.ID || md["tenant_id"].GetStringValue() != "acme" || md["user_id"].GetStringValue() != "svc-e2e" {
		t.Fatalf("metadata %v", md)
	}
	// Another tenant's key never reaches the route.
	var globex struct {
		Key string `json:"key"`
	}
	e.api("POST", "/api-keys", map[string]any{"name": "globex", "tenant": "globex", "scopes": []string{"orders:read"}}, &globex)
	if st := status(e.check("orders", src, map[string]string{"x-api-key": globex.Key})); st != 403 {
		t.Fatalf("other tenant: %d", st)
	}
	// An ip-rule created through the API denies on the next Check.
	if st := e.api("POST", "/ip-rules", map[string]any{"id": "block-gb", "action": "deny", "cidrs": []string{"81.2.69.0/24"}}, nil); st != 201 {
		t.Fatalf("create ip rule: %d", st)
	}
	if st := status(e.check("orders", src, map[string]string{"x-api-key": created.Key})); st != 403 {
		t.Fatalf("denied address: %d", st)
	}
	e.api("DELETE", "/ip-rules/block-gb", nil, nil)
	// A geo policy (SE only) denies the GB address; deleting it restores access.
	if st := e.api("POST", "/policies", map[string]any{"id": "se-only", "allow_countries": []string{"SE"}}, nil); st != 201 {
		t.Fatalf("create policy: %d", st)
	}
	if r := e.check("orders", src, map[string]string{"x-api-key": created.Key}); status(r) != 403 || !strings.Contains(r.GetDeniedResponse().GetBody(), "country_not_allowed") {
		t.Fatalf("geo: %d %s", status(r), r.GetDeniedResponse().GetBody())
	}
	if st := status(e.check("orders", "89.160.20.112", map[string]string{"x-api-key": created.Key})); st != 200 {
		t.Fatalf("SE address: %d", st)
	}
	e.api("DELETE", "/policies/se-only", nil, nil)
	// A policy whose CEL does not compile is refused with a field error.
	var bad struct {
		Error struct {
			Details []struct {
				Field string `json:"field"`
			} `json:"details"`
		} `json:"error"`
	}
	if st := e.api("POST", "/policies", map[string]any{"id": "broken", "rules": []map[string]any{
		{"expression": `request.method ==`, "action": "deny"}}}, &bad); st != 400 || len(bad.Error.Details) == 0 || bad.Error.Details[0].Field != "rules[0].expression" {
		t.Fatalf("bad CEL: %d %+v", st, bad)
	}
	// A JWT from the OIDC provider named by JWT_ISSUER (keys found by discovery).
	tok, err := e.oidc.Keypair.SignJWT(jwt.MapClaims{"iss": e.oidc.Issuer(), "aud": e.oidc.ClientID, "sub": "oidc-user",
		"tenant_id": "acme", "scope": "orders:read", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.check("orders", src, map[string]string{"authorization": "Bearer " + tok}); status(r) != 200 {
		t.Fatalf("jwt: %d %s", status(r), r.GetDeniedResponse().GetBody())
	}
	// A claim carrying CR/LF (header injection into the upstream request) is refused.
	evil, err := e.oidc.Keypair.SignJWT(jwt.MapClaims{"iss": e.oidc.Issuer(), "aud": e.oidc.ClientID,
		"sub": "oidc-user\r\nx-user-id: root", "tenant_id": "acme", "scope": "orders:read", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.check("orders", src, map[string]string{"authorization": "Bearer " + evil}); status(r) != 401 ||
		!strings.Contains(r.GetDeniedResponse().GetBody(), "invalid_identity_value") {
		t.Fatalf("CRLF in sub: %d %s", status(r), r.GetDeniedResponse().GetBody())
	}
	// ip-rules the API accepts deny what they denote: an IPv4-mapped prefix denies the IPv4
	// client, and an allow list written with a leading-zero mask still restricts the route.
	key := map[string]string{"x-api-key": created.Key}
	if st := e.api("POST", "/ip-rules", map[string]any{"id": "mapped", "action": "deny", "cidrs": []string{"::ffff:81.2.69.0/120"}}, nil); st != 201 {
		t.Fatalf("create mapped ip rule: %d", st)
	}
	if st := status(e.check("orders", src, key)); st != 403 {
		t.Fatalf("IPv4 client under an IPv4-mapped deny: %d", st)
	}
	e.api("DELETE", "/ip-rules/mapped", nil, nil)
	if st := e.api("POST", "/ip-rules", map[string]any{"id": "office", "action": "allow", "cidrs": []string{"10.0.0.0/08"},
		"routes": []string{"orders"}}, nil); st != 201 {
		t.Fatalf("create allow rule: %d", st)
	}
	if st := status(e.check("orders", src, key)); st != 403 {
		t.Fatalf("outside an allow list with a leading-zero mask: %d", st)
	}
	if st := status(e.check("orders", "10.1.2.3", key)); st != 200 {
		t.Fatalf("inside the allow list: %d", st)
	}
	e.api("DELETE", "/ip-rules/office", nil, nil)
	// Revoked through the API: fails on the next Check.
	if st := e.api("POST", "/api-keys/"+created.ID+"/revoke", nil, nil); st != 200 {
		t.Fatalf("revoke: %d", st)
	}
	if r := e.check("orders", src, map[string]string{"x-api-key": created.Key}); status(r) != 401 {
		t.Fatalf("revoked key: %d %s", status(r), r.GetDeniedResponse().GetBody())
	}
	// Unknown route: fail closed.
	if st := status(e.check("nosuch", src, map[string]string{"x-api-key": globex.Key})); st != 403 {
		t.Fatalf("unknown route: %d", st)
	}
	// The decisions are counted.
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.g.MetricsPort))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`api_gateway_authz_decisions_total{checker="api_key",decision="deny",reason="api_key_revoked"} 1`,
		"api_gateway_authz_check_duration_seconds_count"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestWAFThroughTheBinary(t *testing.T) {
	e := start(t)
	route := map[string]any{
		"id": "shop", "require_auth": false,
		"conditions": []map[string]any{{"path_prefix": "/shop"}},
		"targets":    []map[string]any{{"host": "127.0.0.1", "port": 9}},
		"waf":        map[string]any{"enabled": true},
	}
	if st := e.api("POST", "/routes", route, nil); st != 201 {
		t.Fatalf("create route: %d", st)
	}
	clean := e.check("shop", "10.0.0.1", nil)
	if status(clean) != 200 {
		t.Fatalf("clean request: %d %s", status(clean), clean.GetDeniedResponse().GetBody())
	}
	h := map[string]string{":path": "/shop/x?id=1%27%20OR%201%3D1--"}
	if r := e.check("shop", "10.0.0.1", h); status(r) != 403 || !strings.Contains(r.GetDeniedResponse().GetBody(), "waf_blocked") {
		t.Fatalf("sqli: %d %s", status(r), r.GetDeniedResponse().GetBody())
	}
	// A custom rule that does not compile is refused at write time.
	route["id"] = "shop2"
	route["waf"] = map[string]any{"custom_rules": "SecRule ARGS \"@nosuchop x\" \"id:9001,deny\""}
	var bad struct {
		Error struct {
			Details []struct {
				Field string `json:"field"`
			} `json:"details"`
		} `json:"error"`
	}
	if st := e.api("POST", "/routes", route, &bad); st != 400 || len(bad.Error.Details) == 0 || !strings.HasPrefix(bad.Error.Details[0].Field, "waf.") {
		t.Fatalf("bad custom rule: %d %+v", st, bad)
	}
}

// TestCredentialConfusionAndIntrospectionBoundsThroughTheBinary: two users' credentials in
// one request are refused (not merged), and opaque tokens cost the identity provider at most
// the configured calls, through the REST API and the gRPC port of the built binary.
func TestCredentialConfusionAndIntrospectionBoundsThroughTheBinary(t *testing.T) {
	e := start(t)
	var calls atomic.Int64
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"active": false})
	}))
	t.Cleanup(idp.Close)
	settings := map[string]any{"id": "global", "auth": map[string]any{"max_token_bytes": 4096,
		"introspection": map[string]any{"url": idp.URL, "max_calls_per_second": 5}}}
	if st := e.api("PUT", "/settings", settings, nil); st != 200 && st != 201 {
		t.Fatalf("put settings: %d", st)
	}
	route := map[string]any{
		"id": "owners", "conditions": []map[string]any{{"path_prefix": "/owners"}},
		"targets": []map[string]any{{"host": "127.0.0.1", "port": 9}},
		"auth":    map[string]any{"scopes": []string{"admin"}, "roles": []string{"owner"}},
	}
	if st := e.api("POST", "/routes", route, nil); st != 201 {
		t.Fatalf("create route: %d", st)
	}
	var mallory struct {
		Key string `json:"key"`
	}
	if st := e.api("POST", "/api-keys", map[string]any{"name": "mallory", "tenant": "acme", "user_id": "mallory",
		"scopes": []string{"admin"}}, &mallory); st != 201 {
		t.Fatalf("create key: %d", st)
	}
	alice, err := e.oidc.Keypair.SignJWT(jwt.MapClaims{"iss": e.oidc.Issuer(), "aud": e.oidc.ClientID, "sub": "alice",
		"tenant_id": "acme", "scope": "read", "roles": []string{"owner"}, "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	const src = "10.1.2.3"
	for _, c := range []struct {
		name   string
		hdrs   map[string]string
		status int
		reason string
	}{
		{"alice's token alone", map[string]string{"authorization": "Bearer " + alice}, 403, "insufficient_scope"},
		{"mallory's key alone", map[string]string{"x-api-key": mallory.Key}, 403, "insufficient_role"},
		{"both", map[string]string{"authorization": "Bearer " + alice, "x-api-key": mallory.Key}, 403, "credentials_mismatch"},
	} {
		r := e.check("owners", src, c.hdrs)
		if status(r) != c.status || !strings.Contains(r.GetDeniedResponse().GetBody(), c.reason) {
			t.Fatalf("%s: %d %s", c.name, status(r), r.GetDeniedResponse().GetBody())
		}
	}
	// Over max_token_bytes: refused before any call.
	if r := e.check("owners", src, map[string]string{"authorization": "Bearer " + strings.Repeat("o", 5000)}); status(r) != 401 ||
		!strings.Contains(r.GetDeniedResponse().GetBody(), "invalid_token") || calls.Load() != 0 {
		t.Fatalf("oversized token: %d %s, %d calls", status(r), r.GetDeniedResponse().GetBody(), calls.Load())
	}
	// 40 distinct opaque tokens: at most the budget (5 a second, plus what refills while
	// they are sent) reaches the identity provider; the rest are 503s, counted.
	start := time.Now()
	for i := 0; i < 40; i++ {
		if st := status(e.check("owners", src, map[string]string{"authorization": fmt.Sprintf("Bearer junk-%d", i)})); st != 401 && st != 503 {
			t.Fatalf("junk token: %d", st)
		}
	}
	if max := 5 + int64(time.Since(start).Seconds()*5) + 1; calls.Load() > max {
		t.Fatalf("%d introspection calls for 40 junk tokens, want at most %d", calls.Load(), max)
	}
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.g.MetricsPort))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), "api_gateway_authz_introspection_throttled_total") {
		t.Fatal("metrics lack api_gateway_authz_introspection_throttled_total")
	}
}
