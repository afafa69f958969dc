package envoy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// testCert is a certificate and its key; ca signs others when it is a CA.
type testCert struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

func (c *testCert) pem() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der}))
}

// newCert makes a certificate for dns names and ips, self-signed when parent is nil.
func newCert(t *testing.T, cn string, parent *testCert, isCA bool, dns []string, ips ...net.IP) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dns, IPAddresses: ips,
		BasicConstraintsValid: true, IsCA: isCA,
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: c, der: der, key: key}
}

// startTLSUpstream serves TLS with the certificate on a free loopback port and returns its
// address.
func startTLSUpstream(t *testing.T, c *testCert) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{c.der}, PrivateKey: c.key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_ = conn.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

// peerChain is the certificate chain the upstream at addr presents for the server name sni.
func peerChain(t *testing.T, addr, sni string) []*x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, ServerName: sni}) // the chain is checked below, as Envoy would
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates
}

// servedTLS translates the route and builds the Envoy flavor, and returns the
// UpstreamTlsContext of the route's first cluster (nil without a transport socket).
func servedTLS(t *testing.T, r model.Route, services []*model.Service, caFile string) *tlsv3.UpstreamTlsContext {
	t.Helper()
	if errs := r.Validate(); len(errs) > 0 {
		t.Fatalf("route refused: %v", errs)
	}
	snap := &model.Snapshot{Revision: 1, Routes: []*model.Route{&r}, Services: services, Settings: &model.Settings{ID: model.SettingsID}}
	cfg, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000", UpstreamCAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	if e := cfg.RouteErrors[r.ID]; e != "" {
		t.Fatalf("route not translated: %s", e)
	}
	res, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	if e := res.RouteErrors[r.ID]; e != "" {
		t.Fatalf("route dropped by the build: %s", e)
	}
	var c *clusterv3.Cluster
	for _, pc := range res.Clusters {
		if pc.GetName() == translate.ClusterName(r.ID, 0) {
			c = pc
		}
	}
	if c == nil {
		t.Fatalf("no cluster %s served", translate.ClusterName(r.ID, 0))
	}
	if err := envoy.Validate(c); err != nil {
		t.Fatalf("cluster fails ValidateAll: %v", err)
	}
	ts := c.GetTransportSocket()
	if ts == nil {
		return nil
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// envoyVerifies checks a presented chain as Envoy's default certificate validator does with
// the served context (source/common/tls/cert_validator/default_validator.cc): no validation
// context accepts any certificate; otherwise the chain must reach a trusted_ca certificate
// (inline, or the file, read here from this machine as Envoy reads it from its own), and
// the leaf must match: with auto_sni_san_validation and an SNI sent, the SNI as a DNS name;
// else, when there are match_typed_subject_alt_names, one of them (DNS by DNS rules, IP
// exactly). sni is the name Envoy sends (the context's sni, or the host's name with
// auto_host_sni).
func envoyVerifies(ctx *tlsv3.UpstreamTlsContext, chain []*x509.Certificate, sni string) error {
	vc := ctx.GetCommonTlsContext().GetValidationContext()
	if vc == nil {
		return nil
	}
	roots := x509.NewCertPool()
	ca := vc.GetTrustedCa()
	switch {
	case ca.GetInlineString() != "":
		if !roots.AppendCertsFromPEM([]byte(ca.GetInlineString())) {
			return errors.New("inline trusted_ca holds no certificate")
		}
	case ca.GetFilename() != "":
		b, err := os.ReadFile(ca.GetFilename())
		if err != nil {
			return err
		}
		if !roots.AppendCertsFromPEM(b) {
			return errors.New("trusted_ca file holds no certificate")
		}
	default:
		return errors.New("a validation context without trusted_ca")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("chain: %w", err)
	}
	leaf := chain[0]
	if ctx.GetAutoSniSanValidation() && sni != "" {
		if err := leaf.VerifyHostname(sni); err != nil {
			return fmt.Errorf("auto SNI SAN: %w", err)
		}
		return nil
	}
	ms := vc.GetMatchTypedSubjectAltNames()
	if len(ms) == 0 {
		return nil
	}
	for _, m := range ms {
		v := m.GetMatcher().GetExact()
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			if net.ParseIP(v) == nil && leaf.VerifyHostname(v) == nil {
				return nil
			}
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			for _, ip := range leaf.IPAddresses {
				if ip.String() == v {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("no SAN matcher matches the certificate's SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
}

func tlsRoute(id string, t model.Target) model.Route {
	no := false
	return model.Route{ID: id, RequireAuth: &no, Conditions: []model.Condition{{PathPattern: "/*"}}, Targets: []model.Target{t}}
}

// The served cluster carries a validation context that refuses a self-signed upstream unless
// its certificate is given as tls_ca_pem, refuses a certificate for another name (a wrong
// tls_verify_san, an SNI the certificate does not carry), and refuses an interceptor holding
// a certificate from a CA of the system bundle for another name.
func TestServedUpstreamTLSVerifiesTheRealUpstream(t *testing.T) {
	self := newCert(t, "upstream.test", nil, true, []string{"upstream.test"}, net.ParseIP("127.0.0.1"))
	addr := startTLSUpstream(t, self)
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)

	// The "system bundle": a public CA the upstream's self-signed certificate is not from.
	public := newCert(t, "public root", nil, true, nil)
	system := filepath.Join(t.TempDir(), "ca-certificates.crt")
	if err := os.WriteFile(system, []byte(public.pem()), 0o600); err != nil {
		t.Fatal(err)
	}
	interceptor := newCert(t, "evil.test", public, false, []string{"evil.test"})
	interceptAddr := startTLSUpstream(t, interceptor)
	publicUpstream := newCert(t, "upstream.test", public, false, []string{"upstream.test"})
	publicAddr := startTLSUpstream(t, publicUpstream)

	cases := []struct {
		name    string
		target  model.Target
		dial    string // the upstream Envoy would reach (default the self-signed one)
		hostSNI string // the instance's host name Envoy sends with auto_host_sni
		accept  bool
		refusal string // how the refusal starts
	}{
		{name: "default: the system bundle refuses a self-signed upstream",
			target: model.Target{Host: "upstream.test", Port: p, TLS: true}, refusal: "chain:"},
		{name: "tls_ca_pem accepts it",
			target: model.Target{Host: "upstream.test", Port: p, TLS: true, TLSCAPEM: self.pem()}, accept: true},
		{name: "a wrong tls_verify_san refuses it",
			target:  model.Target{Host: "upstream.test", Port: p, TLS: true, TLSCAPEM: self.pem(), TLSVerifySAN: []string{"other.test", "10.9.9.9"}},
			refusal: "no SAN matcher"},
		{name: "the right tls_verify_san (its IP) accepts it",
			target: model.Target{Host: "upstream.test", Port: p, TLS: true, TLSCAPEM: self.pem(), TLSVerifySAN: []string{"other.test", "127.0.0.1"}}, accept: true},
		{name: "an SNI the certificate does not carry refuses it",
			target: model.Target{Host: "other.test", Port: p, TLS: true, TLSCAPEM: self.pem()}, refusal: "no SAN matcher"},
		{name: "tls_sni other than the certificate's name refuses it",
			target: model.Target{Host: "127.0.0.1", Port: p, TLS: true, TLSCAPEM: self.pem(), TLSSNI: "other.test"}, refusal: "no SAN matcher"},
		{name: "tls_sni of the certificate's name accepts it",
			target: model.Target{Host: "127.0.0.1", Port: p, TLS: true, TLSCAPEM: self.pem(), TLSSNI: "upstream.test"}, accept: true},
		{name: "an IP target checks its address",
			target: model.Target{Host: "127.0.0.1", Port: p, TLS: true, TLSCAPEM: self.pem()}, accept: true},
		{name: "an IP target refuses a certificate without its address",
			target: model.Target{Host: "127.0.0.2", Port: p, TLS: true, TLSCAPEM: self.pem()}, refusal: "no SAN matcher"},
		{name: "default: an interceptor with a publicly trusted certificate for another name is refused",
			target: model.Target{Host: "upstream.test", Port: p, TLS: true}, dial: interceptAddr, refusal: "no SAN matcher"},
		{name: "default: a publicly trusted certificate for the name is accepted",
			target: model.Target{Host: "upstream.test", Port: p, TLS: true}, dial: publicAddr, accept: true},
		{name: "service target: the instance's host name is sent and checked",
			target: model.Target{Service: "up", TLS: true, TLSCAPEM: self.pem()}, hostSNI: "upstream.test", accept: true},
		{name: "service target: an instance whose name the certificate lacks is refused",
			target: model.Target{Service: "up", TLS: true, TLSCAPEM: self.pem()}, hostSNI: "other.test", refusal: "auto SNI SAN"},
		{name: "tls_insecure_skip_verify accepts anything",
			target: model.Target{Host: "upstream.test", Port: p, TLS: true, TLSInsecureSkipVerify: true}, dial: interceptAddr, accept: true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var services []*model.Service
			if tc.target.Service != "" {
				services = []*model.Service{{ID: "up-1", Name: "up", Host: tc.hostSNI, Port: p}}
			}
			ctx := servedTLS(t, tlsRoute(fmt.Sprintf("r%d", i), tc.target), services, system)
			if ctx == nil {
				t.Fatal("no upstream TLS context served")
			}
			sni := ctx.GetSni()
			if ctx.GetAutoHostSni() {
				sni = tc.hostSNI
			}
			dial := addr
			if tc.dial != "" {
				dial = tc.dial
			}
			err := envoyVerifies(ctx, peerChain(t, dial, sni), sni)
			switch {
			case tc.accept && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.accept && err == nil:
				t.Fatal("accepted")
			case !tc.accept && !strings.HasPrefix(err.Error(), tc.refusal):
				t.Fatalf("refused for another reason: %v (want %q)", err, tc.refusal)
			}
		})
	}
}
