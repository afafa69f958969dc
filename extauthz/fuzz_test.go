package extauthz

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/proto"

	"github.com/api-gateway/api-gateway/model"
)

// fuzzRequest builds an Envoy CheckRequest from fuzzed parts. headers holds "name: value"
// lines; raw sends them as encode_raw_headers does (bytes, names as sent, repeats kept).
func fuzzRequest(method, path, headers, routeID string, hasRoute bool, src string, raw bool) *authv3.CheckRequest {
	h := &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Host: "api.example.com"}
	var hm []*corev3.HeaderValue
	for _, line := range strings.Split(headers, "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimPrefix(v, " ")
		if raw {
			hm = append(hm, &corev3.HeaderValue{Key: name, RawValue: []byte(v)})
			continue
		}
		if h.Headers == nil {
			h.Headers = map[string]string{}
		}
		h.Headers[strings.ToLower(name)] = v
	}
	if raw {
		h.HeaderMap = &corev3.HeaderMap{Headers: hm}
	}
	ext := map[string]string{}
	if hasRoute {
		ext["route_id"] = routeID
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: src}}}},
		Request:           &authv3.AttributeContext_Request{Http: h},
		ContextExtensions: ext,
	}}
}

// FuzzCheckRequest feeds arbitrary Envoy requests through the adapter (FromCheckRequest),
// the engine and the answer (Response), and checks what must hold for every request:
//   - nothing panics; the adapter's Request has lowercase header names and a path without
//     its query;
//   - an allow sets or removes every identity header (x-user-id, x-tenant-id, x-api-key-id,
//     x-auth-scopes, claims_to_headers targets): a client's own value never reaches the
//     upstream; values set are valid header values and are the verified identity's;
//   - credentials the gateway read are removed on allow;
//   - a denial is a 4xx/5xx with a JSON body naming the reason;
//   - the answer does not depend on the requests before it (the remembered answer equals a
//     freshly built one).
//
// The seed corpus (f.Add below) runs in plain `go test`.
func FuzzCheckRequest(f *testing.F) {
	h := newHarness(f, Options{})
	sk := genKey(f, "k1", "RS256")
	jwks := newJWKSServer(f, sk)
	k, secret := newKey(f, "fz", func(k *model.APIKey) { k.UserID, k.Tenant, k.Scopes = "alice", "acme", []string{"read"} })
	other, otherSecret := newKey(f, "other", func(k *model.APIKey) { k.UserID, k.Tenant = "mallory", "acme" })
	down := newJWKSServer(f, sk)
	down.setDown(true) // its tokens fail open on route "open"
	const downIssuer = "https://down.test"
	snap := jwtSnapshot(1, model.JWTIssuer{Issuer: testIssuer, JWKSURI: jwks.URL}, model.JWTIssuer{Issuer: downIssuer, JWKSURI: down.URL})
	snap.APIKeys = []*model.APIKey{k, other}
	snap.Routes = append(snap.Routes,
		publicRoute("pub", func(r *model.Route) {
			r.Auth = &model.RouteAuth{ClaimsToHeaders: map[string]string{"email": "x-user-email"}}
		}),
		route("read", func(r *model.Route) {
			r.Tenant = "acme"
			r.Auth = &model.RouteAuth{Scopes: []string{"read"}, ClaimsToHeaders: map[string]string{"email": "x-user-email"}}
		}),
		route("hdr", func(r *model.Route) { r.Auth = &model.RouteAuth{TenantHeader: "X-Tenant"} }),
		route("open", func(r *model.Route) { r.Auth = &model.RouteAuth{FailOpen: true} }),
		route("trial", func(r *model.Route) { r.Auth = &model.RouteAuth{DryRun: true, IPRules: []string{"ban"}} }),
	)
	snap.IPRules = []*model.IPRule{{ID: "ban", Action: "deny", CIDRs: []string{"203.0.113.0/24"}, Routes: []string{"trial"}}}
	h.apply(snap)
	tok := sk.sign(f, jwt.MapClaims{"iss": testIssuer, "sub": "alice", "tenant_id": "acme", "scope": "read",
		"email": "a@example.com", "exp": h.clock.Now().Add(time.Hour).Unix()})
	evil := sk.sign(f, jwt.MapClaims{"iss": testIssuer, "sub": "eve\r\nx-admin: 1", "exp": h.clock.Now().Add(time.Hour).Unix()})
	unchecked := sk.sign(f, jwt.MapClaims{"iss": downIssuer, "sub": "alice", "exp": h.clock.Now().Add(time.Hour).Unix()})
	srv := NewServer(h.engine)

	f.Add("GET", "/read/1?x=1", "x-api-key: "+secret+"\nx-user-id: root", "read", true, "10.0.0.1", false)
	f.Add("GET", "/read", "authorization: Bearer "+tok+"\nx-user-email: ceo@example.com", "read", true, "10.0.0.1", false)
	f.Add("POST", "/read", "x-api-key: "+otherSecret+"\nauthorization: Bearer "+tok, "read", true, "10.0.0.1", false)
	f.Add("GET", "/read", "X-Api-Key: "+secret+"\nx-api-key: "+secret, "read", true, "10.0.0.1", true)
	f.Add("GET", "/pub", "x-user-id: root\nx-tenant-id: acme\nx-auth-scopes: admin\nx-api-key-id: k", "pub", true, "::1", false)
	f.Add("GET", "/pub", "authorization: Basic dTpw\nx-forwarded-for: 1.2.3.4, 5.6.7.8", "pub", true, "10.0.0.1", true)
	f.Add("GET", "/pub", "authorization: Bearer "+evil, "pub", true, "10.0.0.1", false)
	f.Add("GET", "/hdr", "x-api-key: "+secret+"\nx-tenant: acme", "hdr", true, "10.0.0.1", false)
	f.Add("", "", "", "", false, "", false)
	f.Add("GET", "?", ":path: /x?y\nx-request-id: r1", "nosuch", true, "not-an-ip", true)
	f.Add("GET", "/read", "authorization: bearer    \nx-api-key:  ", "read", true, "fe80::1%eth0", false)
	f.Add("GET", "/read", "authorization: ApiKey "+secret+"\nx-api-key: "+otherSecret, "read", true, "10.0.0.1", false)
	f.Add("GET", "/open", "authorization: Bearer "+unchecked+"\nx-user-id: root", "open", true, "10.0.0.1", false)
	f.Add("GET", "/open", "Authorization: Bearer "+unchecked+"\nX-Api-Key: "+secret, "open", true, "10.0.0.1", true)
	f.Add("GET", "/trial", "authorization: ApiKey "+secret+"\nx-user-id: root", "trial", true, "203.0.113.7", false)
	f.Add("GET", "/trial", "authorization: Bearer "+tok, "trial", true, "203.0.113.7", true)

	identity := []string{"x-user-id", "x-tenant-id", "x-api-key-id", "x-auth-scopes", "x-user-email"}
	f.Fuzz(func(t *testing.T, method, path, headers, routeID string, hasRoute bool, src string, raw bool) {
		req := fuzzRequest(method, path, headers, routeID, hasRoute, src, raw)
		r := FromCheckRequest(req)
		for name := range r.Headers {
			if name != strings.ToLower(name) && raw {
				t.Fatalf("header name %q not lowercased", name)
			}
		}
		if strings.Contains(r.Path, "?") {
			t.Fatalf("path %q keeps its query", r.Path)
		}
		resp, err := srv.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		fresh := Response(r, h.engine.Check(context.Background(), FromCheckRequest(req)))
		if !proto.Equal(resp, fresh) {
			t.Fatalf("the answer changed between two identical checks:\n%v\n%v", resp, fresh)
		}
		if deny := resp.GetDeniedResponse(); deny != nil {
			var b errorBody
			if st := deny.GetStatus().GetCode(); st < 400 || st > 599 {
				t.Fatalf("denied with status %d", st)
			}
			if err := json.Unmarshal([]byte(deny.GetBody()), &b); err != nil || b.Error.Code == "" {
				t.Fatalf("deny body %q: %v", deny.GetBody(), err)
			}
			return
		}
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatal("neither allowed nor denied")
		}
		set := map[string]string{}
		for _, hv := range ok.GetHeaders() {
			set[hv.GetHeader().GetKey()] = hv.GetHeader().GetValue()
			if !validHeaderValue(hv.GetHeader().GetValue()) {
				t.Fatalf("header %s set to an invalid value %q", hv.GetHeader().GetKey(), hv.GetHeader().GetValue())
			}
		}
		removed := removedSet(ok.GetHeadersToRemove())
		md := resp.GetDynamicMetadata().GetFields()
		authMethod := md["auth_method"].GetStringValue()
		for _, name := range identity {
			_, isSet := set[name]
			if name == "x-user-email" && r.RouteID != "pub" && r.RouteID != "read" {
				continue // no claims_to_headers on this route
			}
			if isSet == removed[name] {
				t.Fatalf("identity header %s: set %v, removed %v", name, isSet, removed[name])
			}
			if isSet && authMethod == MethodNone {
				t.Fatalf("identity header %s set without an identity", name)
			}
		}
		if v, isSet := set["x-user-id"]; isSet && v != md["user_id"].GetStringValue() {
			t.Fatalf("x-user-id %q is not the verified user %q", v, md["user_id"].GetStringValue())
		}
		if v, isSet := set["x-api-key-id"]; isSet && v != md["api_key_id"].GetStringValue() {
			t.Fatalf("x-api-key-id %q is not the verified key %q", v, md["api_key_id"].GetStringValue())
		}
		if authMethod != MethodNone && (!removed["authorization"] || !removed["x-api-key"]) {
			t.Fatalf("credentials forwarded (auth_method %s, removed %v)", authMethod, removed)
		}
		if r.Headers["x-api-key"] != "" && !removed["x-api-key"] {
			t.Fatalf("an x-api-key the gateway read is forwarded (auth_method %s)", authMethod)
		}
		if a := strings.ToLower(r.Headers["authorization"]); (strings.HasPrefix(a, "bearer ") || strings.HasPrefix(a, "apikey ")) &&
			strings.TrimSpace(a[7:]) != "" && !removed["authorization"] {
			t.Fatalf("a bearer token the gateway read is forwarded (auth_method %s)", authMethod)
		}
	})
}
