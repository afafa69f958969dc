// Package testutil holds helpers shared by tests across packages: real servers started on
// free loopback ports, never on the defaults.
package testutil

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Redis is a real redis-server process owned by a test.
type Redis struct {
	Addr string
	Port int
	Dir  string
	args []string
	cmd  *exec.Cmd
	t    testing.TB
}

// RedisServerPath finds redis-server, or skips the test when it is missing and the run is not
// CI (make test installs it; in CI a missing redis-server is a failure, not a skip).
func RedisServerPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server is not installed; make test installs it (apt-get install -y redis-server)")
		}
		t.Skip("redis-server not on PATH; run `make test`, which installs it")
	}
	return p
}

// StartRedis starts redis-server on a free port with persistence off and stops it when the
// test ends. Extra arguments are passed through ("--cluster-enabled", "yes", ...).
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	bin := RedisServerPath(t)
	dir := t.TempDir()
	port := FreePort(t)
	args := append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--protected-mode", "no",
	}, extra...)
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, Dir: dir, args: args, t: t}
	r.start(bin)
	t.Cleanup(r.Stop)
	return r
}

func (r *Redis) start(bin string) {
	r.t.Helper()
	cmd := exec.Command(bin, r.args...)
	cmd.Dir = r.Dir
	logf, err := os.Create(filepath.Join(r.Dir, fmt.Sprintf("redis-%d.log", time.Now().UnixNano())))
	if err != nil {
		r.t.Fatalf("redis log: %v", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.cmd = cmd
	if err := waitTCP(r.Addr, 10*time.Second); err != nil {
		r.t.Fatalf("redis-server on %s did not come up: %v", r.Addr, err)
	}
	if err := r.ping(); err != nil {
		r.t.Fatalf("redis-server on %s: %v", r.Addr, err)
	}
}

// Stop kills the server (SIGKILL, as a crash would) and waits for it to exit.
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_, _ = r.cmd.Process.Wait()
	r.cmd = nil
}

// Restart starts the server again on the same port after Stop.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	bin, _ := exec.LookPath("redis-server")
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := net.Listen("tcp", r.Addr)
		if err == nil {
			l.Close()
			break
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("port %s still busy: %v", r.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.start(bin)
}

// ping sends PING in RESP and expects +PONG, without a client library.
func (r *Redis) ping() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := func() error {
			c, err := net.DialTimeout("tcp", r.Addr, time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Second))
			if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
				return err
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasPrefix(line, "+PONG") {
				return fmt.Errorf("unexpected reply %q", line)
			}
			return nil
		}()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitTCP(addr string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}
