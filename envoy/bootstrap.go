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
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/xds/ir"
)

// XDSCluster is the bootstrap's static cluster pointing at the control plane.
const XDSCluster = "xds_cluster"

// BootstrapOptions are the envoy-bootstrap flags.
type BootstrapOptions struct {
	NodeID     string // --node-id
	Cluster    string // --cluster: edge | sidecar
	XDSAddress string // --xds-address HOST:PORT of the control plane's gRPC port
	AdminPort  uint32 // --admin-port (default 9901)
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
	bs := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.Cluster},
		Admin: &bootstrapv3.Admin{
			Address: socketAddress("0.0.0.0", o.AdminPort),
		},
		StatsConfig: &metricsv3.StatsConfig{UseAllDefaultTags: wrapperspb.Bool(true)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Clusters: []*clusterv3.Cluster{xds},
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
