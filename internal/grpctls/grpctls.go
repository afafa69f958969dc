// Package grpctls serves TLS, and optionally mutual TLS, from files that are re-read when they
// change: the gRPC port's certificate, key and client CA can be rotated (cert-manager, Vault
// agent, a cron job) without restarting the gateway. Each new connection sees the files as they
// are at its handshake; connections already open keep the certificate they started with.
package grpctls

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Options name the files. CertFile and KeyFile turn TLS on; ClientCAFile adds client
// certificate verification, required unless RequireClientCert is false.
type Options struct {
	CertFile          string
	KeyFile           string
	ClientCAFile      string
	RequireClientCert bool
}

// Enabled reports whether TLS is configured at all.
func (o Options) Enabled() bool { return o.CertFile != "" || o.KeyFile != "" || o.ClientCAFile != "" }

// Check reports every inconsistency at once (for the binary's environment errors).
func (o Options) Check() error {
	var errs []error
	if !o.Enabled() {
		if o.RequireClientCert {
			errs = append(errs, errors.New("client certificates cannot be required without TLS (set the certificate, key and client CA files)"))
		}
		return errors.Join(errs...)
	}
	if o.CertFile == "" || o.KeyFile == "" {
		errs = append(errs, errors.New("TLS needs both a certificate file and a key file"))
	}
	if o.RequireClientCert && o.ClientCAFile == "" {
		errs = append(errs, errors.New("requiring client certificates needs a client CA file to verify them"))
	}
	return errors.Join(errs...)
}

// recheck is how often the files' contents are compared even when their size and mtime
// look unchanged: a rotation within one mtime tick, with a same-size file, is still seen.
const recheck = time.Second

// Reloader hands out the current TLS configuration for every handshake.
type Reloader struct {
	o   Options
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	stamp   string    // size+mtime of the files at the last read
	sum     [32]byte  // hash of their contents at the last successful load
	checked time.Time // when contents were last read
	cur     *tls.Config
}

// New loads the files once; it fails when they do not load, so a bad path stops the start.
func New(o Options, log *slog.Logger) (*Reloader, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{o: o, log: log, now: time.Now}
	if _, err := r.current(true); err != nil {
		return nil, err
	}
	return r, nil
}

// ServerConfig is the tls.Config to serve with: every handshake goes through
// GetConfigForClient, which returns the configuration of the files as they are now.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current(false)
		},
	}
}

// current returns the configuration, re-reading the files when their stamp changed or a
// recheck interval passed. A failed reload (a rotation caught half-written: the new
// certificate beside the old key) keeps serving the last good pair and is retried at the
// next handshake; only the first load's failure is an error.
func (r *Reloader) current(first bool) (*tls.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp := r.statFiles()
	now := r.now()
	if !first && stamp == r.stamp && now.Sub(r.checked) < recheck {
		return r.cur, nil
	}
	r.checked = now
	cfg, sum, err := r.load()
	if err != nil {
		if first {
			return nil, err
		}
		if stamp != r.stamp {
			r.log.Warn("gRPC TLS files changed but do not load; still serving the previous certificate", "error", err.Error())
		}
		r.stamp = stamp
		return r.cur, nil
	}
	r.stamp = stamp
	if sum != r.sum {
		if !first {
			r.log.Info("gRPC TLS files reloaded", "cert", r.o.CertFile, "client_ca", r.o.ClientCAFile)
		}
		r.sum, r.cur = sum, cfg
		r.warnValidity(cfg, now)
	}
	return r.cur, nil
}

func (r *Reloader) statFiles() string {
	var b bytes.Buffer
	for _, f := range []string{r.o.CertFile, r.o.KeyFile, r.o.ClientCAFile} {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		} else {
			b.WriteString("missing;")
		}
	}
	return b.String()
}

func (r *Reloader) load() (*tls.Config, [32]byte, error) {
	var sum [32]byte
	certPEM, err := readPEM(r.o.CertFile)
	if err != nil {
		return nil, sum, fmt.Errorf("gRPC TLS certificate: %w", err)
	}
	keyPEM, err := readPEM(r.o.KeyFile)
	if err != nil {
		return nil, sum, fmt.Errorf("gRPC TLS key: %w", err)
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, sum, fmt.Errorf("gRPC TLS certificate %s and key %s: %w", r.o.CertFile, r.o.KeyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		// HTTP/2 only: gRPC needs it, and the port serves nothing else.
		NextProtos: []string{"h2"},
	}
	if r.o.ClientCAFile != "" {
		caPEM, err := readPEM(r.o.ClientCAFile)
		if err != nil {
			return nil, sum, fmt.Errorf("gRPC TLS client CA: %w", err)
		}
		h.Write([]byte{0})
		h.Write(caPEM)
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, sum, fmt.Errorf("gRPC TLS client CA %s holds no PEM certificate", r.o.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if r.o.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	copy(sum[:], h.Sum(nil))
	return cfg, sum, nil
}

// maxPEM bounds one file: a certificate chain, a key or a CA bundle (Mozilla's whole root
// store is about 250 KB) is far smaller.
const maxPEM = 4 << 20

// readPEM reads a regular file of at most maxPEM bytes. The files are read under the lock
// every handshake waits on, so a path swapped for a FIFO (whose read blocks until a writer
// comes), a device such as /dev/zero, or a file grown to gigabytes must fail the reload, not
// stall or slow every new connection: opened non-blocking, checked to be a regular file,
// and read through a limit.
func readPEM(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%v)", path, fi.Mode().Type())
	}
	if fi.Size() > maxPEM {
		return nil, fmt.Errorf("%s is %d bytes, more than a PEM file of certificates or a key (at most %d)", path, fi.Size(), maxPEM)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEM+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPEM {
		return nil, fmt.Errorf("%s is more than %d bytes, more than a PEM file of certificates or a key", path, maxPEM)
	}
	return b, nil
}

// warnValidity logs a certificate that clients will refuse for its dates: it is served all
// the same (refusing it would stop the start, or keep one that is older still), but the log
// names the cause that clients only report as a failed handshake.
func (r *Reloader) warnValidity(cfg *tls.Config, now time.Time) {
	if len(cfg.Certificates) == 0 || cfg.Certificates[0].Leaf == nil {
		return
	}
	leaf := cfg.Certificates[0].Leaf
	switch {
	case now.After(leaf.NotAfter):
		r.log.Warn("the gRPC TLS certificate has expired; clients will refuse the handshake",
			"cert", r.o.CertFile, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		r.log.Warn("the gRPC TLS certificate is not valid before a later time; clients will refuse the handshake",
			"cert", r.o.CertFile, "not_before", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
}
