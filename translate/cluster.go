package translate

import (
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
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
	var clusters []*ir.Cluster
	var backends []ir.Backend
	for _, g := range targetGroups(r) {
		i := g[0]
		t := &r.Targets[i]
		c := &ir.Cluster{
			Name:           ClusterName(r.ID, i),
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
		} else if len(g) > 1 {
			// IP host targets: their weights become endpoint weights (least_connections groups
			// hold equal weights), reduced by their greatest common divisor.
			var err error
			if c.Endpoints, err = groupEndpoints(r, g); err != nil {
				return nil, nil, fmt.Errorf("targets[%d]: %w", i, err)
			}
			c.Discovery = ir.DiscoveryEDS
		} else {
			c.Endpoints = []ir.Endpoint{{Host: t.Host, Port: uint32(t.Port), Weight: 1}}
			c.Discovery = ir.DiscoveryEDS
			if net.ParseIP(t.Host) == nil {
				c.Discovery = ir.DiscoveryDNS
				if t.TLS {
					c.SNI = t.Host
				}
			}
		}
		if err := c.Validate(); err != nil {
			return nil, nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		clusters = append(clusters, c)
		w, err := groupWeight(r, g)
		if err != nil {
			return nil, nil, fmt.Errorf("targets[%d]: %w", i, err)
		}
		backends = append(backends, ir.Backend{Cluster: c.Name, Weight: w})
	}
	if len(backends) == 0 {
		return nil, nil, fmt.Errorf("targets: no target is in rotation (all have weight 0 or healthy false)")
	}
	return clusters, backends, nil
}

// targetGroups lists the targets in rotation (weight above 0, not healthy: false) as groups
// of target indexes, each group one cluster named after its first target. Every target is a
// group of its own, except under load_balance least_connections or ip_hash: each target its
// own cluster would leave the policy nothing to choose from (the weighted pick between
// clusters happens per request, before the cluster's policy), so targets that can share one
// cluster do:
//   - host targets given as IP addresses with the same protocol, tls and health_path (a
//     cluster's settings; an IP host sets no SNI), at distinct addresses: their weights become
//     endpoint weights. Under least_connections only targets of equal weight share a cluster,
//     since grpc-go's least_request and grpc-js's round_robin ignore endpoint weights (Envoy
//     honours them): the groups' weights stay exact route-level weights. Host names never
//     share a cluster: a proxyless gRPC client resolves one host name per cluster.
//   - targets of the same service, port, protocol, tls and health_path: the same instances.
//
// It reads the route alone (routeBackends calls it without the registered services).
func targetGroups(r *model.Route) [][]int {
	merge := r.LoadBalance == "least_connections" || r.LoadBalance == "ip_hash"
	var groups [][]int
	byKey := map[string]int{}    // group key -> index in groups
	inGroup := map[string]bool{} // group key + address: taken
	for i := range r.Targets {
		t := &r.Targets[i]
		w := t.EffectiveWeight()
		if w <= 0 || (t.Healthy != nil && !*t.Healthy) {
			continue
		}
		key := ""
		switch {
		case !merge:
		case t.Service != "":
			key = fmt.Sprintf("service\x00%s\x00%d\x00%s\x00%t\x00%s", t.Service, t.Port, t.Protocol, t.TLS, t.HealthPath)
		case net.ParseIP(t.Host) != nil:
			http2 := t.Protocol == "http2" || t.Protocol == "grpc"
			key = fmt.Sprintf("host\x00%t\x00%t\x00%s", http2, t.TLS, t.HealthPath)
			if r.LoadBalance == "least_connections" {
				key += fmt.Sprintf("\x00%d", w)
			}
			addr := key + "\x00" + net.JoinHostPort(net.ParseIP(t.Host).String(), strconv.Itoa(t.Port))
			if inGroup[addr] {
				key = "" // the address is in the group already: a cluster of its own
			} else {
				inGroup[addr] = true
			}
		}
		if key != "" {
			if gi, ok := byKey[key]; ok {
				groups[gi] = append(groups[gi], i)
				continue
			}
			byKey[key] = len(groups)
		}
		groups = append(groups, []int{i})
	}
	return groups
}

// groupWeight is a group's route-level weight: the sum of its targets' weights.
func groupWeight(r *model.Route, g []int) (uint32, error) {
	var sum uint64
	for _, i := range g {
		sum += uint64(r.Targets[i].EffectiveWeight())
	}
	if sum > math.MaxUint32 {
		return 0, fmt.Errorf("the weights of the targets sharing this cluster sum to %d; Envoy and gRPC clients refuse a sum above %d", sum, uint64(math.MaxUint32))
	}
	return uint32(sum), nil
}

// groupEndpoints are the endpoints of a group of IP host targets, the targets' weights
// divided by their greatest common divisor. Envoy and grpc-go refuse a locality whose
// endpoint weights sum above 2^32-1; such a group is refused with that reason.
func groupEndpoints(r *model.Route, g []int) ([]ir.Endpoint, error) {
	d := 0
	for _, i := range g {
		d = gcd(d, r.Targets[i].EffectiveWeight())
	}
	eps := make([]ir.Endpoint, 0, len(g))
	var sum uint64
	for _, i := range g {
		t := &r.Targets[i]
		w := t.EffectiveWeight() / d
		sum += uint64(w)
		eps = append(eps, ir.Endpoint{Host: t.Host, Port: uint32(t.Port), Weight: uint32(w)})
	}
	if sum > math.MaxUint32 {
		return nil, fmt.Errorf("the weights of the targets sharing this cluster sum to %d as endpoint weights; Envoy and gRPC clients refuse a sum above %d in one locality", sum, uint64(math.MaxUint32))
	}
	sortEndpoints(eps)
	return eps, nil
}

func gcd(a, b int) int {
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
