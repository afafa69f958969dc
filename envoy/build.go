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

	"github.com/api-gateway/api-gateway/ir"
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
	// Memo, when set, carries built resources from one Build to the next (see Memo).
	Memo *Memo
	// Shared, when set, holds the resources this Build shares with builds of other flavors
	// (see SharedMemo); the caller begins and ends its generations.
	Shared *SharedMemo
}

// Resources are the built xDS resources, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// RouteErrors: routes dropped because a resource of theirs failed validation.
	RouteErrors map[string]string
	// Omitted (gRPC flavor): routes left out by design, by id, with the reason naming the
	// field a proxyless client cannot apply (grpcRouteOmission, grpcClusterOmission). They
	// are not errors: the Envoy flavor serves them. Their clusters are left out too.
	Omitted map[string]string
	// Content hashes of every resource by name (equal hash, equal resource), the per-resource
	// versions: computed from the IR, not by marshalling the resources.
	ListenerHashes, RouteHashes, ClusterHashes, EndpointHashes map[string]uint64
}

// ByKind returns the resources as messages, per kind in xDS order (listeners, routes,
// clusters, endpoints).
func (r *Resources) ByKind() [4][]proto.Message {
	var out [4][]proto.Message
	for _, m := range r.Listeners {
		out[0] = append(out[0], m)
	}
	for _, m := range r.Routes {
		out[1] = append(out[1], m)
	}
	for _, m := range r.Clusters {
		out[2] = append(out[2], m)
	}
	for _, m := range r.Endpoints {
		out[3] = append(out[3], m)
	}
	return out
}

// builder accumulates the first error of the resource being built.
type builder struct {
	o   Options
	cfg *ir.Config
	err error
	h   *ir.Hasher // for the route configuration hashes
	// packed are the Anys this builder packed, with their messages (for the runtime rules).
	packed []packedAny
	// omittedClusters: the gRPC flavor's clusters left out (grpcClusterOmission), by name.
	omittedClusters map[string]string
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
	b.packed = append(b.packed, packedAny{a, m})
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

// builtRoute is a built route and its content hash.
type builtRoute struct {
	r    *routev3.Route
	hash uint64
}

// Build turns the IR into resources for one flavor. Every route and cluster is built and
// validated once (with o.Memo: once for as long as its IR does not change; a Build of the
// same input as the previous one returns the same Resources). The Resources are read only:
// a memo shares them, and the protos in them, with later builds.
func Build(cfg *ir.Config, o Options) (*Resources, error) {
	if o.StatPrefix == "" {
		o.StatPrefix = "ingress_http"
	}
	h := ir.NewHasher()
	memo := o.Memo
	if res, ok := memo.recall(h, cfg, o); ok {
		return res, nil
	}
	memo.begin()
	defer memo.end()
	out := &Resources{RouteErrors: map[string]string{}, Omitted: map[string]string{}, ListenerHashes: map[string]uint64{}, RouteHashes: map[string]uint64{},
		ClusterHashes: make(map[string]uint64, len(cfg.Clusters)+2), EndpointHashes: make(map[string]uint64, len(cfg.Clusters))}
	bad := map[string]bool{}
	// The gRPC flavor leaves out, first, what a proxyless client cannot apply
	// (GRPCOmissions): the clusters of those routes are not built.
	var referenced map[string]bool
	omittedCluster := map[string]string{}
	if o.Flavor == FlavorGRPC {
		om := grpcOmissions(cfg)
		out.Omitted, referenced, omittedCluster = om.routes, om.referenced, om.clusters
	} else {
		referenced = referencedClusters(cfg, nil, true)
	}
	// Clusters first: a route whose cluster is invalid is dropped as a whole.
	type built struct {
		c   *memoEntry
		cla *memoEntry
		src *ir.Cluster
	}
	clusters := make([]built, 0, len(cfg.Clusters))
	var hardErr error
	var hardName string
	errCluster := map[string]string{}
	for i := range cfg.Clusters {
		// With a shared memo, the gRPC flavor walks the clusters from the end: two builds
		// running in parallel then build the shared clusters half each instead of racing
		// for the same ones. The output is sorted either way.
		c := cfg.Clusters[i]
		if o.Shared != nil && o.Flavor == FlavorGRPC {
			c = cfg.Clusters[len(cfg.Clusters)-1-i]
		}
		if !referenced[c.Name] || omittedCluster[c.Name] != "" {
			continue
		}
		if _, omitted := out.Omitted[c.RouteID]; omitted && c.RouteID != "" {
			continue
		}
		ce, cla := clusterEntry(h, cfg, o, c)
		err := ce.err
		if err == nil && cla != nil {
			err = cla.err
		}
		if err != nil {
			// Whatever the walking order: the error of the first service cluster by name,
			// and for a route the message of its last cluster by name.
			if c.RouteID == "" {
				if hardErr == nil || c.Name < hardName {
					hardErr, hardName = fmt.Errorf("cluster %s: %w", c.Name, err), c.Name
				}
				continue
			}
			bad[c.RouteID] = true
			if c.Name > errCluster[c.RouteID] {
				errCluster[c.RouteID] = c.Name
				out.RouteErrors[c.RouteID] = fmt.Sprintf("cluster %s: %v", c.Name, err)
			}
			continue
		}
		clusters = append(clusters, built{ce, cla, c})
	}
	if hardErr != nil {
		return nil, hardErr
	}
	// Routes: each IR route is built and validated once (a route may serve several hosts).
	envoyRoutes := map[*ir.Route]builtRoute{}
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if _, omitted := out.Omitted[r.RouteID]; bad[r.RouteID] || omitted {
				continue
			}
			if _, done := envoyRoutes[r]; done {
				continue
			}
			e := memo.routeOf(h, r, o.Flavor)
			if e == nil {
				e = routeEntryByContent(h, cfg, o, r)
			}
			memo.putRoute(r, o.Flavor, e)
			if e.err != nil {
				bad[r.RouteID] = true
				out.RouteErrors[r.RouteID] = fmt.Sprintf("route %s: %v", r.Name, e.err)
				continue
			}
			envoyRoutes[r] = builtRoute{e.route, e.hash}
		}
	}
	out.Clusters = make([]*clusterv3.Cluster, 0, len(clusters)+2)
	out.Endpoints = make([]*endpointv3.ClusterLoadAssignment, 0, len(clusters))
	for _, c := range clusters {
		if c.src.RouteID != "" && bad[c.src.RouteID] {
			continue
		}
		out.Clusters = append(out.Clusters, c.c.cluster)
		out.ClusterHashes[c.src.Name] = c.c.hash
		if c.cla != nil {
			out.Endpoints = append(out.Endpoints, c.cla.cla)
			out.EndpointHashes[c.src.Name] = c.cla.hash
		}
	}
	b := &builder{o: o, cfg: cfg, h: h, omittedClusters: omittedCluster}
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
	memo.remember(h, cfg, o, out)
	return out, nil
}

// GRPCOmissions is what the gRPC flavor leaves out of cfg by design (Resources.Omitted of a
// FlavorGRPC Build of cfg, which calls it): route id -> reason naming the field a proxyless
// client cannot apply. Pure, so `validate -f` and the served status cannot disagree.
func GRPCOmissions(cfg *ir.Config) map[string]string {
	return grpcOmissions(cfg).routes
}

// omissions is the gRPC flavor's first pass over the IR.
type omissions struct {
	// routes: the routes left out, by id, with the reason (Resources.Omitted).
	routes map[string]string
	// clusters: the referenced clusters left out (grpcClusterOmission), by name.
	clusters map[string]string
	// referenced: the clusters the flavor serves (unless left out): those of the routes
	// not left out for a condition, and those of the registered services.
	referenced map[string]bool
}

// grpcOmissions leaves out, first, the routes a proxyless client cannot apply (the reason
// of the route's first condition that has one; their clusters are not built), then the
// clusters it cannot use: with their route (the reason of the route's first such cluster
// by name), or, for a registered service, with the service's virtual host and API listener.
func grpcOmissions(cfg *ir.Config) omissions {
	om := omissions{routes: map[string]string{}, clusters: map[string]string{}}
	omittedAt := map[string]int{}
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if why := grpcRouteOmission(r); why != "" {
				i := conditionIndex(r)
				if at, seen := omittedAt[r.RouteID]; !seen || i < at {
					omittedAt[r.RouteID], om.routes[r.RouteID] = i, why
				}
			}
		}
	}
	om.referenced = referencedClusters(cfg, om.routes, false)
	for _, s := range cfg.ServiceHosts {
		om.referenced[s.Cluster] = true
	}
	omittedBy := map[string]string{}
	for _, c := range cfg.Clusters {
		if !om.referenced[c.Name] {
			continue
		}
		if why := grpcClusterOmission(c); why != "" {
			om.clusters[c.Name] = why
			if c.RouteID != "" {
				if by, seen := omittedBy[c.RouteID]; !seen || c.Name < by {
					omittedBy[c.RouteID], om.routes[c.RouteID] = c.Name, why
				}
			}
		}
	}
	return om
}

// referencedClusters are the clusters of cfg's routes but those of the routes in omitted,
// with their mirror clusters when mirrors (the Envoy flavor: proxyless clients do not
// mirror, and the gRPC flavor sends no mirror policy).
func referencedClusters(cfg *ir.Config, omitted map[string]string, mirrors bool) map[string]bool {
	referenced := make(map[string]bool, len(cfg.Clusters))
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if _, omitted := omitted[r.RouteID]; omitted {
				continue
			}
			for _, be := range r.Backends {
				referenced[be.Cluster] = true
			}
			if r.Mirror != nil && mirrors {
				referenced[r.Mirror.Cluster] = true
			}
		}
	}
	return referenced
}

// routeEntryByContent builds (or recalls by its content hash) a validated route.
func routeEntryByContent(h *ir.Hasher, cfg *ir.Config, o Options, r *ir.Route) *memoEntry {
	key := keyOf(h, kindRoute, o.Flavor)
	key.Route(r)
	k := key.Sum64()
	if e := o.Memo.get(k, r.Name); e != nil {
		return e
	}
	b := &builder{o: o, cfg: cfg}
	er := b.route(r)
	if b.err == nil {
		b.fail(Validate(er))
	}
	if b.err == nil {
		// What Envoy refuses at load time although ValidateAll passes.
		b.fail(checkRouteRuntime(er, b.packed))
	}
	e := &memoEntry{name: r.Name, route: er, hash: k, err: b.err}
	o.Memo.put(k, e)
	return e
}

// clusterKeys are the memo keys of a cluster and (for EDS, else 0) of its load assignment.
// The cluster's key leaves out the endpoints of an EDS cluster, so an instance going up or
// down rebuilds only the load assignment and leaves the cluster's version alone.
func clusterKeys(h *ir.Hasher, c *ir.Cluster, f Flavor) (k, claKey uint64) {
	eds := usesEDS(c, f)
	kf := f
	if anyFlavorCluster(c) {
		kf = flavorAny
	}
	key := keyOf(h, kindCluster, kf)
	key.Cluster(c, !eds)
	k = key.Sum64()
	if eds {
		// The same for every flavor: groups share endpoint assignments by name.
		key = keyOf(h, kindCLA, flavorAny)
		key.Str(c.Name)
		key.Endpoints(c.Endpoints)
		claKey = key.Sum64()
	}
	return k, claKey
}

// anyFlavorCluster: what the gRPC flavor changes (LOGICAL_DNS for a host name, no TLS, no
// health checks, no RANDOM) does not apply: every flavor builds the same cluster, built once
// for all.
func anyFlavorCluster(c *ir.Cluster) bool {
	return c.Discovery == ir.DiscoveryEDS && !c.TLS && c.HealthCheck == nil && c.LB != ir.LBRandom
}

// clusterEntry builds (or recalls) a validated cluster and, for EDS, its load assignment.
// The very IR cluster of the previous build is recalled without hashing it (Memo).
func clusterEntry(h *ir.Hasher, cfg *ir.Config, o Options, c *ir.Cluster) (ce, cla *memoEntry) {
	p, ok := o.Memo.clusterOf(h, c, o.Flavor)
	if !ok {
		p.c, p.cla = clusterEntryByContent(h, cfg, o, c)
	}
	o.Memo.putCluster(c, o.Flavor, p)
	return p.c, p.cla
}

// clusterEntryByContent is clusterEntry keyed by the cluster's content hash.
func clusterEntryByContent(h *ir.Hasher, cfg *ir.Config, o Options, c *ir.Cluster) (ce, cla *memoEntry) {
	eds := usesEDS(c, o.Flavor)
	anyFlavor := anyFlavorCluster(c)
	k, claKey := clusterKeys(h, c, o.Flavor)
	if eds {
		if cla = o.Memo.get(claKey, c.Name); cla == nil {
			if cla = o.Shared.get(claKey, c.Name); cla != nil {
				o.Memo.put(claKey, cla)
			}
		}
	}
	if ce = o.Memo.get(k, c.Name); ce == nil && anyFlavor {
		if ce = o.Shared.get(k, c.Name); ce != nil {
			o.Memo.put(k, ce)
		}
	}
	if ce != nil && (!eds || cla != nil) {
		return ce, cla
	}
	b := &builder{o: o, cfg: cfg}
	pc, builtCLA := b.cluster(c)
	if ce == nil {
		if b.err == nil {
			b.fail(Validate(pc))
		}
		if b.err == nil {
			b.fail(checkClusterRuntime(pc, b.packed))
		}
		ce = &memoEntry{name: c.Name, cluster: pc, hash: k, err: b.err}
		o.Memo.put(k, ce)
		if anyFlavor {
			o.Shared.put(k, ce)
		}
	}
	if eds && cla == nil {
		err := Validate(builtCLA)
		if err == nil {
			err = checkLoadAssignment(builtCLA)
		}
		cla = &memoEntry{name: c.Name, cla: builtCLA, hash: claKey, err: err}
		o.Memo.put(claKey, cla)
		o.Shared.put(claKey, cla)
	}
	return ce, cla
}

// envoyTop adds the HTTP listener, its route configuration and the control-plane clusters.
func (b *builder) envoyTop(out *Resources, routes map[*ir.Route]builtRoute, bad map[string]bool) error {
	rc, vhHash := b.routeConfig(EnvoyRouteConfigName, routes, bad, false)
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
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// The listener and the control-plane clusters are few and small: hashed by their bytes.
	for _, m := range []interface {
		proto.Message
		GetName() string
	}{l, cp, otel} {
		if m == (*clusterv3.Cluster)(nil) {
			continue
		}
		v, err := HashMessage(m)
		if err != nil {
			return err
		}
		if _, isL := m.(*listenerv3.Listener); isL {
			out.ListenerHashes[m.GetName()] = v
		} else {
			out.ClusterHashes[m.GetName()] = v
		}
	}
	if otel != nil {
		out.Clusters = append(out.Clusters, otel)
	}
	out.Routes = append(out.Routes, rc)
	out.RouteHashes[rc.Name] = b.routeConfigHash(rc, vhHash)
	out.Listeners = append(out.Listeners, l)
	out.Clusters = append(out.Clusters, cp)
	return nil
}

// routeConfigHash is a route configuration's content hash from its virtual hosts' hashes.
func (b *builder) routeConfigHash(rc *routev3.RouteConfiguration, vhHash map[*routev3.VirtualHost]uint64) uint64 {
	h := keyOf(b.h, kindRouteConfig, b.o.Flavor)
	h.Str(rc.Name)
	h.U64(uint64(len(rc.VirtualHosts)))
	for _, vh := range rc.VirtualHosts {
		h.U64(vhHash[vh])
	}
	return h.Sum64()
}

// grpcTop adds one API listener per dialable host, each with its own route configuration
// holding that host's virtual host (a named host always has one: from its routes, or the
// registered service of that name), so a client gets only what it can use.
func (b *builder) grpcTop(out *Resources, routes map[*ir.Route]builtRoute, bad map[string]bool) error {
	rc, vhHash := b.routeConfig("", routes, bad, true)
	vhosts := make(map[string]*routev3.VirtualHost, len(rc.VirtualHosts))
	for _, vh := range rc.VirtualHosts {
		for _, d := range vh.Domains {
			vhosts[d] = vh
		}
	}
	hosts := APIListenerHosts(b.cfg)
	out.Listeners = make([]*listenerv3.Listener, 0, len(hosts))
	out.Routes = make([]*routev3.RouteConfiguration, 0, len(hosts))
	for _, h := range hosts {
		vh := vhosts[h]
		if vh == nil {
			continue
		}
		k := keyOf(b.h, kindAPIListener, b.o.Flavor)
		k.Str(h)
		k.Bool(hasFault(b.cfg)) // the fault filter is in the chain
		key := k.Sum64()
		e := b.o.Memo.get(key, h)
		if e == nil {
			lb := &builder{o: b.o, cfg: b.cfg}
			l := lb.apiListener(h)
			if lb.err == nil {
				lb.fail(Validate(l))
			}
			e = &memoEntry{name: h, listener: l, hash: key, err: lb.err}
			b.o.Memo.put(key, e)
		}
		if e.err != nil {
			return fmt.Errorf("api listener %s: %w", h, e.err)
		}
		r := &routev3.RouteConfiguration{Name: GRPCRouteConfigPrefix + h, VirtualHosts: []*routev3.VirtualHost{vh}}
		if err := validateRouteConfigShell(r); err != nil {
			return fmt.Errorf("api listener %s: %w", h, err)
		}
		out.Listeners = append(out.Listeners, e.listener)
		out.ListenerHashes[h] = e.hash
		out.Routes = append(out.Routes, r)
		out.RouteHashes[r.Name] = b.routeConfigHash(r, vhHash)
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
	if err := checkVirtualHostDomains(rc); err != nil {
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
