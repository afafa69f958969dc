package envoy_test

import (
	"bytes"
	"os"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/envoy"
)

// The checked-in examples and the options that generate them
// (api-gateway envoy-bootstrap --node-id ... --cluster ... --xds-address api-gateway:18000).
var examples = map[string]envoy.BootstrapOptions{
	"bootstrap-edge.yaml":    {NodeID: "envoy-edge-1", Cluster: "edge", XDSAddress: "api-gateway:18000"},
	"bootstrap-sidecar.yaml": {NodeID: "envoy-sidecar-1", Cluster: "sidecar", XDSAddress: "api-gateway:18000"},
	// --xds-tls-ca /etc/envoy/tls/grpc-ca.crt --xds-tls-cert /etc/envoy/tls/envoy.crt --xds-tls-key /etc/envoy/tls/envoy.key
	"bootstrap-edge-mtls.yaml": {NodeID: "envoy-edge-1", Cluster: "edge", XDSAddress: "api-gateway:18000", TLS: &envoy.BootstrapTLS{
		CAFile: "/etc/envoy/tls/grpc-ca.crt", CertFile: "/etc/envoy/tls/envoy.crt", KeyFile: "/etc/envoy/tls/envoy.key",
	}},
}

// TestBootstrapExamples parses the checked-in bootstraps into bootstrap.v3.Bootstrap,
// validates them, and checks they equal freshly generated ones (-update rewrites them).
func TestBootstrapExamples(t *testing.T) {
	for file, o := range examples {
		bs, err := envoy.Bootstrap(o)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := envoy.ToYAML(bs)
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(file, fresh, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var parsed bootstrapv3.Bootstrap
		if err := protojson.Unmarshal(js, &parsed); err != nil {
			t.Fatalf("%s does not parse as a Bootstrap: %v", file, err)
		}
		if err := parsed.ValidateAll(); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if parsed.GetNode().GetCluster() != o.Cluster || parsed.GetNode().GetId() != o.NodeID {
			t.Fatalf("%s: node %v", file, parsed.GetNode())
		}
		ads := parsed.GetDynamicResources().GetAdsConfig().GetGrpcServices()
		if len(ads) != 1 || ads[0].GetEnvoyGrpc().GetClusterName() != envoy.XDSCluster ||
			parsed.GetStaticResources().GetClusters()[0].GetName() != envoy.XDSCluster {
			t.Fatalf("%s: ADS must go through %s", file, envoy.XDSCluster)
		}
		if !bytes.Equal(raw, fresh) {
			t.Fatalf("%s differs from the generated bootstrap (go test ./envoy -run TestBootstrapExamples -update)", file)
		}
	}
}

func TestBootstrapRejectsBadOptions(t *testing.T) {
	for _, o := range []envoy.BootstrapOptions{
		{NodeID: "", Cluster: "edge", XDSAddress: "cp:18000"},
		{NodeID: "n", Cluster: "mesh", XDSAddress: "cp:18000"},
		{NodeID: "n", Cluster: "edge", XDSAddress: "cp"},
		{NodeID: "n", Cluster: "edge", XDSAddress: "cp:0"},
		{NodeID: "n", Cluster: "edge", XDSAddress: "cp:1", TLS: &envoy.BootstrapTLS{CertFile: "c", KeyFile: "k"}}, // no CA
		{NodeID: "n", Cluster: "edge", XDSAddress: "cp:1", TLS: &envoy.BootstrapTLS{CAFile: "ca", CertFile: "c"}}, // no key
	} {
		if _, err := envoy.Bootstrap(o); err == nil {
			t.Errorf("%+v: want an error", o)
		}
	}
}

// upstreamTLS unpacks a cluster's TLS transport socket (nil when plaintext).
func upstreamTLS(t *testing.T, ts *corev3.TransportSocket) *tlsv3.UpstreamTlsContext {
	t.Helper()
	if ts == nil {
		return nil
	}
	var u tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&u); err != nil {
		t.Fatal(err)
	}
	return &u
}

// With TLS the bootstrap dials the gRPC port over TLS twice: ADS through xds_cluster, and
// ext_authz, rate limit and access logs through a static api_gateway_grpc, which CDS cannot
// replace by its plaintext copy. Both verify the gateway's name (Envoy checks only the chain
// without a SAN matcher), offer ALPN h2 (grpc-go refuses TLS without it) and present the
// client certificate. An IP address is matched as an IP SAN and not sent as SNI.
func TestBootstrapTLSCoversEveryClusterToTheGRPCPort(t *testing.T) {
	for _, tc := range []struct {
		addr, sni string
		sanType   tlsv3.SubjectAltNameMatcher_SanType
		san       string
	}{
		{"api-gateway:18000", "api-gateway", tlsv3.SubjectAltNameMatcher_DNS, "api-gateway"},
		{"10.0.0.7:18000", "", tlsv3.SubjectAltNameMatcher_IP_ADDRESS, "10.0.0.7"},
	} {
		bs, err := envoy.Bootstrap(envoy.BootstrapOptions{NodeID: "n", XDSAddress: tc.addr, TLS: &envoy.BootstrapTLS{
			CAFile: "/tls/ca.crt", CertFile: "/tls/envoy.crt", KeyFile: "/tls/envoy.key",
		}})
		if err != nil {
			t.Fatal(err)
		}
		clusters := bs.GetStaticResources().GetClusters()
		if len(clusters) != 2 || clusters[1].GetName() != "api_gateway_grpc" {
			t.Fatalf("%s: static clusters %d; want xds_cluster and api_gateway_grpc", tc.addr, len(clusters))
		}
		for _, c := range clusters {
			u := upstreamTLS(t, c.GetTransportSocket())
			if u == nil {
				t.Fatalf("%s: cluster %s is plaintext", tc.addr, c.GetName())
			}
			cc := u.GetCommonTlsContext()
			vc := cc.GetValidationContext()
			sans := vc.GetMatchTypedSubjectAltNames()
			if u.GetSni() != tc.sni || vc.GetTrustedCa().GetFilename() != "/tls/ca.crt" || len(sans) != 1 ||
				sans[0].GetSanType() != tc.sanType || sans[0].GetMatcher().GetExact() != tc.san {
				t.Fatalf("%s: cluster %s TLS %v", tc.addr, c.GetName(), u)
			}
			if len(cc.GetAlpnProtocols()) != 1 || cc.GetAlpnProtocols()[0] != "h2" {
				t.Fatalf("%s: ALPN %v", tc.addr, cc.GetAlpnProtocols())
			}
			certs := cc.GetTlsCertificates()
			if len(certs) != 1 || certs[0].GetCertificateChain().GetFilename() != "/tls/envoy.crt" || certs[0].GetPrivateKey().GetFilename() != "/tls/envoy.key" {
				t.Fatalf("%s: client certificate %v", tc.addr, certs)
			}
		}
	}
	plain, err := envoy.Bootstrap(envoy.BootstrapOptions{NodeID: "n", XDSAddress: "cp:18000"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(plain.GetStaticResources().GetClusters()); n != 1 || plain.GetStaticResources().GetClusters()[0].GetTransportSocket() != nil {
		t.Fatalf("without TLS: %d static clusters, want one plaintext xds_cluster", n)
	}
}
