package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// RepoRoot returns the repository root (the folder holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// GeoIPDir holds MaxMind's published test databases, kept in the repository (testdata/geoip,
// with their licences) so that a clean clone runs its tests without anything beside it.
func GeoIPDir() string { return filepath.Join(RepoRoot(), "testdata", "geoip") }

// BuildGateway builds ./cmd/api-gateway once per test process and returns the binary path.
func BuildGateway(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "agw-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "api-gateway")
		args := []string{"build", "-o", buildPath}
		if tags := os.Getenv("GO_BUILD_TAGS"); tags != "" {
			args = append(args, "-tags", tags)
		}
		args = append(args, "./cmd/api-gateway")
		cmd := exec.Command("go", args...)
		cmd.Dir = RepoRoot()
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Gateway is a running api-gateway binary on free ports.
type Gateway struct {
	t           testing.TB
	Bin         string
	DataDir     string
	Port        int
	GRPCPort    int
	MetricsPort int
	Token       string
	Env         []string
	Args        []string
	cmd         *exec.Cmd
	logs        *syncBuffer
	exited      chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// GatewayOptions adjust a gateway before it starts.
type GatewayOptions struct {
	Env     []string // extra KEY=VALUE
	Args    []string // after "serve"
	DataDir string   // default: a new temp dir
	NoToken bool     // do not set ADMIN_TOKEN (the binary generates one)
}

// StartGateway builds and starts the binary, waits for /ready, and stops it at cleanup.
func StartGateway(t testing.TB, o GatewayOptions) *Gateway {
	t.Helper()
	g := &Gateway{t: t, Bin: BuildGateway(t), DataDir: o.DataDir, Port: FreePort(t), GRPCPort: FreePort(t), MetricsPort: FreePort(t), Token: "test-admin-token-0123456789"}
	if g.DataDir == "" {
		g.DataDir = t.TempDir()
	}
	g.Env = append([]string{
		fmt.Sprintf("PORT=%d", g.Port), fmt.Sprintf("GRPC_PORT=%d", g.GRPCPort), fmt.Sprintf("METRICS_PORT=%d", g.MetricsPort),
		"DATA_DIR=" + g.DataDir, "LOG_LEVEL=debug", "BIND_ADDRESS=127.0.0.1",
	}, o.Env...)
	if o.NoToken {
		g.Token = ""
	} else {
		g.Env = append(g.Env, "ADMIN_TOKEN="+g.Token)
	}
	g.Args = append([]string{"serve"}, o.Args...)
	g.Start()
	t.Cleanup(g.Stop)
	return g
}

// Start starts the process (again) with the same ports and data dir and waits for /ready.
func (g *Gateway) Start() {
	g.t.Helper()
	g.logs = &syncBuffer{}
	cmd := exec.Command(g.Bin, g.Args...)
	cmd.Env = append(os.Environ(), g.Env...)
	cmd.Stdout, cmd.Stderr = g.logs, g.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		g.t.Fatalf("start gateway: %v", err)
	}
	g.cmd = cmd
	g.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(g.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-g.exited:
			g.t.Fatalf("gateway exited at start:\n%s", g.Logs())
		default:
		}
		res, err := http.Get(g.URL("/ready"))
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("gateway not ready after 60s:\n%s", g.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Logs returns everything the process printed.
func (g *Gateway) Logs() string {
	if g.logs == nil {
		return ""
	}
	return g.logs.String()
}

// URL returns the management API URL of a path.
func (g *Gateway) URL(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", g.Port, path) }

// GRPCAddr returns host:port of the gRPC server.
func (g *Gateway) GRPCAddr() string { return fmt.Sprintf("127.0.0.1:%d", g.GRPCPort) }

// Kill sends SIGKILL and waits for the process to be gone.
func (g *Gateway) Kill() {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Kill()
	<-g.exited
	g.cmd = nil
}

// Signal sends a signal to the process.
func (g *Gateway) Signal(sig os.Signal) {
	if g.cmd != nil {
		_ = g.cmd.Process.Signal(sig)
	}
}

// Stop sends SIGTERM and waits up to 30 s (then SIGKILL).
func (g *Gateway) Stop() {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(30 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	g.cmd = nil
}

// Exited reports whether the process has ended.
func (g *Gateway) Exited() <-chan struct{} { return g.exited }

// Do calls the management API with the admin token and decodes a JSON answer into out
// (when non-nil). It returns the status code and the raw body.
func (g *Gateway) Do(method, path string, body any, out any) (int, []byte) {
	g.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			g.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, g.URL(path), rd)
	if err != nil {
		g.t.Fatal(err)
	}
	if g.Token != "" {
		req.Header.Set("Authorization", "Bearer "+g.Token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if out != nil && len(raw) > 0 {
		_ = json.Unmarshal(raw, out)
	}
	return res.StatusCode, raw
}
