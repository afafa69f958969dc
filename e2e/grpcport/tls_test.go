// Package grpcport drives the built binary's gRPC port: TLS and mutual TLS from files that
// rotate without a restart, the Envoy bootstrap that matches them, and a shutdown that does
// not wait for long-lived streams.
package grpcport

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// tlsFiles are the gateway's GRPC_TLS_* files in a temp dir.
type tlsFiles struct{ cert, key, clientCA string }

func newTLSFiles(t *testing.T, server leaf) tlsFiles {
	dir := t.TempDir()
	f := tlsFiles{cert: filepath.Join(dir, "grpc.crt"), key: filepath.Join(dir, "grpc.key"), clientCA: filepath.Join(dir, "clients-ca.crt")}
	writeAtomic(t, f.cert, server.certPEM)
	writeAtomic(t, f.key, server.keyPEM)
	return f
}

// healthCheck makes one unary RPC on a new connection with the given credentials.
func healthCheck(addr string, creds credentials.TransportCredentials) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// servedSerial is the serial number of the certificate the gRPC port presents to a new
// connection.
func servedSerial(t *testing.T, addr string, ca *certAuthority, client *tls.Certificate) int64 {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1", NextProtos: []string{"h2"}}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func tlsCreds(ca *certAuthority, client *tls.Certificate) credentials.TransportCredentials {
	cfg := &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	return credentials.NewTLS(cfg)
}

// With GRPC_TLS_CERT_FILE/GRPC_TLS_KEY_FILE the gRPC port speaks only TLS: a plaintext
// client (what every client was before) fails, a client trusting another CA fails, a client
// trusting the right CA gets Check answers and an ADS stream; and a certificate rotated on
// disk is served to the next connection without a restart, while a half-done rotation (new
// certificate, old key) keeps serving the previous pair.
func TestGRPCPortTLSAndRotation(t *testing.T) {
	ca, otherCA := newCA(t, "grpc-ca"), newCA(t, "someone-else")
	first := ca.issue(t, "gateway", 100, true)
	f := newTLSFiles(t, first)
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{
		"LOG_LEVEL=info", "GRPC_TLS_CERT_FILE=" + f.cert, "GRPC_TLS_KEY_FILE=" + f.key,
	}})
	addr := g.GRPCAddr()

	if err := healthCheck(addr, insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext client was answered on a TLS port")
	}
	if err := healthCheck(addr, tlsCreds(otherCA, nil)); err == nil {
		t.Fatal("a client trusting another CA was answered")
	}
	if err := healthCheck(addr, tlsCreds(ca, nil)); err != nil {
		t.Fatalf("a TLS client with the right CA: %v", err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(tlsCreds(ca, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	openADS(t, ctx, cc)
	if s := servedSerial(t, addr, ca, nil); s != 100 {
		t.Fatalf("served serial %d, want 100", s)
	}

	// Half a rotation: the new certificate beside the old key does not load; the port keeps
	// serving the old pair rather than failing every handshake.
	second := ca.issue(t, "gateway", 200, true)
	writeAtomic(t, f.cert, second.certPEM)
	if s := servedSerial(t, addr, ca, nil); s != 100 {
		t.Fatalf("with a mismatched certificate and key, served serial %d; want the previous 100", s)
	}
	writeAtomic(t, f.key, second.keyPEM)
	if s := servedSerial(t, addr, ca, nil); s != 200 {
		t.Fatalf("after rotation a new connection got serial %d, want 200", s)
	}
	if err := healthCheck(addr, tlsCreds(ca, nil)); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
}

// With GRPC_TLS_CLIENT_CA_FILE (client certificates required by default) a client without a
// certificate, or with one from another CA, gets nothing; a client certificate from the
// client CA works; and rotating the client CA file to a new CA admits the new CA's clients
// and refuses the old ones on new connections, without a restart.
func TestGRPCPortMutualTLSAndClientCARotation(t *testing.T) {
	ca, clientsCA, otherCA := newCA(t, "grpc-ca"), newCA(t, "clients"), newCA(t, "someone-else")
	f := newTLSFiles(t, ca.issue(t, "gateway", 100, true))
	writeAtomic(t, f.clientCA, clientsCA.pem)
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{
		"LOG_LEVEL=info", "GRPC_TLS_CERT_FILE=" + f.cert, "GRPC_TLS_KEY_FILE=" + f.key, "GRPC_TLS_CLIENT_CA_FILE=" + f.clientCA,
	}})
	addr := g.GRPCAddr()
	envoyCert := clientsCA.issue(t, "envoy-edge-1", 10, false).tls
	strangerCert := otherCA.issue(t, "stranger", 11, false).tls

	if err := healthCheck(addr, insecure.NewCredentials()); err == nil {
		t.Fatal("a plaintext client was answered on a mutual-TLS port")
	}
	if err := healthCheck(addr, tlsCreds(ca, nil)); err == nil {
		t.Fatal("a TLS client without a certificate was answered on a mutual-TLS port")
	}
	if err := healthCheck(addr, tlsCreds(ca, &strangerCert)); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	if err := healthCheck(addr, tlsCreds(ca, &envoyCert)); err != nil {
		t.Fatalf("a client certificate from the client CA: %v", err)
	}

	newClientsCA := newCA(t, "clients-2026")
	writeAtomic(t, f.clientCA, newClientsCA.pem)
	rotatedCert := newClientsCA.issue(t, "envoy-edge-1", 12, false).tls
	if err := healthCheck(addr, tlsCreds(ca, &rotatedCert)); err != nil {
		t.Fatalf("a certificate of the rotated client CA: %v", err)
	}
	if err := healthCheck(addr, tlsCreds(ca, &envoyCert)); err == nil {
		t.Fatal("a certificate of the replaced client CA still works on a new connection")
	}
}
