package grpcport

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	// The bootstrap's typed extension options must resolve when it is parsed.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// runBootstrap runs `api-gateway envoy-bootstrap` with extra environment and flags.
func runBootstrap(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testutil.BuildGateway(t), append([]string{"envoy-bootstrap"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// The binary's envoy-bootstrap emits TLS on every cluster that reaches the gRPC port when
// given the CA and client certificate, and refuses to print a plaintext bootstrap (or one
// without a client certificate) for a gateway whose environment serves TLS (or requires
// client certificates): such a bootstrap could never connect.
func TestEnvoyBootstrapMatchesGRPCTLS(t *testing.T) {
	tlsEnv := []string{"GRPC_TLS_CERT_FILE=/run/grpc.crt", "GRPC_TLS_KEY_FILE=/run/grpc.key"}
	mtlsEnv := append(tlsEnv, "GRPC_TLS_CLIENT_CA_FILE=/run/clients.crt")
	if _, stderr, code := runBootstrap(t, tlsEnv); code != 2 || !strings.Contains(stderr, "--xds-tls-ca") {
		t.Fatalf("plaintext bootstrap for a TLS port: exit %d %s", code, stderr)
	}
	if _, stderr, code := runBootstrap(t, mtlsEnv, "--xds-tls-ca", "/etc/envoy/ca.crt"); code != 2 || !strings.Contains(stderr, "--xds-tls-cert") {
		t.Fatalf("bootstrap without a client certificate for a mutual-TLS port: exit %d %s", code, stderr)
	}
	if _, _, code := runBootstrap(t, append(mtlsEnv, "GRPC_TLS_REQUIRE_CLIENT_CERT=false"), "--xds-tls-ca", "/etc/envoy/ca.crt"); code != 0 {
		t.Fatalf("optional client certificates: exit %d", code)
	}
	out, stderr, code := runBootstrap(t, mtlsEnv, "--xds-address", "gw.internal:18443",
		"--xds-tls-ca", "/etc/envoy/ca.crt", "--xds-tls-cert", "/etc/envoy/envoy.crt", "--xds-tls-key", "/etc/envoy/envoy.key")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	js, err := yaml.YAMLToJSON([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatal(err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		var u tlsv3.UpstreamTlsContext
		if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(&u); err != nil {
			t.Fatalf("cluster %s: %v", c.GetName(), err)
		}
		if u.GetSni() != "gw.internal" || u.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetFilename() != "/etc/envoy/ca.crt" ||
			len(u.GetCommonTlsContext().GetTlsCertificates()) != 1 {
			t.Fatalf("cluster %s: %v", c.GetName(), &u)
		}
		names[c.GetName()] = true
	}
	if !names["xds_cluster"] || !names["api_gateway_grpc"] {
		t.Fatalf("static clusters %v; want xds_cluster and api_gateway_grpc", names)
	}
}
