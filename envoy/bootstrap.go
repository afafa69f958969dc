package envoy

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/ir"
)

// XDSCluster is the bootstrap's static cluster pointing at the control plane.
const XDSCluster = "xds_cluster"

// BootstrapOptions are the envoy-bootstrap flags.
type BootstrapOptions struct {
	NodeID     string // --node-id
	Cluster    string // --cluster: edge | sidecar
	XDSAddress string // --xds-address HOST:PORT of the control plane's gRPC port
	AdminPort  uint32 // --admin-port (default 9901)
	// TLS, when set, makes Envoy dial the control plane's gRPC port over TLS (mutual TLS
	// with a client certificate), matching GRPC_TLS_* on the gateway.
	TLS *BootstrapTLS
}

// BootstrapTLS is how Envoy verifies the gateway's gRPC port and proves itself to it. The
// paths are Envoy's (its container or host), not the gateway's; Envoy reads them at start.
type BootstrapTLS struct {
	CAFile     string // --xds-tls-ca: the CA that signed the gateway's gRPC certificate
	CertFile   string // --xds-tls-cert: Envoy's client certificate (mutual TLS)
	KeyFile    string // --xds-tls-key: its key
	ServerName string // --xds-tls-server-name: SNI and the name the certificate must hold (default: the xds address host)
}

// Bootstrap builds an Envoy bootstrap: ADS over xds_cluster (LDS and CDS from ADS), the
// admin interface on AdminPort, and stats with default tags. It passes ValidateAll.
func Bootstrap(o BootstrapOptions) (*bootstrapv3.Bootstrap, error) {
	if o.NodeID == "" {
		return nil, errors.New("node id is required")
	}
	switch o.Cluster {
	case "edge", "sidecar":
	case "":
		o.Cluster = "edge"
	default:
		return nil, fmt.Errorf("cluster %q must be edge or sidecar", o.Cluster)
	}
	host, port, err := net.SplitHostPort(o.XDSAddress)
	if err != nil {
		return nil, fmt.Errorf("xds address: %w", err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return nil, fmt.Errorf("xds address: bad port %q", port)
	}
	if o.AdminPort == 0 {
		o.AdminPort = 9901
	}
	b := &builder{}
	xds := b.staticCluster(XDSCluster, ir.Address{Host: host, Port: uint32(p)})
	xds.TypedExtensionProtocolOptions[httpProtocolOptionsKey] = b.pack(http2Options(true))
	clusters := []*clusterv3.Cluster{xds}
	if o.TLS != nil {
		ts, err := controlPlaneTLS(b, *o.TLS, host)
		if err != nil {
			return nil, err
		}
		xds.TransportSocket = ts
		// ext_authz, rate limit and access logs reach the same gRPC port through the
		// api_gateway_grpc cluster, which the control plane serves over CDS in plaintext.
		// Envoy never lets CDS modify or remove a cluster defined in the bootstrap, so this
		// TLS copy is the one Envoy uses and the served one is skipped, not NACKed
		// (envoy/upstream/cluster_manager.h addOrUpdateCluster: "Statically defined clusters
		// ... can not be updated via API", returns false; source/common/upstream/
		// cds_api_helper.cc counts it as skipped; docs cds.rst "Any clusters that are
		// statically defined ... cannot be modified or removed via the CDS API").
		cp := b.staticCluster(ir.ControlPlaneCluster, ir.Address{Host: host, Port: uint32(p)})
		cp.TransportSocket = ts
		clusters = append(clusters, cp)
	}
	bs := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Cluster},
		Admin: &bootstrapv3.Admin{
			Address: socketAddress("0.0.0.0", o.AdminPort),
		},
		StatsConfig: &metricsv3.StatsConfig{UseAllDefaultTags: wrapperspb.Bool(true)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: clusters,
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices:              []*corev3.GrpcService{envoyGRPC(XDSCluster, 0)},
			},
			LdsConfig: adsSource(),
			CdsConfig: adsSource(),
		},
		LayeredRuntime: &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{{
			Name:           "admin",
			LayerSpecifier: &bootstrapv3.RuntimeLayer_AdminLayer_{AdminLayer: &bootstrapv3.RuntimeLayer_AdminLayer{}},
		}}},
	}
	if b.err != nil {
		return nil, b.err
	}
	if err := bs.ValidateAll(); err != nil {
		return nil, err
	}
	return bs, nil
}

// http2Options returns HTTP/2 upstream options; with keepalive for the long-lived ADS stream.
func http2Options(keepalive bool) *httpoptsv3.HttpProtocolOptions {
	h2 := &corev3.Http2ProtocolOptions{}
	if keepalive {
		h2.ConnectionKeepalive = &corev3.KeepaliveSettings{Interval: dur(30 * time.Second), Timeout: dur(5 * time.Second)}
	}
	return &httpoptsv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
		}},
	}
}

// controlPlaneTLS is the upstream TLS of the clusters that reach the gateway's gRPC port:
// the CA to verify it, the name it must hold (Envoy checks only the chain unless told a
// subject alt name to match), ALPN h2 (grpc-go refuses TLS without it), and the client
// certificate for mutual TLS.
func controlPlaneTLS(b *builder, t BootstrapTLS, host string) (*corev3.TransportSocket, error) {
	if t.CAFile == "" {
		return nil, errors.New("xds TLS needs the CA file that signed the gateway's gRPC certificate")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("xds TLS client certificate needs both a certificate file and a key file")
	}
	name := t.ServerName
	if name == "" {
		name = host
	}
	san := &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: &matcherv3.StringMatcher{
		MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name},
	}}
	sni := name
	if net.ParseIP(name) != nil {
		// An IP address is matched against IP SANs and is never sent as SNI (RFC 6066 §3).
		san.SanType = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
		sni = ""
	}
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: []string{"h2"},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 fileSource(t.CAFile),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san},
			}},
		},
	}
	if t.CertFile != "" {
		ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(t.CertFile),
			PrivateKey:       fileSource(t.KeyFile),
		}}
	}
	return &corev3.TransportSocket{Name: tlsSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.pack(ctx)}}, nil
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}
