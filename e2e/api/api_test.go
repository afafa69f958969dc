// Package api_test drives the built binary: persistence across SIGKILL, the generated admin
// token, the declarative file (start, SIGHUP, validate) and graceful shutdown.
package api_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

const route = `{"id": "user-service", "name": "User Service",
  "conditions": [{"path_pattern": "/api/v1/users/*", "method": "GET"}],
  "targets": [{"host": "127.0.0.1", "port": 8080, "weight": 100, "healthy": true}],
  "load_balance": "weighted", "timeout": "30s", "retries": 3, "require_auth": true}`

func TestRouteSurvivesSIGKILL(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{})
	code, body := g.Do("POST", "/api/v1/management/routes", route, nil)
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	g.Kill()
	g.Start()
	var got map[string]any
	code, body = g.Do("GET", "/api/v1/management/routes/user-service", nil, &got)
	if code != 200 || got["name"] != "User Service" {
		t.Fatalf("after SIGKILL and restart: %d %s", code, body)
	}
}

func TestGeneratedAdminToken(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{NoToken: true})
	path := filepath.Join(g.DataDir, "admin-token")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("admin-token mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	tok := strings.TrimSpace(string(b))
	if !strings.Contains(g.Logs(), tok) {
		t.Fatalf("the generated token was not printed at first start")
	}
	if code, _ := g.Do("GET", "/api/v1/management/routes", nil, nil); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	g.Token = tok
	if code, _ := g.Do("GET", "/api/v1/management/routes", nil, nil); code != 200 {
		t.Fatalf("generated token: %d", code)
	}
	g.Stop()
	g.Start()
	if strings.Contains(g.Logs(), tok) {
		t.Fatalf("the token was printed again on the second start")
	}
	if code, _ := g.Do("GET", "/api/v1/management/routes", nil, nil); code != 200 {
		t.Fatalf("token after restart: %d", code)
	}
}

const goodFile = `# gateway.yaml
routes:
  - id: users
    conditions:
      - path_pattern: /users/*
    targets:
      - host: 127.0.0.1
        port: 9001
    require_auth: false
tenants:
  - id: acme
`

const badFile = `routes:
  - id: users
    conditions:
      - path_pattern: /users/*
    targets:
      - host: 127.0.0.1
        port: 70000
    load_balance: fastest
`

const badDuration = `routes:
  - id: users
    conditions:
      - path_pattern: /users/*
    targets:
      - {host: 127.0.0.1, port: 80}
    timeout: 30 seconds
`

func TestConfigFileStartAndReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(file, []byte(goodFile), 0o644); err != nil {
		t.Fatal(err)
	}
	g := testutil.StartGateway(t, testutil.GatewayOptions{Args: []string{"--config", file}})
	if code, body := g.Do("GET", "/api/v1/management/routes/users", nil, nil); code != 200 {
		t.Fatalf("route from file: %d %s", code, body)
	}
	// A good change applies on SIGHUP.
	more := goodFile + "  - id: globex\n"
	if err := os.WriteFile(file, []byte(more), 0o644); err != nil {
		t.Fatal(err)
	}
	g.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { code, _ := g.Do("GET", "/api/v1/management/tenants/globex", nil, nil); return code == 200 })
	// A bad file on SIGHUP changes nothing and is logged with its line.
	if err := os.WriteFile(file, []byte(badFile), 0o644); err != nil {
		t.Fatal(err)
	}
	g.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(g.Logs(), "config reload rejected") })
	var r map[string]any
	g.Do("GET", "/api/v1/management/routes/users", nil, &r)
	if tg := r["targets"].([]any)[0].(map[string]any); tg["port"].(float64) != 9001 {
		t.Fatalf("a rejected reload changed the route: %v", r)
	}
	if !strings.Contains(g.Logs(), `"line":7`) {
		t.Fatalf("the rejection does not name the line:\n%s", g.Logs())
	}
	// A bad file at start: the binary refuses to start, naming file and line.
	g.Stop()
	cmd := exec.Command(g.Bin, "serve", "--config", file)
	cmd.Env = append(os.Environ(), g.Env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("a bad config file must stop the start: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), file+":7: routes/users: targets[0].port: must be 1-65535") {
		t.Fatalf("the error does not name file, line, object and field:\n%s", out)
	}
}

func TestValidateCommand(t *testing.T) {
	bin := testutil.BuildGateway(t)
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(good, []byte(goodFile), 0o644)
	_ = os.WriteFile(bad, []byte(badFile), 0o644)
	out, err := exec.Command(bin, "validate", "-f", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 object(s), valid") {
		t.Fatalf("good file: %v %s", err, out)
	}
	out, err = exec.Command(bin, "validate", "-f", bad).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("bad file must exit 1: %v %s", err, out)
	}
	for _, want := range []string{
		bad + ":7: routes/users: targets[0].port: must be 1-65535",
		bad + ":8: routes/users: load_balance: must be one of",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	dur := filepath.Join(dir, "dur.yaml")
	_ = os.WriteFile(dur, []byte(badDuration), 0o644)
	out, _ = exec.Command(bin, "validate", "-f", dur).CombinedOutput()
	if !strings.Contains(string(out), dur+":7: routes/users: timeout: \"30 seconds\" is not a duration") {
		t.Errorf("bad duration not reported with its line:\n%s", out)
	}
	out, _ = exec.Command(bin, "version").CombinedOutput()
	if !strings.HasPrefix(string(out), "api-gateway ") {
		t.Fatalf("version: %s", out)
	}
}

func TestGracefulShutdown(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{})
	hc := exec.Command(g.Bin, "healthcheck")
	hc.Env = append(os.Environ(), g.Env...)
	if out, err := hc.CombinedOutput(); err != nil {
		t.Fatalf("healthcheck of a ready gateway: %v %s", err, out)
	}
	g.Signal(syscall.SIGTERM)
	select {
	case <-g.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("no exit 20 s after SIGTERM")
	}
	if !strings.Contains(g.Logs(), "shutting down") {
		t.Fatalf("no shutdown log:\n%s", g.Logs())
	}
	hc = exec.Command(g.Bin, "healthcheck")
	hc.Env = append(os.Environ(), g.Env...)
	if err := hc.Run(); err == nil {
		t.Fatal("healthcheck passes with the gateway stopped")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The binary's OpenAPI document lists every endpoint, including those components mount.
func TestOpenAPIOfTheBinary(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{})
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if code, body := g.Do("GET", "/api/v1/management/openapi.json", nil, &doc); code != 200 {
		t.Fatalf("openapi.json: %d %s", code, body)
	}
	for _, p := range []string{"/api/v1/management/routes", "/api/v1/management/routes/{id}", "/api/v1/management/api-keys/{id}/rotate",
		"/api/v1/management/services/{id}/heartbeat", "/api/v1/management/xds/nodes", "/api/v1/management/analytics/usage",
		"/api/v1/management/analytics/errors", "/health", "/ready", "/docs"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("%s missing from the binary's OpenAPI document", p)
		}
	}
	for _, p := range []string{"/api/v1/management/xds/nodes", "/api/v1/management/analytics/usage"} {
		if code, body := g.Do("GET", p, nil, nil); code != 200 {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
}
