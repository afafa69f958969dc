// Package envoy builds Envoy (and proxyless gRPC) xDS resources from the IR. It is pure: the
// same IR gives byte-identical resources. One bad route (a resource that fails ValidateAll)
// is dropped and reported; it never breaks the listener for the other routes.
package envoy

import (
	"errors"
	"fmt"
	"sort"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/api-gateway/api-gateway/xds/ir"
)

// Flavor selects the kind of client the resources are for.
type Flavor int

// Flavors.
const (
	// FlavorEnvoy: an Envoy proxy (edge or sidecar): one HTTP listener, full filter chain.
	FlavorEnvoy Flavor = iota
	// FlavorGRPC: proxyless grpc-go clients: API listeners named by host, only what grpc-go
	// accepts (EDS clusters, RR / RING_HASH / LEAST_REQUEST, router filter only).
	FlavorGRPC
)

// Resource names.
const (
	// EnvoyRouteConfigName is the RDS name of the Envoy HTTP listener's routes.
	EnvoyRouteConfigName = "http"
	// GRPCRouteConfigPrefix prefixes the RDS name of each API listener ("grpc/<host>"): a
	// gRPC client receives only its own host's routes.
	GRPCRouteConfigPrefix = "grpc/"
)

// Options adjust a build.
type Options struct {
	Flavor Flavor
	// StatPrefix of the HTTP connection manager (default "ingress_http").
	StatPrefix string
}

// Resources are the built xDS resources, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// RouteErrors: routes dropped because a resource of theirs failed validation.
	RouteErrors map[string]string
}

// builder accumulates the first error of the resource being built.
type builder struct {
	o   Options
	cfg *ir.Config
	err error
}

func (b *builder) fail(err error) {
	if b.err == nil && err != nil {
		b.err = err
	}
}

// pack validates m (protoc-gen-validate ValidateAll: Any fields are not validated by their
// parents) and wraps it in an Any.
func (b *builder) pack(m proto.Message) *anypb.Any {
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			b.fail(fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err))
		}
	}
	a := &anypb.Any{}
	// Deterministic: map fields (typed_per_filter_config, context_extensions) in a fixed
	// order, so identical input gives identical bytes and identical version hashes.
	b.fail(anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}))
	return a
}

// Validate runs ValidateAll on a resource.
func Validate(m proto.Message) error {
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		return v.ValidateAll()
	}
	return nil
}

func dur(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func envoyGRPC(cluster string, timeout time.Duration) *corev3.GrpcService {
	return &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}},
		Timeout:         dur(timeout),
	}
}

// Build turns the IR into resources for one flavor.
func Build(cfg *ir.Config, o Options) (*Resources, error) {
	if o.StatPrefix == "" {
		o.StatPrefix = "ingress_http"
	}
	out := &Resources{RouteErrors: map[string]string{}}
	bad := map[string]bool{}
	// Clusters first: a route whose cluster is invalid is dropped as a whole.
	referenced := map[string]bool{}
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			for _, be := range r.Backends {
				referenced[be.Cluster] = true
			}
		}
	}
	if o.Flavor == FlavorGRPC {
		for _, s := range cfg.ServiceHosts {
			referenced[s.Cluster] = true
		}
	}
	type built struct {
		c   *clusterv3.Cluster
		cla *endpointv3.ClusterLoadAssignment
		src *ir.Cluster
	}
	var clusters []built
	for _, c := range cfg.Clusters {
		if !referenced[c.Name] {
			continue
		}
		b := &builder{o: o, cfg: cfg}
		pc, cla := b.cluster(c)
		if b.err == nil {
			b.fail(Validate(pc))
		}
		if b.err == nil && cla != nil {
			b.fail(Validate(cla))
		}
		if b.err != nil {
			if c.RouteID == "" {
				return nil, fmt.Errorf("cluster %s: %w", c.Name, b.err)
			}
			bad[c.RouteID] = true
			out.RouteErrors[c.RouteID] = fmt.Sprintf("cluster %s: %v", c.Name, b.err)
			continue
		}
		clusters = append(clusters, built{pc, cla, c})
	}
	// Routes: each IR route is built and validated once (a route may serve several hosts).
	envoyRoutes := map[*ir.Route]*routev3.Route{}
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if bad[r.RouteID] || envoyRoutes[r] != nil {
				continue
			}
			b := &builder{o: o, cfg: cfg}
			er := b.route(r)
			if b.err == nil {
				b.fail(Validate(er))
			}
			if b.err != nil {
				bad[r.RouteID] = true
				out.RouteErrors[r.RouteID] = fmt.Sprintf("route %s: %v", r.Name, b.err)
				continue
			}
			envoyRoutes[r] = er
		}
	}
	for _, c := range clusters {
		if c.src.RouteID != "" && bad[c.src.RouteID] {
			continue
		}
		out.Clusters = append(out.Clusters, c.c)
		if c.cla != nil {
			out.Endpoints = append(out.Endpoints, c.cla)
		}
	}
	b := &builder{o: o, cfg: cfg}
	var err error
	switch o.Flavor {
	case FlavorEnvoy:
		err = b.envoyTop(out, envoyRoutes, bad)
	case FlavorGRPC:
		err = b.grpcTop(out, envoyRoutes, bad)
	default:
		err = fmt.Errorf("unknown flavor %d", o.Flavor)
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(out.Clusters, func(i, j int) bool { return out.Clusters[i].Name < out.Clusters[j].Name })
	sort.Slice(out.Endpoints, func(i, j int) bool { return out.Endpoints[i].ClusterName < out.Endpoints[j].ClusterName })
	sort.Slice(out.Listeners, func(i, j int) bool { return out.Listeners[i].Name < out.Listeners[j].Name })
	sort.Slice(out.Routes, func(i, j int) bool { return out.Routes[i].Name < out.Routes[j].Name })
	return out, nil
}

// envoyTop adds the HTTP listener, its route configuration and the control-plane clusters.
func (b *builder) envoyTop(out *Resources, routes map[*ir.Route]*routev3.Route, bad map[string]bool) error {
	rc := b.routeConfig(EnvoyRouteConfigName, routes, bad, false)
	l := b.httpListener(hasSticky(b.cfg, bad))
	cp := b.staticCluster(ir.ControlPlaneCluster, b.cfg.ControlPlane)
	var otel *clusterv3.Cluster
	if b.cfg.OTLP != nil {
		otel = b.staticCluster(ir.OTLPCluster, *b.cfg.OTLP)
	}
	if b.err != nil {
		return b.err
	}
	var errs []error
	errs = append(errs, validateRouteConfigShell(rc))
	for _, m := range []proto.Message{l, cp} {
		errs = append(errs, Validate(m))
	}
	if otel != nil {
		errs = append(errs, Validate(otel))
		out.Clusters = append(out.Clusters, otel)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	out.Routes = append(out.Routes, rc)
	out.Listeners = append(out.Listeners, l)
	out.Clusters = append(out.Clusters, cp)
	return nil
}

// grpcTop adds one API listener per dialable host, each with its own route configuration
// holding that host's virtual host (a named host always has one: from its routes, or the
// registered service of that name), so a client gets only what it can use.
func (b *builder) grpcTop(out *Resources, routes map[*ir.Route]*routev3.Route, bad map[string]bool) error {
	rc := b.routeConfig("", routes, bad, true)
	vhosts := make(map[string]*routev3.VirtualHost, len(rc.VirtualHosts))
	for _, vh := range rc.VirtualHosts {
		for _, d := range vh.Domains {
			vhosts[d] = vh
		}
	}
	for _, h := range APIListenerHosts(b.cfg) {
		vh := vhosts[h]
		if vh == nil {
			continue
		}
		l := b.apiListener(h)
		if b.err != nil {
			return b.err
		}
		if err := Validate(l); err != nil {
			return fmt.Errorf("api listener %s: %w", h, err)
		}
		r := &routev3.RouteConfiguration{Name: GRPCRouteConfigPrefix + h, VirtualHosts: []*routev3.VirtualHost{vh}}
		if err := validateRouteConfigShell(r); err != nil {
			return fmt.Errorf("api listener %s: %w", h, err)
		}
		out.Listeners = append(out.Listeners, l)
		out.Routes = append(out.Routes, r)
	}
	return b.err
}

// APIListenerHosts are the names served to proxyless gRPC clients: every route host without
// a wildcard, and every registered service name (sorted).
func APIListenerHosts(cfg *ir.Config) []string {
	seen := map[string]bool{}
	var out []string
	for _, vh := range cfg.VirtualHosts {
		if !dialable(vh.Name) || seen[vh.Name] {
			continue
		}
		seen[vh.Name] = true
		out = append(out, vh.Name)
	}
	for _, s := range cfg.ServiceHosts {
		if !seen[s.Name] {
			seen[s.Name] = true
			out = append(out, s.Name)
		}
	}
	sort.Strings(out)
	return out
}

func dialable(host string) bool {
	for _, c := range host {
		if c == '*' {
			return false
		}
	}
	return host != ""
}

func hasSticky(cfg *ir.Config, bad map[string]bool) bool {
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if r.Sticky != nil && !bad[r.RouteID] {
				return true
			}
		}
	}
	return false
}

// validateRouteConfigShell validates a route configuration whose routes were each validated
// when built: the configuration's and every virtual host's own fields, not the routes again.
func validateRouteConfigShell(rc *routev3.RouteConfiguration) error {
	shell := &routev3.RouteConfiguration{Name: rc.Name}
	if err := Validate(shell); err != nil {
		return err
	}
	for _, vh := range rc.VirtualHosts {
		v := &routev3.VirtualHost{Name: vh.Name, Domains: vh.Domains}
		if err := Validate(v); err != nil {
			return fmt.Errorf("virtual host %s: %w", vh.Name, err)
		}
	}
	return nil
}

// HTTPListener builds only the Envoy HTTP listener of a configuration, for a node group
// whose other resources equal another group's (same routes and clusters, another stat prefix).
func HTTPListener(cfg *ir.Config, o Options, sticky bool) (*listenerv3.Listener, error) {
	b := &builder{o: o, cfg: cfg}
	l := b.httpListener(sticky)
	if b.err != nil {
		return nil, b.err
	}
	return l, Validate(l)
}

// HasSticky reports whether a built configuration needs the stateful_session filter.
func HasSticky(cfg *ir.Config, res *Resources) bool {
	bad := map[string]bool{}
	for id := range res.RouteErrors {
		bad[id] = true
	}
	return hasSticky(cfg, bad)
}
