package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// checker sends Envoy-shaped ext_authz Check requests to a gateway's gRPC port.
type checker struct {
	t      *testing.T
	client authv3.AuthorizationClient
}

func newChecker(t *testing.T, g *testutil.Gateway) *checker {
	conn, err := grpc.NewClient(g.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &checker{t: t, client: authv3.NewAuthorizationClient(conn)}
}

// status is the HTTP status ext_authz decides for a request to routeID from src.
func (c *checker) status(routeID, src string, headers map[string]string) int {
	c.t.Helper()
	h := map[string]string{":authority": "api.example.com", ":method": "GET", ":path": "/" + routeID + "/x", ":scheme": "http"}
	for k, v := range headers {
		h[k] = v
	}
	addr := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: addr(src, 40000)}, Destination: &authv3.AttributeContext_Peer{Address: addr("127.0.0.1", 10000)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: h[":path"], Host: "api.example.com", Scheme: "http", Protocol: "HTTP/1.1", Headers: h}},
		ContextExtensions: map[string]string{"route_id": routeID},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.client.Check(ctx, req)
	if err != nil {
		c.t.Fatalf("Check: %v", err)
	}
	if resp.GetOkResponse() != nil {
		return 200
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// poisonSettings holds a global WAF whose rules do not compile, as a replica that skipped
// the API's checks (or another version) could store it: every route uses the global WAF,
// so ext_authz refuses the revision (a route's own WAF that does not compile only makes
// that route deny).
const poisonSettings = `{"id": "global", "waf": {"custom_rules": "SecRule ARGS \"@nosuchop x\" \"id:9001,deny\""}}`

// ready returns /ready's status and body as the admin sees it (with the token, a refusal's
// reason is shown).
func ready(t *testing.T, g *testutil.Gateway) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", g.URL("/ready"), nil)
	req.Header.Set("Authorization", "Bearer "+g.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// metric returns the value of an unlabelled metric on the gateway's /metrics.
func metric(t *testing.T, g *testutil.Gateway, name string) string {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", g.MetricsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	t.Fatalf("metric %s not exported", name)
	return ""
}

// Route id "service" and service name "0" both named cluster "service/0": the second write
// answered 201, and from then on every revision was refused while writes kept answering 2xx,
// so a new API key never worked, a revoked one kept working and a deny rule was ignored.
// Now the names cannot meet: both apply, and every later change applies too.
func TestRouteIDServiceAndServiceNameZeroBothApply(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{})
	c := newChecker(t, g)
	route := `{"id": "service", "conditions": [{"path_prefix": "/service"}],
	  "targets": [{"host": "127.0.0.1", "port": 9}], "require_auth": true}`
	if code, body := g.Do("POST", "/api/v1/management/routes", route, nil); code != 201 {
		t.Fatalf("route service: %d %s", code, body)
	}
	if code, body := g.Do("POST", "/api/v1/management/services", `{"name": "0", "host": "127.0.0.1", "port": 9}`, nil); code != 201 {
		t.Fatalf("service 0: %d %s", code, body)
	}
	var key struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if code, body := g.Do("POST", "/api/v1/management/api-keys", `{"name": "after-the-names"}`, &key); code != 201 {
		t.Fatalf("api key: %d %s", code, body)
	}
	withKey := map[string]string{"x-api-key": key.Key}
	if st := c.status("service", "10.1.1.1", withKey); st != 200 {
		t.Fatalf("a key created after route service and service 0 must work: %d", st)
	}
	if code, body := g.Do("POST", "/api/v1/management/ip-rules", `{"id": "deny-one", "action": "deny", "cidrs": ["10.9.9.9/32"]}`, nil); code != 201 {
		t.Fatalf("deny rule: %d %s", code, body)
	}
	if st := c.status("service", "10.9.9.9", withKey); st != 403 {
		t.Fatalf("a deny rule written after them must deny: %d", st)
	}
	if code, body := g.Do("POST", "/api/v1/management/api-keys/"+key.ID+"/revoke", nil, nil); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if st := c.status("service", "10.1.1.1", withKey); st != 401 {
		t.Fatalf("a revoked key must stop working: %d", st)
	}
	if code, body := ready(t, g); code != 200 {
		t.Fatalf("/ready: %d %s", code, body)
	}
	if v := metric(t, g, "api_gateway_config_revisions_rejected_total"); v != "0" {
		t.Fatalf("revisions rejected: %s\n%s", v, g.Logs())
	}
}

// A revision a consumer refuses (here: ext_authz cannot compile the global WAF rules, stored
// by a replica that skipped the API's checks) makes the gateway say so: /ready 503 naming the
// refusal, api_gateway_config_revision_rejected 1, an error log. A write whose revision is
// then refused is undone and answers 409 naming the refusal, not 2xx. Replacing the
// settings through the API applies, and the gateway is ready again.
func TestRefusedRevisionIsReportedAndWritesAreNotAcknowledged(t *testing.T) {
	r := testutil.StartRedis(t)
	url := "redis://" + r.Addr
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{"REDIS_URL=" + url}})
	c := newChecker(t, g)
	if code, body := g.Do("POST", "/api/v1/management/routes", `{"id": "open", "conditions": [{"path_prefix": "/open"}],
	  "targets": [{"host": "127.0.0.1", "port": 9}], "require_auth": false}`, nil); code != 201 {
		t.Fatalf("route: %d %s", code, body)
	}
	ctx := context.Background()
	other, err := store.OpenRedis(ctx, url, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	if _, err := store.Put(ctx, other, model.KindSettings, model.SettingsID, []byte(poisonSettings), 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	code, body := ready(t, g)
	for code == 200 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		code, body = ready(t, g)
	}
	if code != 503 || !strings.Contains(body, "extauthz") || !strings.Contains(body, "custom_rules") || !strings.Contains(body, "refused") {
		t.Fatalf("/ready after a refused revision: %d %s", code, body)
	}
	if v := metric(t, g, "api_gateway_config_revision_rejected"); v != "1" {
		t.Fatalf("api_gateway_config_revision_rejected %s", v)
	}
	if v := metric(t, g, "api_gateway_config_revisions_rejected_total"); v == "0" {
		t.Fatal("api_gateway_config_revisions_rejected_total did not count the refusal")
	}
	if !strings.Contains(g.Logs(), "revision rejected") {
		t.Fatal("no error log for the refused revision")
	}

	// The deny rule's revision holds the poisoned settings too: refused, undone, answered 409.
	var refused struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	code, raw := g.Do("POST", "/api/v1/management/ip-rules", `{"id": "deny-all", "action": "deny", "cidrs": ["0.0.0.0/0"]}`, &refused)
	if code != 409 || refused.Error.Code != "revision_refused" || !strings.Contains(refused.Error.Message, "custom_rules") {
		t.Fatalf("a write whose revision is refused: %d %s", code, raw)
	}
	if code, _ := g.Do("GET", "/api/v1/management/ip-rules/deny-all", nil, nil); code != 404 {
		t.Fatalf("the refused write is still stored: %d", code)
	}

	// Replacing the poisoned settings applies; the deny rule then applies too.
	if code, raw := g.Do("PUT", "/api/v1/management/settings", `{}`, nil); code != 200 && code != 201 {
		t.Fatalf("replace the refused settings: %d %s", code, raw)
	}
	if code, body := ready(t, g); code != 200 {
		t.Fatalf("/ready after the fix: %d %s", code, body)
	}
	if v := metric(t, g, "api_gateway_config_revision_rejected"); v != "0" {
		t.Fatalf("api_gateway_config_revision_rejected %s after the fix", v)
	}
	if code, raw := g.Do("POST", "/api/v1/management/ip-rules", `{"id": "deny-all", "action": "deny", "cidrs": ["0.0.0.0/0"]}`, nil); code != 201 {
		t.Fatalf("deny rule after the fix: %d %s", code, raw)
	}
	if st := c.status("open", "10.1.1.1", nil); st != 403 {
		t.Fatalf("the deny rule must apply: %d", st)
	}
}

// A gateway (re)started on a store whose revision the consumers refuse comes up not ready,
// naming the refusal, instead of exiting: exiting would leave no API to take the object out.
// Replacing it through the API applies, and the gateway is ready.
func TestGatewayStartsNotReadyOnARefusedStoredRevision(t *testing.T) {
	r := testutil.StartRedis(t)
	url := "redis://" + r.Addr
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{"REDIS_URL=" + url}})
	g.Stop()
	ctx := context.Background()
	other, err := store.OpenRedis(ctx, url, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Put(ctx, other, model.KindSettings, model.SettingsID, []byte(poisonSettings), 0)
	other.Close()
	if err != nil {
		t.Fatal(err)
	}
	// testutil's Start waits for /ready 200, which this gateway must not give: start it here.
	cmd := exec.Command(g.Bin, g.Args...)
	cmd.Env = append(os.Environ(), g.Env...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("the gateway exited on a refused stored revision:\n%s", logs.String())
		default:
		}
		if res, err := http.Get(g.URL("/health")); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no /health after 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := ready(t, g); code != 503 || !strings.Contains(body, "custom_rules") || !strings.Contains(body, "refused") {
		t.Fatalf("/ready on a refused stored revision: %d %s", code, body)
	}
	if code, raw := g.Do("PUT", "/api/v1/management/settings", `{}`, nil); code != 200 && code != 201 {
		t.Fatalf("replace the refused settings: %d %s", code, raw)
	}
	if code, body := ready(t, g); code != 200 {
		t.Fatalf("/ready after the fix: %d %s", code, body)
	}
}

// A route whose own WAF rules do not compile, stored by a replica that skipped the API's
// checks, fails closed alone: it denies (500) while the gateway stays ready and every other
// write applies (here a deny-all IP rule, which must never wait for another object's fix).
func TestRouteWithInvalidWAFStoredAroundTheAPIDeniesAlone(t *testing.T) {
	r := testutil.StartRedis(t)
	url := "redis://" + r.Addr
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{"REDIS_URL=" + url}})
	c := newChecker(t, g)
	if code, body := g.Do("POST", "/api/v1/management/routes", `{"id": "open", "conditions": [{"path_prefix": "/open"}],
	  "targets": [{"host": "127.0.0.1", "port": 9}], "require_auth": false}`, nil); code != 201 {
		t.Fatalf("route: %d %s", code, body)
	}
	ctx := context.Background()
	other, err := store.OpenRedis(ctx, url, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	poison := `{"id": "poison", "conditions": [{"path_prefix": "/poison"}], "targets": [{"host": "127.0.0.1", "port": 9}],
	  "require_auth": false, "waf": {"custom_rules": "SecRule ARGS \"@nosuchop x\" \"id:9001,deny\""}}`
	if _, err := store.Put(ctx, other, model.KindRoutes, "poison", []byte(poison), 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	st := c.status("poison", "10.1.1.1", nil)
	for st != 500 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		st = c.status("poison", "10.1.1.1", nil)
	}
	if st != 500 {
		t.Fatalf("the route with invalid WAF rules: %d, want 500", st)
	}
	if code, body := ready(t, g); code != 200 {
		t.Fatalf("/ready: %d %s", code, body)
	}
	if code, raw := g.Do("POST", "/api/v1/management/ip-rules", `{"id": "deny-all", "action": "deny", "cidrs": ["0.0.0.0/0"]}`, nil); code != 201 {
		t.Fatalf("deny rule: %d %s", code, raw)
	}
	if st := c.status("open", "10.1.1.1", nil); st != 403 {
		t.Fatalf("the deny rule must apply: %d", st)
	}
}
