package envoy

import (
	"fmt"
	"net"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpoptsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
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
	// ringMaxSize bounds the ring Envoy builds for ip_hash: sized by the lightest endpoint
	// weight (ring_hash_lb.cc, Ring::Ring), endpoint weights of 1 and 1,000,000 (targets of a
	// route, instances of a service) would reach Envoy's default 8M entries, about 200 MB
	// rebuilt on every host change, in an Envoy all routes share. 65,536 entries take 1.5 MB
	// and still build the exact ring of 1,024 endpoints whose heaviest weighs 64 times the
	// lightest; proxyless clients cap their rings at 4,096 anyway (grpc-go
	// envconfig.RingHashCap, grpc-js DEFAULT_RING_SIZE_CAP).
	ringMaxSize = 1 << 16
)

// How the gRPC flavor serves a cluster. A proxyless client (grpc-go, grpc-js) takes only IP
// addresses in EDS (grpc-js: endpoint-resource-type.js refuses "address is not a valid IPv4
// or IPv6 address"; Envoy refuses names in EDS too) and resolves a host name only as a
// LOGICAL_DNS cluster of exactly one locality with exactly one endpoint (grpc-js:
// xds-resource-type/cluster-resource-type.js, validateResource; grpc-go:
// internal/xds/xdsclient/xdsresource/unmarshal_cds.go, dnsHostNameFromCluster).
type grpcKind int

const (
	grpcEDS        grpcKind = iota // every endpoint an IP address (or none yet)
	grpcLogicalDNS                 // exactly one endpoint, a host name
	grpcUnservable                 // several endpoints, one or more of them a host name
)

func grpcClusterKind(c *ir.Cluster) grpcKind {
	switch {
	case firstHostName(c.Endpoints) == "":
		return grpcEDS
	case len(c.Endpoints) == 1:
		return grpcLogicalDNS
	}
	return grpcUnservable
}

// firstHostName is the first endpoint host that is not an IP address, "" if none.
func firstHostName(eps []ir.Endpoint) string {
	for _, e := range eps {
		if net.ParseIP(e.Host) == nil {
			return e.Host
		}
	}
	return ""
}

// usesEDS: whether the flavor serves the cluster by EDS (a ClusterLoadAssignment of its own)
// rather than with its endpoints in the cluster (STRICT_DNS for Envoy, LOGICAL_DNS for
// proxyless clients). A cluster the gRPC flavor cannot serve (grpcClusterOmission) is built
// as EDS, as it was before LOGICAL_DNS; Build leaves it out of the gRPC snapshot.
func usesEDS(c *ir.Cluster, f Flavor) bool {
	if f == FlavorGRPC {
		return grpcClusterKind(c) != grpcLogicalDNS
	}
	return c.Discovery == ir.DiscoveryEDS
}

// grpcClusterOmission is why the gRPC flavor cannot serve the cluster ("" when it can): a
// proxyless client resolves one host name per cluster, so a cluster of several endpoints of
// which one is a host name (instances of a service registered by name) has no form every
// client takes. Registering the instances by IP address serves it (EDS).
func grpcClusterOmission(c *ir.Cluster) string {
	if c.TLS {
		// A proxyless client takes upstream TLS only as an xDS security config naming
		// certificate providers of its bootstrap, which the gateway does not configure;
		// without it the call goes out with the channel's own credentials, in plaintext on
		// an insecure channel (tokens in the metadata included), to a target the operator
		// configured for TLS.
		return fmt.Sprintf("%s.tls: a proxyless gRPC client takes upstream TLS only from certificate providers in its own bootstrap, which the gateway does not configure; served without it, the call would go out with the channel's credentials, in plaintext on an insecure channel",
			clusterField(c))
	}
	switch grpcClusterKind(c) {
	case grpcLogicalDNS:
		if h := c.Endpoints[0].Host; !dnsName(h) {
			return fmt.Sprintf("%s: %q is neither an IP address nor a DNS name, and a proxyless gRPC client resolves the one host of a LOGICAL_DNS cluster as a DNS name",
				clusterField(c), h)
		}
	case grpcUnservable:
		what := fmt.Sprintf("the cluster has %d endpoints", len(c.Endpoints))
		if c.Service != "" {
			what = fmt.Sprintf("service %q has %d instances", c.Service, len(c.Endpoints))
		}
		return fmt.Sprintf("%s: %s and %q is a host name; a proxyless gRPC client resolves one host name per cluster (LOGICAL_DNS) and takes only IP addresses in EDS, so it cannot balance over them: register the instances by IP address",
			clusterField(c), what, firstHostName(c.Endpoints))
	}
	return ""
}

// clusterField names what a cluster serves the way status reasons name fields: the route's
// target, or the registered service.
func clusterField(c *ir.Cluster) string {
	if c.RouteID != "" && c.Target < 0 {
		return "mirror.target"
	}
	if c.RouteID != "" {
		return fmt.Sprintf("targets[%d]", c.Target)
	}
	if c.Service != "" {
		return fmt.Sprintf("service %s", c.Service)
	}
	return "cluster " + c.Name
}

// dnsName: s is a host name a resolver takes (RFC 1123 labels of letters, digits, '-' and
// '_', 1-63 bytes each, 253 in all; a trailing dot allowed).
func dnsName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			ch := l[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
				return false
			}
		}
	}
	return true
}

// Load-balancing policies sent as load_balancing_policy (the typed extensions), first
// supported wins.
const (
	leastRequestPolicy = "envoy.load_balancing_policies.least_request"
	roundRobinPolicy   = "envoy.load_balancing_policies.round_robin"
)

// leastRequestList is least_connections for every client: least_request (choice_count 2),
// then round_robin. grpc-js 1.14 NACKs lb_policy LEAST_REQUEST (cluster-resource-type.js
// takes only ROUND_ROBIN and RING_HASH there) and has no least_request in its policy
// registry, so it skips that entry and takes round_robin (lb-policy-registry.js,
// convertToLoadBalancingConfig: the first registered type URL wins). grpc-go takes
// least_request (internal/xds/xdsclient/xdslbregistry: first supported policy of the list).
// No wrr_locality wrapper: every load assignment is one locality, with no locality weights
// to apply (grpc-js would take one: load-balancer-xds-wrr-locality.js registers it under
// the full type URL; lb-policy-registry/wrr-locality.js registers another without the
// "type.googleapis.com/" prefix, which never matches).
//
// Envoy takes the same list the same way: source/common/upstream/upstream_impl.cc,
// ClusterInfoImpl::configureLbPolicies uses the first policy whose factory is registered
// (least_request is in every standard build) and ignores lb_policy; its legacy path
// (LegacyLbPolicyConfigHelper::getTypedLbConfigFromLegacyProto) turns lb_policy LEAST_REQUEST
// with least_request_lb_config.choice_count 2 into the very same least_request config. So
// the Envoy flavor sends the list too, and both flavors share one cluster.
func (b *builder) leastRequestList() *clusterv3.LoadBalancingPolicy {
	return &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
		{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: leastRequestPolicy,
			TypedConfig: b.pack(&leastrequestv3.LeastRequest{ChoiceCount: wrapperspb.UInt32(2)})}},
		{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: roundRobinPolicy,
			TypedConfig: b.pack(&roundrobinv3.RoundRobin{})}},
	}}
}

// cluster builds a cluster and, for EDS, its ClusterLoadAssignment.
func (b *builder) cluster(c *ir.Cluster) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment) {
	grpc := b.o.Flavor == FlavorGRPC
	pc := &clusterv3.Cluster{
		Name:           c.Name,
		ConnectTimeout: dur(c.ConnectTimeout),
	}
	var cla *endpointv3.ClusterLoadAssignment
	switch {
	case usesEDS(c, b.o.Flavor):
		pc.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		pc.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
		cla = loadAssignment(c.Name, c.Endpoints)
	case grpc:
		// One host name: proxyless clients resolve it themselves.
		pc.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
		pc.LoadAssignment = loadAssignment(c.Name, c.Endpoints)
	default:
		pc.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		pc.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
		pc.LoadAssignment = loadAssignment(c.Name, c.Endpoints)
	}
	switch c.LB {
	case ir.LBLeastRequest:
		pc.LoadBalancingPolicy = b.leastRequestList()
	case ir.LBRingHash:
		// lb_policy RING_HASH with XX_HASH and ring sizes within 8M: what grpc-js, grpc-go and
		// Envoy all take (ringMaxSize).
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
			TypedConfig: b.pack(upstreamTLSContext(c)),
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

// upstreamTLSContext is the cluster's UpstreamTlsContext: the SNI and, unless verification
// is skipped, a validation context with the trusted CA (inline PEM, or a file on Envoy's
// machine) and the name check (translate's upstreamTLS says which name and why Envoy needs
// it spelled out).
func upstreamTLSContext(c *ir.Cluster) *tlsv3.UpstreamTlsContext {
	ctx := &tlsv3.UpstreamTlsContext{Sni: c.SNI}
	if c.SkipVerify {
		return ctx
	}
	vc := &tlsv3.CertificateValidationContext{}
	if c.TrustedCAPEM != "" {
		vc.TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: c.TrustedCAPEM}}
	} else {
		vc.TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: c.TrustedCAFile}}
	}
	for _, s := range c.SANs {
		t := tlsv3.SubjectAltNameMatcher_DNS
		if s.Kind == ir.SANIP {
			t = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
		}
		vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: t,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s.Value}},
		})
	}
	if c.AutoHostSNI {
		ctx.AutoHostSni = true
		ctx.AutoSniSanValidation = true
	}
	ctx.CommonTlsContext = &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
	}
	return ctx
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
