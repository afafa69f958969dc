package model

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// testCAPEM is a freshly made self-signed CA certificate in PEM, and its key in PEM.
func testCAPEM(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))
}

func tlsTarget(mod func(*Target)) Target {
	t := Target{Host: "backend.example", Port: 443, TLS: true}
	mod(&t)
	return t
}

// The upstream TLS fields are accepted in their forms and each bad value is a field error
// naming the field: hostile sizes, a key instead of a certificate, a damaged block, a SAN
// with NUL, too many SANs, and every field without tls: true.
func TestTargetTLSFields(t *testing.T) {
	ca, key := testCAPEM(t)
	ca2, _ := testCAPEM(t)
	good := []Target{
		tlsTarget(func(t *Target) {}),
		tlsTarget(func(t *Target) { t.TLSCAPEM = ca }),
		tlsTarget(func(t *Target) { t.TLSCAPEM = "# bundle\n" + ca + "\n# second\n" + ca2 }),
		tlsTarget(func(t *Target) { t.TLSSNI = "api.internal" }),
		tlsTarget(func(t *Target) { t.TLSVerifySAN = []string{"api.internal", "10.0.0.1", "2001:db8::1"} }),
		tlsTarget(func(t *Target) { t.TLSInsecureSkipVerify = true; t.TLSSNI = "api.internal" }),
		{Service: "billing", TLS: true, TLSCAPEM: ca, TLSSNI: "billing.internal"},
	}
	for i, tg := range good {
		if errs := tg.Validate(); len(errs) > 0 {
			t.Errorf("good[%d]: %v", i, errs)
		}
	}
	many := make([]string, 1000)
	for i := range many {
		many[i] = fmt.Sprintf("n%d.example", i)
	}
	huge := strings.Repeat(ca, 10<<20/len(ca)+1) // 10 MiB of valid certificates
	bad := []struct {
		name, field, problem string
		t                    Target
	}{
		{"10 MiB PEM", "tls_ca_pem", "bytes; at most 262144", tlsTarget(func(t *Target) { t.TLSCAPEM = huge })},
		{"a private key instead of a certificate", "tls_ca_pem", "PRIVATE KEY, not a certificate", tlsTarget(func(t *Target) { t.TLSCAPEM = key })},
		{"a key after a certificate", "tls_ca_pem", "block 2 is a PRIVATE KEY", tlsTarget(func(t *Target) { t.TLSCAPEM = ca + key })},
		{"no PEM at all", "tls_ca_pem", "holds no PEM certificate", tlsTarget(func(t *Target) { t.TLSCAPEM = "MIIB..." })},
		{"a damaged block", "tls_ca_pem", "a block is damaged", tlsTarget(func(t *Target) {
			t.TLSCAPEM = ca + "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
		})},
		{"a block that is no certificate", "tls_ca_pem", "not an X.509 certificate", tlsTarget(func(t *Target) {
			t.TLSCAPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}))
		})},
		{"another block type", "tls_ca_pem", `"X509 CRL" block`, tlsTarget(func(t *Target) {
			t.TLSCAPEM = string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte{1}}))
		})},
		{"1000 SANs", "tls_verify_san", "has 1000 names; at most 64", tlsTarget(func(t *Target) { t.TLSVerifySAN = many })},
		{"SAN with NUL", "tls_verify_san[1]", "must be a DNS name or an IP address", tlsTarget(func(t *Target) {
			t.TLSVerifySAN = []string{"ok.example", "evil.example\x00.good.example"}
		})},
		{"empty SAN", "tls_verify_san[0]", "must be a DNS name or an IP address", tlsTarget(func(t *Target) { t.TLSVerifySAN = []string{""} })},
		{"wildcard SAN", "tls_verify_san[0]", "must be a DNS name or an IP address", tlsTarget(func(t *Target) { t.TLSVerifySAN = []string{"*.example"} })},
		{"repeated SAN", "tls_verify_san[1]", "repeats tls_verify_san[0]", tlsTarget(func(t *Target) { t.TLSVerifySAN = []string{"A.example", "a.example"} })},
		{"repeated IP SAN in another form", "tls_verify_san[1]", "repeats tls_verify_san[0]", tlsTarget(func(t *Target) {
			t.TLSVerifySAN = []string{"2001:db8::1", "2001:0db8:0:0::1"}
		})},
		{"IP as SNI", "tls_sni", "never sent as a server name", tlsTarget(func(t *Target) { t.TLSSNI = "10.0.0.1" })},
		{"SNI with a space", "tls_sni", "must be a DNS name", tlsTarget(func(t *Target) { t.TLSSNI = "a b" })},
		{"SNI too long", "tls_sni", "must be a DNS name", tlsTarget(func(t *Target) { t.TLSSNI = strings.Repeat("a.", 130) + "a" })},
		{"skip_verify without tls", "tls_insecure_skip_verify", "needs tls: true", Target{Host: "h.example", Port: 80, TLSInsecureSkipVerify: true}},
		{"ca without tls", "tls_ca_pem", "needs tls: true", Target{Host: "h.example", Port: 80, TLSCAPEM: ca}},
		{"sni without tls", "tls_sni", "needs tls: true", Target{Host: "h.example", Port: 80, TLSSNI: "h.example"}},
		{"san without tls", "tls_verify_san", "needs tls: true", Target{Host: "h.example", Port: 80, TLSVerifySAN: []string{"h.example"}}},
		{"skip_verify with a CA", "tls_insecure_skip_verify", "tls_ca_pem would be ignored", tlsTarget(func(t *Target) {
			t.TLSInsecureSkipVerify = true
			t.TLSCAPEM = ca
		})},
		{"skip_verify with SANs", "tls_insecure_skip_verify", "tls_verify_san would be ignored", tlsTarget(func(t *Target) {
			t.TLSInsecureSkipVerify = true
			t.TLSVerifySAN = []string{"h.example"}
		})},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			got := fieldsOf(tc.t.Validate())
			p, ok := got[tc.field]
			if !ok || !strings.Contains(p, tc.problem) {
				t.Fatalf("field errors %v, want %s: …%s…", got, tc.field, tc.problem)
			}
		})
	}
}

// Every bad TLS field of a route is reported at once, under targets[i].
func TestRouteTLSFieldErrorsNameTheTarget(t *testing.T) {
	r := Route{ID: "r", Conditions: []Condition{{PathPattern: "/"}}, Targets: []Target{
		{Host: "a.example", Port: 443, TLSInsecureSkipVerify: true},
		{Host: "b.example", Port: 443, TLS: true, TLSSNI: "10.0.0.1", TLSVerifySAN: []string{"x\x00"}},
	}}
	got := fieldsOf(r.Validate())
	for _, f := range []string{"targets[0].tls_insecure_skip_verify", "targets[1].tls_sni", "targets[1].tls_verify_san[0]"} {
		if _, ok := got[f]; !ok {
			t.Errorf("no error for %s: %v", f, got)
		}
	}
}
