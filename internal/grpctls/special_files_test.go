package grpctls

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// within fails the test when f does not return in d: the reloader reads the files under the
// lock every handshake waits on, so a read that blocks stops every new connection.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s blocked for %v", what, d)
	}
}

// A certificate path that is a FIFO (or a device) is refused at start instead of blocking
// the start forever on a read no writer ever answers.
func TestNewRefusesAFIFOInsteadOfBlocking(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	selfSigned(t, certFile, keyFile, 1)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	within(t, 2*time.Second, "New with a FIFO as the client CA", func() {
		if _, err := New(Options{CertFile: certFile, KeyFile: keyFile, ClientCAFile: fifo, RequireClientCert: true}, nil); err == nil {
			t.Error("New accepted a FIFO as the client CA")
		}
	})
	within(t, 2*time.Second, "New with /dev/zero as the key", func() {
		if _, err := New(Options{CertFile: certFile, KeyFile: "/dev/zero"}, nil); err == nil {
			t.Error("New accepted /dev/zero as the key")
		}
	})
}

// A certificate file swapped for a FIFO, or grown to gigabytes, after the start does not
// block or slow every handshake: the reload fails and the previous certificate is served.
func TestReloadOfAFIFOOrAHugeFileKeepsServing(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	selfSigned(t, certFile, keyFile, 1)
	r, err := New(Options{CertFile: certFile, KeyFile: keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := r.current(false)
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(certFile, 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	within(t, 2*time.Second, "a handshake with the certificate swapped for a FIFO", func() {
		if cfg, _ := r.current(false); cfg != first {
			t.Error("a FIFO replaced the served configuration")
		}
	})
	_ = os.Remove(certFile)
	f, err := os.Create(certFile)
	if err != nil {
		t.Fatal(err)
	}
	// A sparse 1 GiB file: reading it whole on every recheck would hold the lock for seconds.
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.checked = time.Time{}
	within(t, 500*time.Millisecond, "a handshake with a 1 GiB certificate file", func() {
		if cfg, _ := r.current(false); cfg != first {
			t.Error("a huge file replaced the served configuration")
		}
	})
}
