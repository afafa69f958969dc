package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// A plaintext gRPC port that listens beyond loopback is warned about at start (it serves the
// whole configuration over xDS to anyone who reaches it); on loopback it is not.
func TestPlaintextGRPCPortBeyondLoopbackIsWarned(t *testing.T) {
	for _, tc := range []struct {
		bind string
		warn bool
	}{{"", true}, {"0.0.0.0", true}, {"10.1.2.3", true}, {"127.0.0.1", false}, {"::1", false}, {"localhost", false}, {"LocalHost", false}} {
		var out bytes.Buffer
		if _, err := grpcCredentials(config{GRPCBindAddr: tc.bind}, newLogger("info", &out)); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(out.String(), "plaintext and unauthenticated"); got != tc.warn {
			t.Errorf("bind %q: warned %v, want %v: %s", tc.bind, got, tc.warn, out.String())
		}
	}
}

// GRPC_BIND_ADDRESS defaults to BIND_ADDRESS; a client CA turns on required client
// certificates unless GRPC_TLS_REQUIRE_CLIENT_CERT=false; half a TLS configuration is an
// environment error.
func TestGRPCTLSEnvironment(t *testing.T) {
	t.Setenv("BIND_ADDRESS", "10.0.0.5")
	t.Setenv("GRPC_TLS_CERT_FILE", "/c")
	t.Setenv("GRPC_TLS_KEY_FILE", "/k")
	t.Setenv("GRPC_TLS_CLIENT_CA_FILE", "/ca")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPCBindAddr != "10.0.0.5" || !c.GRPCTLS.RequireClientCert {
		t.Fatalf("%+v", c)
	}
	t.Setenv("GRPC_BIND_ADDRESS", "127.0.0.1")
	t.Setenv("GRPC_TLS_REQUIRE_CLIENT_CERT", "false")
	if c, err = loadConfig(); err != nil || c.GRPCBindAddr != "127.0.0.1" || c.GRPCTLS.RequireClientCert {
		t.Fatalf("%+v %v", c, err)
	}
	t.Setenv("GRPC_TLS_KEY_FILE", "")
	if _, err := loadConfig(); err == nil || !strings.Contains(err.Error(), "GRPC_TLS_") {
		t.Fatalf("a certificate without a key: %v", err)
	}
}

// XDS_ADVERTISE_ADDRESS (where Envoy sends ext_authz, rate-limit and access-log RPCs)
// defaults to 127.0.0.1:GRPC_PORT, which nothing listens on when GRPC_BIND_ADDRESS (or
// BIND_ADDRESS) names one non-loopback address: the default follows that address then.
func TestAdvertiseAddressFollowsASpecificGRPCBindAddress(t *testing.T) {
	for _, tc := range []struct{ bind, grpcBind, want string }{
		{"", "", "127.0.0.1:18000"},
		{"0.0.0.0", "", "127.0.0.1:18000"},
		{"", "::", "127.0.0.1:18000"},
		{"", "127.0.0.1", "127.0.0.1:18000"},
		{"", "10.0.0.5", "10.0.0.5:18000"},
		{"10.0.0.6", "", "10.0.0.6:18000"},
		{"", "fd00::5", "[fd00::5]:18000"},
		{"", "gw.internal", "gw.internal:18000"},
	} {
		t.Setenv("BIND_ADDRESS", tc.bind)
		t.Setenv("GRPC_BIND_ADDRESS", tc.grpcBind)
		if tc.grpcBind == "" {
			os.Unsetenv("GRPC_BIND_ADDRESS")
		}
		c, err := loadConfig()
		if err != nil {
			t.Fatal(err)
		}
		if c.XDSAdvertiseAddr != tc.want {
			t.Errorf("BIND_ADDRESS=%q GRPC_BIND_ADDRESS=%q: advertised %q, want %q", tc.bind, tc.grpcBind, c.XDSAdvertiseAddr, tc.want)
		}
	}
	t.Setenv("GRPC_BIND_ADDRESS", "10.0.0.5")
	t.Setenv("XDS_ADVERTISE_ADDRESS", "gw:18000")
	if c, err := loadConfig(); err != nil || c.XDSAdvertiseAddr != "gw:18000" {
		t.Fatalf("an explicit XDS_ADVERTISE_ADDRESS: %q %v", c.XDSAdvertiseAddr, err)
	}
}

// GRPC_BIND_ADDRESS may be written bracketed ("[::1]", as in a URL); it is an address, not
// host:port, and a value with a port is an environment error naming that variable, not a
// listener error at start (or an XDS_ADVERTISE_ADDRESS error for a variable never set).
func TestGRPCBindAddressForms(t *testing.T) {
	os.Unsetenv("XDS_ADVERTISE_ADDRESS")
	t.Setenv("GRPC_BIND_ADDRESS", "[fd00::5]")
	c, err := loadConfig()
	if err != nil || c.GRPCBindAddr != "fd00::5" || c.XDSAdvertiseAddr != "[fd00::5]:18000" {
		t.Fatalf("bracketed IPv6: %q %q %v", c.GRPCBindAddr, c.XDSAdvertiseAddr, err)
	}
	for _, bad := range []string{"10.0.0.5:18000", "[::1]:18000", "a b"} {
		t.Setenv("GRPC_BIND_ADDRESS", bad)
		if _, err := loadConfig(); err == nil || !strings.Contains(err.Error(), "GRPC_BIND_ADDRESS") || strings.Contains(err.Error(), "XDS_ADVERTISE_ADDRESS") {
			t.Errorf("GRPC_BIND_ADDRESS=%q: %v; want an error naming GRPC_BIND_ADDRESS", bad, err)
		}
	}
}
