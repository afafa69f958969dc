package envoy

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/api-gateway/api-gateway/ir"
)

// tlsCluster is a DNS cluster with upstream TLS as set.
func tlsCluster(set func(c *ir.Cluster)) *ir.Cluster {
	c := &ir.Cluster{Name: "route/r/0", RouteID: "r", Discovery: ir.DiscoveryDNS, LB: ir.LBRoundRobin,
		Endpoints: []ir.Endpoint{{Host: "api.example", Port: 443, Weight: 1}}, TLS: true,
		SNI: "api.example", TrustedCAFile: "/etc/ssl/certs/ca-certificates.crt", ConnectTimeout: time.Second}
	set(c)
	return c
}

// builtTLS builds the cluster (Envoy flavor) and returns its UpstreamTlsContext and the
// run-time rule check's verdict on the cluster.
func builtTLS(t *testing.T, c *ir.Cluster) (*tlsv3.UpstreamTlsContext, error) {
	t.Helper()
	b := &builder{o: Options{Flavor: FlavorEnvoy}}
	pc, _ := b.cluster(c)
	if err := Validate(pc); err != nil {
		t.Fatalf("cluster fails ValidateAll: %v", err)
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := pc.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx, checkClusterRuntime(pc, b.packed)
}

// Each IR field lands in the UpstreamTlsContext as the README says.
func TestUpstreamTLSContextFields(t *testing.T) {
	const damagedCert = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBATAKBggqhkjOPQQDAjASMRAwDgYDVQQDEwd0ZXN0IENBMB4XDTI2MDEwMTAwMDAwMFoXDTM2MDEwMTAwMDAwMFowEjEQMA4GA1UEAxMHdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABGbsX1cJvX8jC1i3Jm8uJbM3CGGp2O0aH6C9q1Ic0nqQ2f5r4C3w0c4Q0cCwX5YQm7c3c3W8d4rF1Xy5VH0j0oCjYzBhMA4GA1UdDwEB/wQEAwICBDAPBgNVHRMBAf8EBTADAQH/MB0GA1UdDgQWBBQAAAAAAAAAAAAAAAAAAAAAAAAAADAfBgNVHSMEGDAWgBQAAAAAAAAAAAAAAAAAAAAAAAAAADAKBggqhkjOPQQDAgNIADBFAiEA\n-----END CERTIFICATE-----\n"
	t.Run("default: system bundle file and the SNI as a DNS SAN", func(t *testing.T) {
		ctx, err := builtTLS(t, tlsCluster(func(c *ir.Cluster) { c.SANs = []ir.SAN{{Kind: ir.SANDNS, Value: "api.example"}} }))
		if err != nil {
			t.Fatal(err)
		}
		vc := ctx.GetCommonTlsContext().GetValidationContext()
		if ctx.GetSni() != "api.example" || vc.GetTrustedCa().GetFilename() != "/etc/ssl/certs/ca-certificates.crt" {
			t.Fatalf("context %v", ctx)
		}
		if m := vc.GetMatchTypedSubjectAltNames(); len(m) != 1 || m[0].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || m[0].GetMatcher().GetExact() != "api.example" {
			t.Fatalf("SAN matchers %v", m)
		}
		if ctx.GetAutoSniSanValidation() || ctx.GetAutoHostSni() {
			t.Fatal("auto SNI set on a cluster with its own SNI")
		}
	})
	t.Run("IP SANs", func(t *testing.T) {
		ctx, _ := builtTLS(t, tlsCluster(func(c *ir.Cluster) {
			c.SANs = []ir.SAN{{Kind: ir.SANIP, Value: "10.0.0.1"}, {Kind: ir.SANDNS, Value: "b.example"}}
		}))
		m := ctx.GetCommonTlsContext().GetValidationContext().GetMatchTypedSubjectAltNames()
		if len(m) != 2 || m[0].GetSanType() != tlsv3.SubjectAltNameMatcher_IP_ADDRESS || m[1].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS {
			t.Fatalf("SAN matchers %v", m)
		}
	})
	t.Run("auto host SNI", func(t *testing.T) {
		ctx, err := builtTLS(t, tlsCluster(func(c *ir.Cluster) { c.SNI = ""; c.AutoHostSNI = true }))
		if err != nil {
			t.Fatal(err)
		}
		if !ctx.GetAutoHostSni() || !ctx.GetAutoSniSanValidation() || ctx.GetSni() != "" {
			t.Fatalf("context %v", ctx)
		}
	})
	t.Run("skip verify: no validation context", func(t *testing.T) {
		ctx, err := builtTLS(t, tlsCluster(func(c *ir.Cluster) { c.TrustedCAFile = ""; c.SkipVerify = true }))
		if err != nil {
			t.Fatal(err)
		}
		if ctx.GetCommonTlsContext() != nil || ctx.GetSni() != "api.example" {
			t.Fatalf("context %v", ctx)
		}
	})
	t.Run("an inline CA whose block is no certificate is refused as Envoy refuses it", func(t *testing.T) {
		_, err := builtTLS(t, tlsCluster(func(c *ir.Cluster) { c.TrustedCAFile = ""; c.TrustedCAPEM = damagedCert }))
		if err == nil || !strings.Contains(err.Error(), "trusted_ca") {
			t.Fatalf("run-time rules: %v", err)
		}
	})
	t.Run("an inline CA without a certificate is refused", func(t *testing.T) {
		_, err := builtTLS(t, tlsCluster(func(c *ir.Cluster) { c.TrustedCAFile = ""; c.TrustedCAPEM = "just text" }))
		if err == nil || !strings.Contains(err.Error(), "holds no certificate") {
			t.Fatalf("run-time rules: %v", err)
		}
	})
}

// The rules Envoy applies to a validation context the builder never emits (a SAN check or
// auto_sni_san_validation without a trusted CA; an empty SAN matcher).
func TestRuntimeRulesUpstreamTLSWithoutTrustedCA(t *testing.T) {
	b := &builder{o: Options{Flavor: FlavorEnvoy}}
	pc, _ := b.cluster(tlsCluster(func(c *ir.Cluster) {}))
	for _, tc := range []struct {
		name string
		ctx  *tlsv3.UpstreamTlsContext
		want string
	}{
		{"auto_sni_san_validation without a CA", &tlsv3.UpstreamTlsContext{AutoSniSanValidation: true}, "auto_sni_san_validation without a trusted CA"},
		{"SAN matchers without a CA", &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "a.example"}}}}}}}}, "SAN matchers without a trusted CA"},
		{"an empty SAN matcher", &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/ca.pem"}},
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_DNS,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: ""}}}}}}}}, "matches no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc.TransportSocket = &corev3.TransportSocket{Name: tlsSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.pack(tc.ctx)}}
			if err := checkClusterRuntime(pc, b.packed); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want …%s…", err, tc.want)
			}
		})
	}
}
