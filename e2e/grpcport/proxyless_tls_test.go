package grpcport

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/xds"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

// A proxyless grpc-go client resolves xds:///HOST over mutual TLS: its xDS bootstrap names
// the gateway's CA and its own client certificate (grpc-go's "tls" channel credentials),
// and it routes to the backend the REST API configured. The same client with plaintext
// channel credentials gets no routes at all.
func TestProxylessClientOverMutualTLS(t *testing.T) {
	ca, clientsCA := newCA(t, "grpc-ca"), newCA(t, "clients")
	f := newTLSFiles(t, ca.issue(t, "gateway", 100, true))
	writeAtomic(t, f.clientCA, clientsCA.pem)
	client := clientsCA.issue(t, "proxyless-1", 10, false)
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	writeAtomic(t, caFile, ca.pem)
	writeAtomic(t, certFile, client.certPEM)
	writeAtomic(t, keyFile, client.keyPEM)

	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{
		"LOG_LEVEL=info", "GRPC_TLS_CERT_FILE=" + f.cert, "GRPC_TLS_KEY_FILE=" + f.key, "GRPC_TLS_CLIENT_CA_FILE=" + f.clientCA,
	}})
	b := xdstest.StartBackend(t, "tls-backend")
	if code, raw := g.Do("POST", "/api/v1/management/routes", map[string]any{
		"id": "over-tls", "hosts": []string{"tls.test"}, "require_auth": false,
		"conditions": []any{map[string]any{"path_pattern": "/*"}},
		"targets":    []any{map[string]any{"host": b.Host, "port": b.Port, "protocol": "grpc"}},
	}, nil); code != http.StatusCreated {
		t.Fatalf("POST route: %d %s", code, raw)
	}

	dial := func(creds map[string]any) *grpc.ClientConn {
		bs, _ := json.Marshal(map[string]any{
			"xds_servers": []any{map[string]any{
				"server_uri": g.GRPCAddr(), "channel_creds": []any{creds}, "server_features": []string{"xds_v3"},
			}},
			"node": map[string]any{"id": "proxyless-1", "cluster": "edge"},
		})
		rb, err := xds.NewXDSResolverWithConfigForTesting(bs)
		if err != nil {
			t.Fatal(err)
		}
		// The data plane to the backend is plaintext; only the control-plane channel is TLS.
		cc, err := grpc.NewClient("xds:///tls.test", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}

	plain := dial(map[string]any{"type": "insecure"})
	pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer pcancel()
	if got, err := xdstest.Call(pctx, plain); err == nil {
		t.Fatalf("a plaintext xDS client was served routes (reached %q)", got)
	}

	cc := dial(map[string]any{"type": "tls", "config": map[string]any{
		"ca_certificate_file": caFile, "certificate_file": certFile, "private_key_file": keyFile,
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		got, err := xdstest.Call(ctx, cc)
		if err == nil && got == "tls-backend" {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the mutual-TLS xDS client never reached the backend: %q %v\n%s", got, err, g.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
