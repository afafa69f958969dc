package translate

import (
	"crypto/sha256"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

// Health-check defaults when a target names a health path without a route health_check.
const (
	defaultHCInterval  = 10 * time.Second
	defaultHCTimeout   = 2 * time.Second
	defaultHCHealthy   = 2
	defaultHCUnhealthy = 3
	connectTimeout     = 5 * time.Second
)

// routeClusters builds the clusters of a route's targets in rotation: one per target, so
// target weights become route-level weighted_clusters (honoured by Envoy and proxyless
// clients alike), except where targetGroups puts several targets in one cluster so that
// least_connections or ip_hash applies across them.
func routeClusters(r *model.Route, idx *index) ([]*ir.Cluster, []ir.Backend, error) {
	if !forwards(r) && len(r.Targets) == 0 {
		return nil, nil, nil // a redirect or a direct response: Envoy answers, no cluster
	}
	var clusters []*ir.Cluster
	var backends []ir.Backend
	groups := targetGroups(r)
	weights := groupWeights(r, groups)
	for gi, g := range groups {
		i := g.targets[0]
		t := &r.Targets[i]
		c := &ir.Cluster{
			Name:           ClusterName(r.ID, g.name),
			RouteID:        r.ID,
			Target:         i,
			LB:             lbPolicy(r.LoadBalance),
			HTTP2:          t.Protocol == "http2" || t.Protocol == "grpc",
			TLS:            t.TLS,
			ConnectTimeout: connectTimeout,
			HealthCheck:    healthCheck(r, t),
			Outlier:        outlier(r.OutlierDetection),
			Circuit:        circuit(r.CircuitBreaker),
		}
		if t.Service != "" {
			// A group of service targets names one service and port: the same instances.
			inst := idx.instances[t.Service]
			c.Service = t.Service
			c.Discovery, c.Endpoints = instanceEndpoints(inst, t.Port)
			if t.Protocol == "" {
				for _, s := range inst {
					if s.Protocol == "grpc" || s.Protocol == "http2" {
						c.HTTP2 = true
					}
				}
			}
		} else if len(g.targets) > 1 {
			// IP host targets: their weights become endpoint weights (least_connections groups
			// hold equal weights), reduced by their greatest common divisor.
			var err error
			if c.Endpoints, err = groupEndpoints(r, g.targets); err != nil {
				return nil, nil, fmt.Errorf("targets[%d]: %w", i, err)
			}
			c.Discovery = ir.DiscoveryEDS
		} else {
			c.Discovery, c.Endpoints = hostEndpoint(t)
		}
		if t.TLS {
			upstreamTLS(c, t, idx.caFile)
		}
		if err := c.Validate(); err != nil {
			return nil, nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		clusters = append(clusters, c)
		if w := weights[gi]; w > math.MaxUint32 {
			return nil, nil, fmt.Errorf("targets[%d]: the weights of the targets sharing this cluster sum to %d; Envoy and gRPC clients refuse a sum above %d", i, w, uint64(math.MaxUint32))
		}
		backends = append(backends, ir.Backend{Cluster: c.Name, Weight: uint32(weights[gi])})
	}
	if len(backends) == 0 {
		return nil, nil, fmt.Errorf("targets: no target is in rotation (all have weight 0 or healthy false)")
	}
	if m := r.Mirror; m != nil && m.Target != nil {
		c, err := mirrorCluster(r, m.Target, idx)
		if err != nil {
			return nil, nil, err
		}
		clusters = append(clusters, c)
	}
	return clusters, backends, nil
}

// hostEndpoint is a host target's one endpoint: EDS for an IP address, DNS for a name.
func hostEndpoint(t *model.Target) (ir.Discovery, []ir.Endpoint) {
	d := ir.DiscoveryEDS
	if net.ParseIP(t.Host) == nil {
		d = ir.DiscoveryDNS
	}
	return d, []ir.Endpoint{{Host: t.Host, Port: uint32(t.Port), Weight: 1}}
}

// mirrorCluster is the cluster of a route's mirror target (Target -1: status reasons name
// mirror.target).
func mirrorCluster(r *model.Route, t *model.Target, idx *index) (*ir.Cluster, error) {
	c := &ir.Cluster{
		Name:           MirrorClusterName(r.ID),
		RouteID:        r.ID,
		Target:         -1,
		LB:             ir.LBRoundRobin,
		HTTP2:          t.Protocol == "http2" || t.Protocol == "grpc",
		TLS:            t.TLS,
		ConnectTimeout: connectTimeout,
	}
	if t.Service != "" {
		inst := idx.instances[t.Service]
		c.Service = t.Service
		c.Discovery, c.Endpoints = instanceEndpoints(inst, t.Port)
	} else {
		c.Discovery, c.Endpoints = hostEndpoint(t)
	}
	if t.TLS {
		// A mirror carries the route's requests, credentials included: its upstream is
		// verified as a target's is.
		upstreamTLS(c, t, idx.caFile)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("mirror.target: %w", err)
	}
	return c, nil
}

// targetGroup is one cluster of a route's targets: the targets in rotation it carries, in
// order, and the target index it is named after.
type targetGroup struct {
	// name: the cluster is ClusterName(route, name). For a shared cluster it is the first
	// target that could join the group, in rotation or not, so that taking a target out of
	// rotation (healthy: false; weight 0 under ip_hash) leaves the cluster's name alone.
	name    int
	targets []int
}

// targetGroups lists the targets in rotation (weight above 0, not healthy: false) as
// groups, each one cluster. Every target is a group of its own, except under load_balance
// least_connections or ip_hash: each target its own cluster would leave the policy nothing to
// choose from (the weighted pick between clusters happens per request, before the cluster's
// policy), so targets that can share one cluster do:
//   - host targets given as IP addresses with the same protocol, tls and health_path (a
//     cluster's settings; an IP host sets no SNI): their weights become endpoint weights.
//     Under ip_hash a repeated address adds its weight to that address's endpoint. Under
//     least_connections only targets of equal weight share a cluster, since grpc-go's
//     least_request and grpc-js's round_robin ignore endpoint weights (Envoy honours them):
//     the groups' weights stay exact route-level weights; a repeated address is a cluster of
//     its own there. Host names never share a cluster: a proxyless gRPC client resolves one
//     host name per cluster.
//   - targets of the same service, port, protocol, tls and health_path: the same instances.
//
// It reads the route alone (routeBackends calls it without the registered services).
func targetGroups(r *model.Route) []targetGroup {
	var groups []targetGroup
	byKey := map[string]int{}    // group key -> index in groups
	anchor := map[string]int{}   // group key -> first target of that key, in rotation or not
	inGroup := map[string]bool{} // least_connections: group key + address taken
	for i := range r.Targets {
		t := &r.Targets[i]
		w := t.EffectiveWeight()
		key := groupKey(r, t)
		if _, seen := anchor[key]; key != "" && !seen {
			anchor[key] = i
		}
		if w <= 0 || (t.Healthy != nil && !*t.Healthy) {
			continue
		}
		if key != "" && t.Service == "" && r.LoadBalance == "least_connections" {
			addr := key + "\x00" + targetAddr(t)
			if inGroup[addr] {
				key = "" // the address is in the group already: a cluster of its own
			} else {
				inGroup[addr] = true
			}
		}
		if key != "" {
			if gi, ok := byKey[key]; ok {
				groups[gi].targets = append(groups[gi].targets, i)
				continue
			}
			byKey[key] = len(groups)
			groups = append(groups, targetGroup{name: anchor[key], targets: []int{i}})
			continue
		}
		// Named after itself: no other group takes this index, since a group's name is
		// a target of the group's key and an earlier target of this one's key (if any) is
		// in rotation at the same address.
		groups = append(groups, targetGroup{name: i, targets: []int{i}})
	}
	return groups
}

// groupKey is what targets sharing one cluster have in common ("" when the target keeps a
// cluster of its own).
func groupKey(r *model.Route, t *model.Target) string {
	if r.LoadBalance != "least_connections" && r.LoadBalance != "ip_hash" {
		return ""
	}
	if t.Service != "" {
		return fmt.Sprintf("service\x00%s\x00%d\x00%s\x00%t\x00%s\x00%s", t.Service, t.Port, t.Protocol, t.TLS, t.HealthPath, tlsKey(t))
	}
	if net.ParseIP(t.Host) == nil {
		return ""
	}
	http2 := t.Protocol == "http2" || t.Protocol == "grpc"
	key := fmt.Sprintf("host\x00%t\x00%t\x00%s\x00%s", http2, t.TLS, t.HealthPath, tlsKey(t))
	if r.LoadBalance == "least_connections" {
		key += fmt.Sprintf("\x00%d", t.EffectiveWeight())
	}
	return key
}

// tlsKey is what of a target's upstream TLS verification its cluster carries: targets
// differing in it never share a cluster.
func tlsKey(t *model.Target) string {
	if !t.TLS {
		return ""
	}
	ca := sha256.Sum256([]byte(t.TLSCAPEM))
	return fmt.Sprintf("%x\x00%s\x00%q\x00%t", ca, t.TLSSNI, t.TLSVerifySAN, t.TLSInsecureSkipVerify)
}

// targetAddr is an IP host target's address in canonical form (::ffff:10.0.0.1 is 10.0.0.1).
func targetAddr(t *model.Target) string {
	return net.JoinHostPort(net.ParseIP(t.Host).String(), strconv.Itoa(t.Port))
}

// groupWeights are the groups' route-level weights: the sums of their targets' weights.
// When they sum above 2^32-1 (the most Envoy and grpc-go take in one weighted_clusters) they
// are divided by their greatest common divisor, which keeps their proportions: a route
// whose one cluster carries every target (sent as a plain cluster, no weight) then weighs 1.
func groupWeights(r *model.Route, groups []targetGroup) []uint64 {
	ws := make([]uint64, len(groups))
	var sum, d uint64
	for gi, g := range groups {
		for _, i := range g.targets {
			ws[gi] += uint64(r.Targets[i].EffectiveWeight())
		}
		sum += ws[gi]
		d = gcd(d, ws[gi])
	}
	if sum > math.MaxUint32 && d > 1 {
		for gi := range ws {
			ws[gi] /= d
		}
	}
	return ws
}

// groupEndpoints are the endpoints of a group of IP host targets, one per address (the
// weights of an address repeated under ip_hash added up), the weights divided by their
// greatest common divisor. Envoy and grpc-go refuse a locality whose endpoint weights sum
// above 2^32-1; such a group is refused with that reason.
func groupEndpoints(r *model.Route, g []int) ([]ir.Endpoint, error) {
	eps := make([]ir.Endpoint, 0, len(g))
	weights := make([]uint64, 0, len(g))
	at := make(map[string]int, len(g)) // canonical address -> index in eps
	for _, i := range g {
		t := &r.Targets[i]
		a := targetAddr(t)
		if j, ok := at[a]; ok {
			weights[j] += uint64(t.EffectiveWeight())
			continue
		}
		at[a] = len(eps)
		eps = append(eps, ir.Endpoint{Host: t.Host, Port: uint32(t.Port)})
		weights = append(weights, uint64(t.EffectiveWeight()))
	}
	var d uint64
	for _, w := range weights {
		d = gcd(d, w)
	}
	var sum uint64
	for j, w := range weights {
		sum += w / d
		eps[j].Weight = uint32(min(w/d, math.MaxUint32))
	}
	if sum > math.MaxUint32 {
		return nil, fmt.Errorf("the weights of the targets sharing this cluster sum to %d as endpoint weights; Envoy and gRPC clients refuse a sum above %d in one locality", sum, uint64(math.MaxUint32))
	}
	sortEndpoints(eps)
	return eps, nil
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func sortEndpoints(eps []ir.Endpoint) {
	sort.Slice(eps, func(i, j int) bool {
		if eps[i].Host != eps[j].Host {
			return eps[i].Host < eps[j].Host
		}
		return eps[i].Port < eps[j].Port
	})
}

// instanceEndpoints lists a service's serving instances; EDS when every host is an IP,
// else DNS (Envoy's EDS takes IP addresses only).
func instanceEndpoints(inst []*model.Service, port int) (ir.Discovery, []ir.Endpoint) {
	d := ir.DiscoveryEDS
	eps := make([]ir.Endpoint, 0, len(inst))
	seen := map[string]bool{}
	for _, s := range inst {
		p := s.Port
		if port != 0 {
			p = port
		}
		key := net.JoinHostPort(s.Host, fmt.Sprint(p))
		if seen[key] {
			continue
		}
		seen[key] = true
		w := uint32(1)
		if s.Weight != nil && *s.Weight > 0 {
			w = uint32(*s.Weight)
		}
		if net.ParseIP(s.Host) == nil {
			d = ir.DiscoveryDNS
		}
		eps = append(eps, ir.Endpoint{Host: s.Host, Port: uint32(p), Weight: w})
	}
	scaleWeights(eps)
	sortEndpoints(eps)
	return d, eps
}

// scaleWeights keeps the sum of instance weights within 2^32-1, the most Envoy and grpc-go
// take in one locality (envoy/runtime_rules.go checkLoadAssignment): above it every weight is
// scaled down in proportion, none below 1. Instance weights are at most 1,000,000, so only
// more than 4,294 instances of one service can need it.
func scaleWeights(eps []ir.Endpoint) {
	var sum uint64
	for _, e := range eps {
		sum += uint64(e.Weight)
	}
	if sum <= math.MaxUint32 {
		return
	}
	// floor(w*room/sum) sums to at most room; raising the zeros to 1 adds at most len(eps).
	room := uint64(math.MaxUint32) - uint64(len(eps))
	for i := range eps {
		w := uint64(eps[i].Weight) * room / sum
		eps[i].Weight = uint32(max(w, 1))
	}
}

func serviceCluster(name string, inst []*model.Service) *ir.Cluster {
	c := &ir.Cluster{Name: ServiceClusterName(name), Service: name, LB: ir.LBRoundRobin, ConnectTimeout: connectTimeout}
	c.Discovery, c.Endpoints = instanceEndpoints(inst, 0)
	if c.Discovery == ir.DiscoveryDNS && len(c.Endpoints) == 0 {
		c.Discovery = ir.DiscoveryEDS
	}
	for _, s := range inst {
		if s.Protocol == "grpc" || s.Protocol == "http2" {
			c.HTTP2 = true
		}
	}
	return c
}

// upstreamTLS sets the cluster's TLS verification from its (first) target:
//   - the chain: against tls_ca_pem, else the CA bundle file on Envoy's machine;
//   - the SNI: tls_sni, else a host name target's own name (an IP address is never sent);
//   - the name: tls_verify_san when given; else the SNI; else, for IP host targets, their
//     addresses (as IP SANs: every IP target sharing the cluster); else, for a service
//     target whose instances are all registered by IP address, their addresses likewise;
//     else each instance's host name, sent as its SNI (AutoHostSNI; an instance registered
//     by IP address among host names is a DNS cluster host whose host name is its address,
//     sent as SNI and checked, and routeWarnings says so; IP SANs cannot sit beside
//     AutoHostSNI, since Envoy requires the sent name AND a matcher to match).
//
// Envoy checks no name unless told: with a trusted CA alone it accepts any certificate
// that chains to it, whatever name it carries (source/common/tls/cert_validator/
// default_validator.cc, DefaultCertValidator::verifyCertificate runs the SAN checks only
// for a non-empty match_typed_subject_alt_names, or for the SNI sent when the
// UpstreamTlsContext sets auto_sni_san_validation). So the name is always sent as
// match_typed_subject_alt_names, except for service targets, which use auto_host_sni +
// auto_sni_san_validation (verifyCertAndUpdateStatus: the SNI actually sent, the instance's
// host name, replaces the matchers).
func upstreamTLS(c *ir.Cluster, t *model.Target, caFile string) {
	if t.TLSInsecureSkipVerify {
		c.SkipVerify = true
		c.SNI = sniOf(t)
		return
	}
	if t.TLSCAPEM != "" {
		c.TrustedCAPEM = t.TLSCAPEM
	} else {
		c.TrustedCAFile = caFile
	}
	c.SNI = sniOf(t)
	switch {
	case len(t.TLSVerifySAN) > 0:
		for _, s := range t.TLSVerifySAN {
			if ip := net.ParseIP(s); ip != nil {
				c.SANs = append(c.SANs, ir.SAN{Kind: ir.SANIP, Value: ip.String()})
			} else {
				c.SANs = append(c.SANs, ir.SAN{Kind: ir.SANDNS, Value: s})
			}
		}
	case c.SNI != "":
		c.SANs = []ir.SAN{{Kind: ir.SANDNS, Value: c.SNI}}
	case t.Service != "" && (c.Discovery != ir.DiscoveryEDS || len(c.Endpoints) == 0):
		c.AutoHostSNI = true
	default:
		// IP host targets, and a service whose instances are all registered by IP address
		// (EDS endpoints carry no host name: auto_host_sni would send no SNI, so
		// auto_sni_san_validation would have no name to check and Envoy would accept any
		// certificate chaining to the CA, a public one included). The address dialed is
		// checked, as a browser checks an https://IP URL.
		for _, e := range c.Endpoints {
			c.SANs = append(c.SANs, ir.SAN{Kind: ir.SANIP, Value: net.ParseIP(e.Host).String()})
		}
	}
}

// sniOf is the server name a TLS target sends: tls_sni, else a host name target's name.
func sniOf(t *model.Target) string {
	if t.TLSSNI != "" {
		return strings.TrimSuffix(t.TLSSNI, ".")
	}
	if t.Service == "" && net.ParseIP(t.Host) == nil {
		return strings.TrimSuffix(t.Host, ".")
	}
	return ""
}

// routeWarnings are what the route's status points out about a translated route: targets
// whose upstream certificate is not verified, or verified without a name.
func routeWarnings(r *model.Route, clusters []*ir.Cluster) []string {
	var out []string
	for i := range r.Targets {
		if r.Targets[i].TLS && r.Targets[i].TLSInsecureSkipVerify {
			out = append(out, fmt.Sprintf("targets[%d].tls_insecure_skip_verify: the upstream certificate is not verified: anyone on the path to the upstream can read and change the traffic", i))
		}
	}
	if m := r.Mirror; m != nil && m.Target != nil && m.Target.TLS && m.Target.TLSInsecureSkipVerify {
		out = append(out, "mirror.target.tls_insecure_skip_verify: the mirror's upstream certificate is not verified: anyone on the path to it can read the copied requests")
	}
	for _, c := range clusters {
		if !c.AutoHostSNI {
			continue
		}
		for _, e := range c.Endpoints {
			if net.ParseIP(e.Host) != nil {
				field := fmt.Sprintf("targets[%d]", c.Target)
				if c.Target < 0 {
					field = "mirror.target"
				}
				out = append(out, fmt.Sprintf("%s.tls: instance %s of service %s is registered by IP address among instances registered by host name: Envoy sends its address as the server name (which TLS forbids; a server may refuse the handshake) and checks the certificate against it: set tls_sni or tls_verify_san", field, e.Host, c.Service))
				break
			}
		}
	}
	return out
}

func lbPolicy(s string) ir.LBPolicy {
	switch s {
	case "least_connections":
		return ir.LBLeastRequest
	case "ip_hash":
		return ir.LBRingHash
	case "random":
		return ir.LBRandom
	}
	return ir.LBRoundRobin
}

func healthCheck(r *model.Route, t *model.Target) *ir.HealthCheck {
	path := t.HealthPath
	hc := r.HealthCheck
	if path == "" && hc != nil {
		path = hc.Path
	}
	if path == "" {
		return nil
	}
	out := &ir.HealthCheck{Path: path, Interval: defaultHCInterval, Timeout: defaultHCTimeout,
		HealthyThreshold: defaultHCHealthy, UnhealthyThreshold: defaultHCUnhealthy}
	if hc != nil {
		if hc.Interval > 0 {
			out.Interval = hc.Interval.D()
		}
		if hc.Timeout > 0 {
			out.Timeout = hc.Timeout.D()
		}
		if hc.HealthyThreshold > 0 {
			out.HealthyThreshold = uint32(hc.HealthyThreshold)
		}
		if hc.UnhealthyThreshold > 0 {
			out.UnhealthyThreshold = uint32(hc.UnhealthyThreshold)
		}
		for _, s := range hc.ExpectedStatuses {
			out.ExpectedStatuses = append(out.ExpectedStatuses, uint32(s))
		}
		sort.Slice(out.ExpectedStatuses, func(i, j int) bool { return out.ExpectedStatuses[i] < out.ExpectedStatuses[j] })
	}
	return out
}

func outlier(o *model.OutlierDetection) *ir.Outlier {
	if o == nil {
		return nil
	}
	return &ir.Outlier{Consecutive5xx: uint32(o.Consecutive5xx), Interval: o.Interval.D(),
		BaseEjectionTime: o.BaseEjectionTime.D(), MaxEjectionPercent: uint32(o.MaxEjectionPercent)}
}

func circuit(c *model.CircuitBreaker) *ir.CircuitBreaker {
	if c == nil {
		return nil
	}
	return &ir.CircuitBreaker{MaxConnections: uint32(c.MaxConnections), MaxPendingRequests: uint32(c.MaxPendingRequests),
		MaxRequests: uint32(c.MaxRequests), MaxRetries: uint32(c.MaxRetries)}
}
