package grpctls

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writePair(t *testing.T, certFile, keyFile string, notBefore, notAfter time.Time) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "grpctls"}, NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

// An expired (or not yet valid) certificate loads, since refusing it would stop the start
// or keep an older one, but every client will refuse the handshake: the log says so, at the
// start and at a reload, instead of leaving only the clients' TLS errors to explain it.
func TestExpiredOrNotYetValidCertificateIsWarned(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	now := time.Now()
	writePair(t, certFile, keyFile, now.Add(-2*time.Hour), now.Add(-time.Hour))
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	r, err := New(Options{CertFile: certFile, KeyFile: keyFile}, log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "expired") {
		t.Fatalf("an expired certificate at start: no warning in %q", out.String())
	}
	out.Reset()
	writePair(t, certFile, keyFile, now.Add(time.Hour), now.Add(2*time.Hour))
	r.checked = time.Time{}
	_, _ = r.current(false)
	if !strings.Contains(out.String(), "not valid before") {
		t.Fatalf("a not-yet-valid certificate at a reload: no warning in %q", out.String())
	}
	out.Reset()
	writePair(t, certFile, keyFile, now.Add(-time.Hour), now.Add(time.Hour))
	r.checked = time.Time{}
	_, _ = r.current(false)
	if strings.Contains(out.String(), "WARN") {
		t.Fatalf("a valid certificate warned: %q", out.String())
	}
}
