package model

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
)

// validateTLS checks the upstream TLS fields of a target: each needs tls: true, and
// tls_insecure_skip_verify contradicts the fields that configure verification.
func (t *Target) validateTLS(errs *FieldErrors) {
	set := func(field string, on bool) bool {
		if on && !t.TLS {
			errs.Add(field, "needs tls: true (the connection to this target is plaintext)")
			return false
		}
		return on
	}
	if set("tls_ca_pem", t.TLSCAPEM != "") {
		if p := caPEMProblem(t.TLSCAPEM); p != "" {
			errs.Add("tls_ca_pem", "%s", p)
		}
	}
	if set("tls_sni", t.TLSSNI != "") {
		switch {
		case net.ParseIP(t.TLSSNI) != nil:
			errs.Add("tls_sni", "must be a DNS name: an IP address is never sent as a server name (RFC 6066); use tls_verify_san to verify an IP address")
		case !validHost(t.TLSSNI):
			errs.Add("tls_sni", "must be a DNS name (letters, digits, '-', '_' and dots; at most 253 bytes; no wildcard)")
		}
	}
	if set("tls_verify_san", len(t.TLSVerifySAN) > 0) {
		if len(t.TLSVerifySAN) > MaxTLSVerifySANs {
			errs.Add("tls_verify_san", "has %d names; at most %d", len(t.TLSVerifySAN), MaxTLSVerifySANs)
		} else {
			seen := make(map[string]int, len(t.TLSVerifySAN))
			for i, s := range t.TLSVerifySAN {
				field := fmt.Sprintf("tls_verify_san[%d]", i)
				key, ok := sanKey(s)
				if !ok {
					errs.Add(field, "must be a DNS name or an IP address, exactly as the certificate carries it (no wildcard, no control characters)")
					continue
				}
				if j, dup := seen[key]; dup {
					errs.Add(field, "repeats tls_verify_san[%d]", j)
					continue
				}
				seen[key] = i
			}
		}
	}
	if set("tls_insecure_skip_verify", t.TLSInsecureSkipVerify) {
		var with []string
		if t.TLSCAPEM != "" {
			with = append(with, "tls_ca_pem")
		}
		if len(t.TLSVerifySAN) > 0 {
			with = append(with, "tls_verify_san")
		}
		if len(with) > 0 {
			errs.Add("tls_insecure_skip_verify", "turns verification off, so %s would be ignored: set one or the other", strings.Join(with, " and "))
		}
	}
}

// sanKey is a tls_verify_san value's canonical form (an IP address as Go prints it, a DNS
// name lower-cased), false when it is neither an IP address nor an exact DNS name.
func sanKey(s string) (string, bool) {
	if ip := net.ParseIP(s); ip != nil {
		return ip.String(), true
	}
	if strings.HasSuffix(s, ".") || !validHost(s) {
		return "", false
	}
	return strings.ToLower(s), true
}

// ParseCAPEM parses a PEM bundle of CA certificates as tls_ca_pem takes it: one or more
// CERTIFICATE blocks, each an X.509 certificate; text between blocks is ignored (as OpenSSL
// and BoringSSL read a bundle), any other block is refused.
func ParseCAPEM(s string) ([]*x509.Certificate, error) {
	if len(s) > MaxTLSCAPEMBytes {
		return nil, fmt.Errorf("is %d bytes; at most %d", len(s), MaxTLSCAPEMBytes)
	}
	rest := []byte(s)
	begins := bytes.Count(rest, []byte("-----BEGIN "))
	var certs []*x509.Certificate
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		n++
		switch {
		case strings.Contains(b.Type, "PRIVATE KEY"):
			return nil, fmt.Errorf("block %d is a %s, not a certificate: a CA bundle holds certificates only (never send a private key)", n, b.Type)
		case b.Type != "CERTIFICATE":
			return nil, fmt.Errorf("block %d is a %q block, not a CERTIFICATE", n, b.Type)
		case len(b.Headers) > 0:
			return nil, fmt.Errorf("block %d has PEM headers; a certificate block has none", n)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("block %d is not an X.509 certificate: %v", n, err)
		}
		certs = append(certs, c)
	}
	switch {
	case n == 0:
		return nil, fmt.Errorf("holds no PEM certificate: give the CA certificates as -----BEGIN CERTIFICATE----- blocks")
	case n != begins:
		// Go skips a block that does not decode; BoringSSL (Envoy) refuses the whole bundle.
		return nil, fmt.Errorf("holds %d PEM blocks of which %d decode: a block is damaged", begins, n)
	}
	return certs, nil
}

func caPEMProblem(s string) string {
	if _, err := ParseCAPEM(s); err != nil {
		return err.Error()
	}
	return ""
}
