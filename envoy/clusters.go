package envoy

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/ir"
)

const (
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	tlsSocketName          = "envoy.transport_sockets.tls"
	defaultRetryBase       = 25 * time.Millisecond
	ringMinSize            = 1024
	ringMaxSize            = 8 << 20
)

// cluster builds a cluster and, for EDS, its ClusterLoadAssignment.
func (b *builder) cluster(c *ir.Cluster) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment) {
	grpc := b.o.Flavor == FlavorGRPC
	pc := &clusterv3.Cluster{
		Name:           c.Name,
		ConnectTimeout: dur(c.ConnectTimeout),
	}
	var cla *endpointv3.ClusterLoadAssignment
	if c.Discovery == ir.DiscoveryEDS || grpc {
		// grpc-go resolves EDS host names itself, so every gRPC cluster is EDS.
		pc.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		pc.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
		cla = loadAssignment(c.Name, c.Endpoints)
	} else {
		pc.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		pc.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
		pc.LoadAssignment = loadAssignment(c.Name, c.Endpoints)
	}
	switch c.LB {
	case ir.LBLeastRequest:
		pc.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		pc.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(2)}}
	case ir.LBRingHash:
		pc.LbPolicy = clusterv3.Cluster_RING_HASH
		pc.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			HashFunction:    clusterv3.Cluster_RingHashLbConfig_XX_HASH,
			MinimumRingSize: wrapperspb.UInt64(ringMinSize),
			MaximumRingSize: wrapperspb.UInt64(ringMaxSize),
		}}
	case ir.LBRandom:
		if grpc {
			// grpc-go has no RANDOM policy; round robin is its closest equivalent.
			pc.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		} else {
			pc.LbPolicy = clusterv3.Cluster_RANDOM
		}
	default:
		pc.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
	if c.HTTP2 {
		pc.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: b.pack(&httpoptsv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		})}
	}
	if c.TLS && !grpc {
		pc.TransportSocket = &corev3.TransportSocket{Name: tlsSocketName, ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: b.pack(&tlsv3.UpstreamTlsContext{Sni: c.SNI}),
		}}
	}
	if h := c.HealthCheck; h != nil && !grpc {
		hc := &corev3.HealthCheck_HttpHealthCheck{Path: h.Path}
		for _, s := range h.ExpectedStatuses {
			hc.ExpectedStatuses = append(hc.ExpectedStatuses, &typev3.Int64Range{Start: int64(s), End: int64(s) + 1})
		}
		pc.HealthChecks = []*corev3.HealthCheck{{
			Timeout:            dur(h.Timeout),
			Interval:           dur(h.Interval),
			HealthyThreshold:   wrapperspb.UInt32(h.HealthyThreshold),
			UnhealthyThreshold: wrapperspb.UInt32(h.UnhealthyThreshold),
			HealthChecker:      &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: hc},
		}}
	}
	if o := c.Outlier; o != nil {
		od := &clusterv3.OutlierDetection{
			Interval:         dur(o.Interval),
			BaseEjectionTime: dur(o.BaseEjectionTime),
		}
		if o.Consecutive5xx > 0 {
			od.Consecutive_5Xx = wrapperspb.UInt32(o.Consecutive5xx)
		}
		if o.MaxEjectionPercent > 0 {
			od.MaxEjectionPercent = wrapperspb.UInt32(o.MaxEjectionPercent)
		}
		pc.OutlierDetection = od
	}
	if cb := c.Circuit; cb != nil {
		t := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
		t.MaxConnections = u32(cb.MaxConnections)
		t.MaxPendingRequests = u32(cb.MaxPendingRequests)
		t.MaxRequests = u32(cb.MaxRequests)
		t.MaxRetries = u32(cb.MaxRetries)
		pc.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
	}
	return pc, cla
}

func u32(v uint32) *wrapperspb.UInt32Value {
	if v == 0 {
		return nil
	}
	return wrapperspb.UInt32(v)
}

// loadAssignment puts every endpoint in one locality with a non-zero weight (grpc-go drops
// localities without one).
func loadAssignment(name string, eps []ir.Endpoint) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if len(eps) == 0 {
		return cla
	}
	loc := &endpointv3.LocalityLbEndpoints{LoadBalancingWeight: wrapperspb.UInt32(1), Locality: &corev3.Locality{}}
	for _, e := range eps {
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(e.Host, e.Port)}},
			LoadBalancingWeight: wrapperspb.UInt32(e.Weight),
		})
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	return cla
}

// staticCluster is a STRICT_DNS HTTP/2 cluster for one of our own gRPC endpoints
// (api_gateway_grpc, otel_collector).
func (b *builder) staticCluster(name string, a ir.Address) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       dur(5 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		DnsLookupFamily:      clusterv3.Cluster_V4_PREFERRED,
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment:       loadAssignment(name, []ir.Endpoint{{Host: a.Host, Port: a.Port, Weight: 1}}),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsKey: b.pack(&httpoptsv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpoptsv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		})},
	}
}
