package translate

import (
	"fmt"
	"net"
	"sort"
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

// routeClusters builds one cluster per target in rotation, so target weights become
// route-level weighted_clusters (honoured by Envoy and grpc-go alike).
func routeClusters(r *model.Route, idx *index) ([]*ir.Cluster, []ir.Backend, error) {
	var clusters []*ir.Cluster
	var backends []ir.Backend
	for i := range r.Targets {
		t := &r.Targets[i]
		w := t.EffectiveWeight()
		if w <= 0 || (t.Healthy != nil && !*t.Healthy) {
			continue
		}
		c := &ir.Cluster{
			Name:           ClusterName(r.ID, i),
			RouteID:        r.ID,
			LB:             lbPolicy(r.LoadBalance),
			HTTP2:          t.Protocol == "http2" || t.Protocol == "grpc",
			TLS:            t.TLS,
			ConnectTimeout: connectTimeout,
			HealthCheck:    healthCheck(r, t),
			Outlier:        outlier(r.OutlierDetection),
			Circuit:        circuit(r.CircuitBreaker),
		}
		if t.Service != "" {
			inst := idx.instances[t.Service]
			c.Discovery, c.Endpoints = instanceEndpoints(inst, t.Port)
			if t.Protocol == "" {
				for _, s := range inst {
					if s.Protocol == "grpc" || s.Protocol == "http2" {
						c.HTTP2 = true
					}
				}
			}
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
		backends = append(backends, ir.Backend{Cluster: c.Name, Weight: uint32(w)})
	}
	if len(backends) == 0 {
		return nil, nil, fmt.Errorf("targets: no target is in rotation (all have weight 0 or healthy false)")
	}
	return clusters, backends, nil
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
	sort.Slice(eps, func(i, j int) bool {
		if eps[i].Host != eps[j].Host {
			return eps[i].Host < eps[j].Host
		}
		return eps[i].Port < eps[j].Port
	})
	return d, eps
}

func serviceCluster(name string, inst []*model.Service) *ir.Cluster {
	c := &ir.Cluster{Name: ServiceClusterName(name), LB: ir.LBRoundRobin, ConnectTimeout: connectTimeout}
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
