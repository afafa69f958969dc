package extauthz

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
)

// fakeClock is an injected clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// envoyCheck builds a CheckRequest the way Envoy's ext_authz filter sends it.
type envoyReq struct {
	method, path, host string
	src                string
	headers            map[string]string
	routeID            *string
	tenant             string
	id                 string
}

func rid(s string) *string { return &s }

func (r envoyReq) build() *authv3.CheckRequest {
	if r.method == "" {
		r.method = "GET"
	}
	if r.path == "" {
		r.path = "/"
	}
	if r.host == "" {
		r.host = "api.example.com"
	}
	if r.src == "" {
		r.src = "10.1.2.3"
	}
	if r.id == "" {
		r.id = fmt.Sprintf("req-%d", time.Now().UnixNano())
	}
	h := map[string]string{":authority": r.host, ":method": r.method, ":path": r.path, ":scheme": "http",
		"user-agent": "curl/8.5.0", "accept": "*/*", "x-request-id": r.id, "x-forwarded-proto": "http"}
	for k, v := range r.headers {
		h[strings.ToLower(k)] = v
	}
	ext := map[string]string{}
	if r.routeID != nil {
		ext["route_id"] = *r.routeID
	}
	if r.tenant != "" {
		ext["tenant"] = r.tenant
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: r.src, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 53211}}}}},
		Destination: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.10", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 10000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: r.id, Method: r.method, Path: r.path, Host: r.host, Scheme: "http", Protocol: "HTTP/1.1", Headers: h,
		}},
		ContextExtensions: ext,
	}}
}

// harness is an engine behind a real gRPC server on a free loopback port.
type harness struct {
	t      testing.TB
	clock  *fakeClock
	engine *Engine
	reg    *prometheus.Registry
	client authv3.AuthorizationClient
	snap   *model.Snapshot
}

func newHarness(t testing.TB, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, clock: newClock(), reg: prometheus.NewRegistry()}
	if opts.Clock == nil {
		opts.Clock = h.clock.Now
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	opts.Registerer = h.reg
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.engine = e
	h.client = startServer(t, NewServer(e).Register)
	return h
}

func startServer(t testing.TB, register func(*grpc.Server)) authv3.AuthorizationClient {
	t.Helper()
	lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// apply loads a snapshot into the engine as the pipeline would.
func (h *harness) apply(s *model.Snapshot) {
	h.t.Helper()
	if s.Settings == nil {
		s.Settings = &model.Settings{ID: model.SettingsID}
	}
	commit, err := h.engine.Prepare(context.Background(), s)
	if err != nil {
		h.t.Fatalf("prepare: %v", err)
	}
	commit()
	h.snap = s
}

func (h *harness) check(r envoyReq) *authv3.CheckResponse {
	h.t.Helper()
	resp, err := h.client.Check(context.Background(), r.build())
	if err != nil {
		h.t.Fatalf("Check: %v", err)
	}
	return resp
}

// status returns the HTTP status of a response (200 for allow).
func httpStatus(r *authv3.CheckResponse) int {
	if ok := r.GetOkResponse(); ok != nil {
		return 200
	}
	return int(r.GetDeniedResponse().GetStatus().GetCode())
}

func errCode(t testing.TB, r *authv3.CheckResponse) string {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal([]byte(r.GetDeniedResponse().GetBody()), &b); err != nil {
		t.Fatalf("deny body %q: %v", r.GetDeniedResponse().GetBody(), err)
	}
	return b.Error.Code
}

func okHeaders(r *authv3.CheckResponse) map[string]string {
	m := map[string]string{}
	for _, h := range r.GetOkResponse().GetHeaders() {
		m[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return m
}

func deniedHeader(r *authv3.CheckResponse, name string) string {
	for _, h := range r.GetDeniedResponse().GetHeaders() {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// newKey creates a model key with a real secret.
func newKey(t testing.TB, id string, mod func(*model.APIKey)) (*model.APIKey, string) {
	t.Helper()
	secret, hash, err := NewAPIKeySecret(id)
	if err != nil {
		t.Fatal(err)
	}
	k := &model.APIKey{ID: id, Name: id, SecretHash: hash}
	if mod != nil {
		mod(k)
	}
	return k, secret
}

func route(id string, mod func(*model.Route)) *model.Route {
	r := &model.Route{ID: id, Conditions: []model.Condition{{PathPrefix: "/" + id}},
		Targets: []model.Target{{Host: "10.0.0.1", Port: 8080}}}
	if mod != nil {
		mod(r)
	}
	return r
}

// signingKey is a test issuer key.
type signingKey struct {
	kid  string
	alg  string
	priv crypto.Signer
}

func genKey(t testing.TB, kid, alg string) *signingKey {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch {
	case strings.HasPrefix(alg, "RS"), strings.HasPrefix(alg, "PS"):
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case alg == "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case alg == "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case alg == "ES512":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case alg == "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &signingKey{kid: kid, alg: alg, priv: priv}
}

func u64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (k *signingKey) jwk() map[string]any {
	m := map[string]any{"kid": k.kid, "use": "sig", "alg": k.alg}
	switch p := k.priv.Public().(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", u64(p.N.Bytes()), u64(big.NewInt(int64(p.E)).Bytes())
	case *ecdsa.PublicKey:
		size := (p.Curve.Params().BitSize + 7) / 8
		raw, _ := p.Bytes()
		m["kty"], m["crv"], m["x"], m["y"] = "EC", p.Curve.Params().Name, u64(raw[1:1+size]), u64(raw[1+size:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", u64(p)
	}
	return m
}

func (k *signingKey) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.GetSigningMethod(k.alg), claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jwksServer serves a mutable JWKS over HTTP and counts fetches.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	keys   []*signingKey
	down   bool
	maxAge int
	hits   int
}

func newJWKSServer(t testing.TB, keys ...*signingKey) *jwksServer {
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.hits++
		if s.down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var out []map[string]any
		for _, k := range s.keys {
			out = append(out, k.jwk())
		}
		if s.maxAge > 0 {
			w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", s.maxAge))
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": out})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(keys ...*signingKey) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func (s *jwksServer) setDown(d bool) {
	s.mu.Lock()
	s.down = d
	s.mu.Unlock()
}

func (s *jwksServer) fetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// geoDir finds MaxMind's test databases in the repository; missing is a failure.
func geoDir(t testing.TB) string {
	t.Helper()
	dir := testutil.GeoIPDir()
	if _, err := os.Stat(filepath.Join(dir, "GeoIP2-Country-Test.mmdb")); err != nil {
		t.Fatalf("MaxMind test databases missing (expected in %s): %v", dir, err)
	}
	return dir
}

func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// counterValue sums a counter's series whose labels include want.
func counterValue(t testing.TB, h *harness, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func parseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339, s) }
