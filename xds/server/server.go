// Package server serves the translated configuration over xDS (go-control-plane): ADS and
// the per-type services, SotW and delta, one snapshot per node group (edge, sidecar, and
// proxyless gRPC clients), endpoints through a linear cache so an instance going up or down
// pushes EDS only. It is a pipeline consumer: Prepare translates, builds, validates and
// checks consistency; commit publishes. A revision that fails leaves the last good one.
package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// Options configure the server.
type Options struct {
	Translate  translate.Options
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (service TTLs, NACK times); default time.Now.
	Now func() time.Time
}

// Server is the xDS server and pipeline consumer.
type Server struct {
	opts      Options
	log       *slog.Logger
	m         *metrics
	tracker   *tracker
	snaps     cachev3.SnapshotCache // Envoy groups
	grpcSnaps cachev3.SnapshotCache // proxyless gRPC clients
	eds       *cachev3.LinearCache
	xds       serverv3.Server
	cancel    context.CancelFunc

	mu        sync.RWMutex
	published *state

	conflictMu  sync.Mutex
	conflictIdx *conflictIndex

	// buildMu serializes builds: the memos serve one build at a time.
	buildMu sync.Mutex
	// memos carry built resources from one revision to the next, one per flavor (the two
	// flavors build in parallel), and shared what both flavors build identically.
	memos  map[envoy.Flavor]*envoy.Memo
	shared *envoy.SharedMemo
	// last holds each group's output of the previous build: a resource list whose names
	// and content hashes did not change keeps its version, version map and cache index.
	last *lastBuild
}

// lastBuild is the previous build's output per group and its endpoint assignments by
// cluster (buildMu held).
type lastBuild struct {
	// valid is the last configuration that passed validation.
	valid   *ir.Config
	groups  map[string]*groupOut
	eds     map[string]types.Resource
	edsHash map[string]string
}

// state is one published configuration.
type state struct {
	revision uint64
	cfg      *ir.Config
	versions map[string]map[string]string // group -> type URL -> version
	edsHash  map[string]string            // cluster -> content hash
	// routeErrors: routes left out (translation or build), by id.
	routeErrors map[string]string
	// routeClusters: the clusters of each route.
	routeClusters map[string][]string
	// omitted: per group, the routes the group leaves out by design, with the reason
	// (envoy.Resources.Omitted): shown as OMITTED whether or not clients are connected.
	omitted map[string]map[string]string
	// hosts: the virtual hosts of each route, built on first use (status.go).
	hosts routeHosts
}

// New builds the server; call Register to serve it.
func New(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Translate.Now = o.Now
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: o, log: o.Logger, m: m,
		memos:  map[envoy.Flavor]*envoy.Memo{envoy.FlavorEnvoy: envoy.NewMemo(), envoy.FlavorGRPC: envoy.NewMemo()},
		shared: envoy.NewSharedMemo(), last: &lastBuild{}}
	s.tracker = newTracker(o.Logger, m, o.Now)
	// Envoy subscribes to every listener and cluster: an ADS cache orders its responses
	// (CDS/EDS before LDS/RDS). Proxyless gRPC clients subscribe to single resources, which
	// an ADS-mode cache refuses to answer (it expects the full set), so they get their own.
	s.snaps = cachev3.NewSnapshotCache(true, groupHash{}, cacheLogger{o.Logger})
	s.grpcSnaps = cachev3.NewSnapshotCache(false, groupHash{}, cacheLogger{o.Logger})
	s.eds = cachev3.NewLinearCache(resourcev3.EndpointType, cachev3.WithVersionPrefix("eds-"), cachev3.WithLogger(cacheLogger{o.Logger}))
	classify := func(typeURL string, n *corev3.Node) string {
		switch {
		case typeURL == resourcev3.EndpointType:
			return "eds"
		case GroupOf(n) == GRPCGroup:
			return "grpc"
		}
		return "envoy"
	}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return classify(r.GetTypeUrl(), r.GetNode()) },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return classify(r.GetTypeUrl(), r.GetNode()) },
		Caches:        map[string]cachev3.Cache{"eds": s.eds, "envoy": s.snaps, "grpc": s.grpcSnaps},
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.xds = serverv3.NewServer(ctx, mux, s.tracker)
	return s, nil
}

// Register adds ADS and the per-type discovery services to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
}

// Close stops the server's background work.
func (s *Server) Close() error {
	s.cancel()
	return nil
}

// Name is the pipeline consumer name.
func (s *Server) Name() string { return "xds" }

// Ready reports whether a configuration has been published.
func (s *Server) Ready() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.published == nil {
		return errors.New("no xDS configuration published yet")
	}
	return nil
}

// Nodes lists the connected xDS clients.
func (s *Server) Nodes() []NodeInfo { return s.tracker.Nodes() }

// prepared is a built, validated, not yet published configuration.
type prepared struct {
	st    *state
	snaps map[string]*cachev3.Snapshot // without EDS
	eds   map[string]types.Resource
}

var snapTypes = []struct {
	rt  types.ResponseType
	url string
}{
	{types.Listener, resourcev3.ListenerType},
	{types.Route, resourcev3.RouteType},
	{types.Cluster, resourcev3.ClusterType},
}

// Prepare translates and builds every group's snapshot, validates it and checks its
// consistency. Route-level problems leave the route out; any other problem rejects the
// revision (the last good snapshot stays).
func (s *Server) Prepare(_ context.Context, snap *model.Snapshot) (func(), error) {
	start := time.Now()
	p, err := s.build(snap)
	if err != nil {
		return nil, err
	}
	s.m.build.Observe(time.Since(start).Seconds())
	return func() { s.publish(p) }, nil
}

// Check is Prepare without the publish and the build metric (pipeline.Checker): the API
// runs it on the revision a write would make, so a write the xDS configuration would refuse
// is refused before it is stored.
func (s *Server) Check(_ context.Context, snap *model.Snapshot) error {
	_, err := s.build(snap)
	return err
}

// PrepareRevision is Prepare over the pipeline's IR (pipeline.RevisionConsumer): the model
// is translated once for every consumer.
func (s *Server) PrepareRevision(_ context.Context, rev *pipeline.Revision) (func(), error) {
	start := time.Now()
	p, err := s.buildIR(rev.Snap.Revision, rev.IR)
	if err != nil {
		return nil, err
	}
	s.m.build.Observe(time.Since(start).Seconds())
	return func() { s.publish(p) }, nil
}

// CheckRevision is Check over the pipeline's IR (pipeline.RevisionChecker).
func (s *Server) CheckRevision(_ context.Context, rev *pipeline.Revision) error {
	_, err := s.buildIR(rev.Snap.Revision, rev.IR)
	return err
}

func (s *Server) buildIR(revision uint64, cfg *ir.Config) (*prepared, error) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	return buildConfig(revision, cfg, s.memos, s.shared, s.last)
}

// build translates and builds one model snapshot without publishing it (benchmarks, dry runs).
// Routes and clusters whose IR did not change since the previous build are taken from the
// memos: not rebuilt, not validated, not hashed again.
func (s *Server) build(snap *model.Snapshot) (*prepared, error) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	return buildSnapshot(snap, s.opts.Translate, s.memos, s.shared, s.last)
}

// buildSnapshot is build with explicit memos (nil memos: everything is built afresh).
func buildSnapshot(snap *model.Snapshot, to translate.Options, memos map[envoy.Flavor]*envoy.Memo, shared *envoy.SharedMemo, last *lastBuild) (*prepared, error) {
	cfg, err := translate.Translate(snap, to)
	if err != nil {
		return nil, err
	}
	return buildConfig(snap.Revision, cfg, memos, shared, last)
}

// buildConfig builds, validates and hashes the resources of one IR. last (nil: none) holds
// the previous build's groups and receives this one's.
func buildConfig(revision uint64, cfg *ir.Config, memos map[envoy.Flavor]*envoy.Memo, shared *envoy.SharedMemo, last *lastBuild) (*prepared, error) {
	var valid *ir.Config
	if last != nil {
		valid = last.valid
	}
	if err := validateConfig(cfg, valid); err != nil {
		return nil, fmt.Errorf("translated configuration is invalid: %w", err)
	}
	if last != nil {
		last.valid = cfg
	}
	p := &prepared{
		st: &state{revision: revision, cfg: cfg, versions: map[string]map[string]string{}, edsHash: map[string]string{},
			routeErrors: map[string]string{}, routeClusters: map[string][]string{}, omitted: map[string]map[string]string{}},
		snaps: map[string]*cachev3.Snapshot{},
		eds:   map[string]types.Resource{},
	}
	for id, e := range cfg.RouteErrors {
		p.st.routeErrors[id] = e
	}
	for _, c := range cfg.Clusters {
		if c.RouteID != "" {
			p.st.routeClusters[c.RouteID] = append(p.st.routeClusters[c.RouteID], c.Name)
		}
	}
	// The Envoy groups (edge, sidecar: same routes and clusters, their own listener) and the
	// gRPC group are built in parallel.
	var envoyGroups, grpcGroups []Group
	for _, g := range Groups {
		if g.Flavor == envoy.FlavorGRPC {
			grpcGroups = append(grpcGroups, g)
		} else {
			envoyGroups = append(envoyGroups, g)
		}
	}
	var outs [2][]*groupOut
	var errs [2]error
	if shared != nil {
		shared.Begin()
		defer shared.End()
	}
	var wg sync.WaitGroup
	for i, gs := range [][]Group{envoyGroups, grpcGroups} {
		if len(gs) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = buildGroups(cfg, gs, memos[gs[0].Flavor], shared, last)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	// Endpoint assignments of the same cluster are identical in every group (built from the
	// same IR endpoints): the first one is kept.
	order := append(outs[1], outs[0]...)
	for _, o := range order {
		for id, e := range o.res.RouteErrors {
			p.st.routeErrors[id] = e
		}
		p.snaps[o.group.Name] = o.snap
		p.st.versions[o.group.Name] = o.versions
		if len(o.res.Omitted) > 0 {
			p.st.omitted[o.group.Name] = o.res.Omitted
		}
	}
	if eds, hashes, ok := last.sameEndpoints(order); ok {
		p.eds, p.st.edsHash = eds, hashes
	} else {
		for _, o := range order {
			for _, e := range o.res.Endpoints {
				if _, ok := p.eds[e.ClusterName]; ok {
					continue
				}
				p.eds[e.ClusterName], p.st.edsHash[e.ClusterName] = e, envoy.Version(o.res.EndpointHashes[e.ClusterName])
			}
		}
	}
	if last != nil {
		last.groups = map[string]*groupOut{}
		for _, o := range order {
			last.groups[o.group.Name] = o
		}
		last.eds, last.edsHash = p.eds, p.st.edsHash
	}
	return p, nil
}

// validateConfig is cfg.Validate() where valid (nil: none) is a configuration that passed
// it: the parts of cfg that are the same as valid's (the same IR objects, which are
// immutable, or equal values) are not checked again. Config.Validate reads the listener, the
// control plane and OTLP addresses, the virtual hosts and their routes, the clusters, the
// service hosts and the authz part; the clusters' duplicate names and every reference
// depend on names only. So when the top-level values, the virtual hosts, the service hosts
// and the cluster names are those of valid, only the clusters that are other objects and
// the authz part are checked. On any problem the whole Config.Validate runs, so the error
// is its own. TestValidateConfigReadsKnownFields fails when ir.Config gains a field.
func validateConfig(cfg, valid *ir.Config) error {
	if valid == nil || cfg.Listener != valid.Listener || cfg.ControlPlane != valid.ControlPlane ||
		(cfg.OTLP == nil) != (valid.OTLP == nil) || (cfg.OTLP != nil && *cfg.OTLP != *valid.OTLP) ||
		len(cfg.VirtualHosts) != len(valid.VirtualHosts) || len(cfg.ServiceHosts) != len(valid.ServiceHosts) ||
		len(cfg.Clusters) != len(valid.Clusters) {
		return cfg.Validate()
	}
	for i, vh := range cfg.VirtualHosts {
		if v := valid.VirtualHosts[i]; v != vh && (v.Name != vh.Name || !slices.Equal(v.Domains, vh.Domains) || !slices.Equal(v.Routes, vh.Routes)) {
			return cfg.Validate()
		}
	}
	for i, sh := range cfg.ServiceHosts {
		if *sh != *valid.ServiceHosts[i] {
			return cfg.Validate()
		}
	}
	for i, c := range cfg.Clusters {
		v := valid.Clusters[i]
		if c == v {
			continue
		}
		if c.Name != v.Name || c.Validate() != nil {
			return cfg.Validate()
		}
	}
	if cfg.Authz != valid.Authz && cfg.Authz.Validate() != nil {
		return cfg.Validate()
	}
	return nil
}

// sameEndpoints returns the previous build's endpoint assignments and their versions when
// the groups hold the same assignments by name and position: the very same ones (a shared
// map, read only), or with the assignments whose protos changed (a heartbeat) replaced in a
// copy. ok false: the groups' assignments must be gathered again.
func (l *lastBuild) sameEndpoints(order []*groupOut) (eds map[string]types.Resource, hashes map[string]string, ok bool) {
	if l == nil || l.eds == nil || len(l.groups) != len(order) {
		return nil, nil, false
	}
	eds, hashes = l.eds, l.edsHash
	copied := false
	set := map[string]bool{}
	for _, o := range order {
		prev := l.groups[o.group.Name]
		if prev == nil || len(prev.res.Endpoints) != len(o.res.Endpoints) {
			return nil, nil, false
		}
		if sameSlice(prev.res.Endpoints, o.res.Endpoints) {
			continue
		}
		for i, e := range o.res.Endpoints {
			pe := prev.res.Endpoints[i]
			if e == pe {
				continue
			}
			if e.ClusterName != pe.ClusterName {
				return nil, nil, false
			}
			if !copied {
				eds, hashes, copied = maps.Clone(eds), maps.Clone(hashes), true
			}
			if !set[e.ClusterName] {
				set[e.ClusterName] = true
				eds[e.ClusterName], hashes[e.ClusterName] = e, envoy.Version(o.res.EndpointHashes[e.ClusterName])
			}
		}
	}
	return eds, hashes, true
}

// sameNames reports whether two lists of endpoint assignments name the same clusters in order.
func sameNames(a, b []*endpointv3.ClusterLoadAssignment) bool {
	if sameSlice(a, b) {
		return true
	}
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ClusterName != b[i].ClusterName {
			return false
		}
	}
	return true
}

// sameSlice reports whether a and b are the same slice (same array, same length).
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// groupOut is one node group's built snapshot.
type groupOut struct {
	group    Group
	res      *envoy.Resources
	versions map[string]string
	snap     *cachev3.Snapshot
	// vmap is the per-resource version map of each type (delta xDS).
	vmap map[string]map[string]string
	// lists are, per snapTypes list, the names and content hashes of its resources in order
	// and the version, version map and cache index made from them: the next build keeps
	// these when its names and hashes are the same (own copies: the published snapshot and
	// state are not read back).
	lists [3]builtList
}

// builtList is one resource list of a group's snapshot.
type builtList struct {
	keys    []nameHash
	version string
	vmap    map[string]string
	index   cachev3.Resources
}

// nameHash is a resource's name and content hash.
type nameHash struct {
	name string
	hash uint64
}

// buildGroups builds groups of one flavor; groups after the first share its routes,
// clusters and endpoints (the same protos, versions and version maps) and get their own
// listener.
func buildGroups(cfg *ir.Config, gs []Group, memo *envoy.Memo, shared *envoy.SharedMemo, last *lastBuild) ([]*groupOut, error) {
	var out []*groupOut
	for _, g := range gs {
		o := &groupOut{group: g, versions: map[string]string{}, vmap: map[string]map[string]string{}}
		var prev *groupOut
		if last != nil {
			prev = last.groups[g.Name] // read only: written after every group is built
		}
		var first *groupOut
		if len(out) > 0 {
			first = out[0]
		}
		if first != nil {
			l, err := envoy.HTTPListener(cfg, envoy.Options{Flavor: g.Flavor, StatPrefix: g.StatPrefix}, envoy.HasSticky(cfg, first.res))
			if err != nil {
				return nil, fmt.Errorf("group %s: %w", g.Name, err)
			}
			lh, err := envoy.HashMessage(l)
			if err != nil {
				return nil, fmt.Errorf("group %s: %w", g.Name, err)
			}
			c := *first.res
			c.Listeners = append(append(c.Listeners[:0:0], l), first.res.Listeners[1:]...)
			c.ListenerHashes = map[string]uint64{}
			for k, v := range first.res.ListenerHashes {
				c.ListenerHashes[k] = v
			}
			c.ListenerHashes[l.Name] = lh
			o.res = &c
		} else {
			res, err := envoy.Build(cfg, envoy.Options{Flavor: g.Flavor, StatPrefix: g.StatPrefix, Memo: memo, Shared: shared})
			if err != nil {
				return nil, fmt.Errorf("group %s: %w", g.Name, err)
			}
			o.res = res
		}
		// The same lists as the previous build's (a memo returns the Resources of an unchanged
		// input again): what was made from them stands.
		same := [3]bool{}
		if prev != nil {
			same = [3]bool{sameSlice(prev.res.Listeners, o.res.Listeners), sameSlice(prev.res.Routes, o.res.Routes), sameSlice(prev.res.Clusters, o.res.Clusters)}
		}
		lists := [][]types.Resource{toResources(o.res.Listeners), toResources(o.res.Routes), toResources(o.res.Clusters)}
		hashes := []map[string]uint64{o.res.ListenerHashes, o.res.RouteHashes, o.res.ClusterHashes}
		for i, t := range snapTypes {
			switch {
			case first != nil && t.url != resourcev3.ListenerType:
				o.lists[i] = first.lists[i] // the same index, not rebuilt
			case same[i]:
				o.lists[i] = prev.lists[i]
			case prev != nil && prev.lists[i].sameAs(lists[i], hashes[i]):
				// The same resources by name and content hash: the previous version, version
				// map and index stand (their protos hold the same content).
				o.lists[i] = prev.lists[i]
			default:
				keys, err := keysOf(lists[i], hashes[i])
				if err != nil {
					return nil, fmt.Errorf("group %s: %w", g.Name, err)
				}
				v, vm := versionsOf(keys)
				o.lists[i] = builtList{keys: keys, version: v, vmap: vm, index: cachev3.NewResources(v, lists[i])}
			}
			o.versions[t.url], o.vmap[t.url] = o.lists[i].version, o.lists[i].vmap
		}
		// Consistency depends on the listeners, route configurations and clusters and on the
		// names of the endpoint assignments: when all are those the previous build checked,
		// its result stands.
		checked := same[0] && same[1] && same[2] && sameNames(prev.res.Endpoints, o.res.Endpoints)
		if !checked && (first == nil || !sameRouteNames(first.res.Listeners[0], o.res.Listeners[0])) {
			if err := consistent(g, o.res, toResources(o.res.Endpoints)); err != nil {
				return nil, fmt.Errorf("group %s: snapshot is not consistent: %w", g.Name, err)
			}
		}
		o.snap = &cachev3.Snapshot{VersionMap: map[string]map[string]string{}}
		for i, t := range snapTypes {
			o.snap.Resources[t.rt] = o.lists[i].index
			o.snap.VersionMap[t.url] = o.lists[i].vmap
		}
		out = append(out, o)
	}
	return out, nil
}

// sameRouteNames reports whether two Envoy listeners reference the same route configurations
// (a group sharing the first group's other resources is then consistent when the first is).
func sameRouteNames(a, b types.Resource) bool {
	ra, rb := cachev3.GetResourceReferences(map[string]types.ResourceWithTTL{"a": {Resource: a}}), cachev3.GetResourceReferences(map[string]types.ResourceWithTTL{"b": {Resource: b}})
	return equalRefs(ra, rb)
}

func equalRefs(a, b map[resourcev3.Type]map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for t, na := range a {
		nb := b[t]
		if len(na) != len(nb) {
			return false
		}
		for n := range na {
			if !nb[n] {
				return false
			}
		}
	}
	return true
}

func toResources[T types.Resource](list []T) []types.Resource {
	out := make([]types.Resource, len(list))
	for i, r := range list {
		out[i] = r
	}
	return out
}

// keysOf lists the name and content hash of each resource of a sorted list.
func keysOf(list []types.Resource, hashes map[string]uint64) ([]nameHash, error) {
	keys := make([]nameHash, len(list))
	for i, r := range list {
		name := cachev3.GetResourceName(r)
		v, ok := hashes[name]
		if !ok {
			return nil, fmt.Errorf("resource %s has no content hash", name)
		}
		keys[i] = nameHash{name, v}
	}
	return keys, nil
}

// sameAs reports whether list holds resources of the same names and content hashes, in
// the same order, as l.
func (l *builtList) sameAs(list []types.Resource, hashes map[string]uint64) bool {
	if len(l.keys) != len(list) {
		return false
	}
	for i, r := range list {
		name := cachev3.GetResourceName(r)
		if v, ok := hashes[name]; !ok || l.keys[i] != (nameHash{name, v}) {
			return false
		}
	}
	return true
}

// versionsOf is the version of a sorted resource list (a hash of each resource's name and
// content hash: identical content never pushes) and its per-resource version map.
func versionsOf(keys []nameHash) (string, map[string]string) {
	h := xxhash.New()
	var n [8]byte
	vm := make(map[string]string, len(keys))
	for _, k := range keys {
		binary.LittleEndian.PutUint64(n[:], uint64(len(k.name)))
		_, _ = h.Write(n[:])
		_, _ = h.WriteString(k.name)
		binary.LittleEndian.PutUint64(n[:], k.hash)
		_, _ = h.Write(n[:])
		vm[k.name] = envoy.Version(k.hash)
	}
	return envoy.Version(h.Sum64()), vm
}

// publish swaps the prepared configuration in: new endpoints first, then each group's
// snapshot when one of its versions changed, then endpoint removals. Unchanged content
// pushes nothing.
func (s *Server) publish(p *prepared) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.published
	update := map[string]types.Resource{}
	var remove []string
	for name, r := range p.eds {
		if prev == nil || prev.edsHash[name] != p.st.edsHash[name] {
			update[name] = r
		}
	}
	if prev != nil {
		for name := range prev.edsHash {
			if _, ok := p.eds[name]; !ok {
				remove = append(remove, name)
			}
		}
	}
	sort.Strings(remove)
	if len(update) > 0 {
		if err := s.eds.UpdateResources(update, nil); err != nil {
			s.log.Error("xDS endpoint update failed", "error", err.Error())
		}
	}
	for _, g := range Groups {
		if prev != nil && equalVersions(prev.versions[g.Name], p.st.versions[g.Name]) {
			continue
		}
		c := s.snaps
		if g.Flavor == envoy.FlavorGRPC {
			c = s.grpcSnaps
		}
		if err := c.SetSnapshot(context.Background(), g.Name, p.snaps[g.Name]); err != nil {
			s.log.Error("xDS snapshot update failed", "group", g.Name, "error", err.Error())
		}
	}
	if len(remove) > 0 {
		if err := s.eds.UpdateResources(nil, remove); err != nil {
			s.log.Error("xDS endpoint removal failed", "error", err.Error())
		}
	}
	if len(p.st.routeErrors) > 0 {
		s.log.Warn("routes left out of the xDS configuration", "revision", p.st.revision, "count", len(p.st.routeErrors))
	}
	for _, g := range Groups {
		if g.Flavor != envoy.FlavorGRPC {
			continue // only the gRPC flavor leaves routes out by design
		}
		var before map[string]string
		if prev != nil {
			before = prev.omitted[g.Name]
		}
		s.logOmitted(g.Name, p.st.revision, before, p.st.omitted[g.Name])
	}
	s.published = p.st
}

// maxLoggedOmitted bounds the route ids logOmitted names: the count says how many there are.
const maxLoggedOmitted = 100

// logOmitted says, at Info, which routes a gRPC group leaves out by design (a feature
// proxyless clients cannot apply; the reasons are in each route's status.xds), once per
// change of that set of ids: a revision that leaves the same routes out (a service
// heartbeat, an unrelated write) says nothing again.
func (s *Server) logOmitted(group string, revision uint64, before, now map[string]string) {
	if len(before) == len(now) {
		same := true
		for id := range now {
			if _, ok := before[id]; !ok {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	ids := slices.Sorted(maps.Keys(now))
	attrs := []any{"group", group, "revision", revision, "count", len(ids)}
	if len(ids) > maxLoggedOmitted {
		attrs = append(attrs, "routes", ids[:maxLoggedOmitted], "routes_not_named", len(ids)-maxLoggedOmitted)
	} else {
		attrs = append(attrs, "routes", ids)
	}
	s.log.Info("routes not served to proxyless gRPC clients, by design (each route's status.xds says why)", attrs...)
}

func equalVersions(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// consistent is go-control-plane's Snapshot.Consistent (every route configuration a
// listener names and every endpoint assignment an EDS cluster names is present, and nothing
// else of those two types), computed from the built lists without indexing them again or
// allocating a set per cluster (TestConsistentAgreesWithGoControlPlane). It does not follow
// API listeners, so for gRPC groups their route configuration references are checked here.
func consistent(g Group, res *envoy.Resources, eps []types.Resource) error {
	if g.Flavor == envoy.FlavorGRPC {
		names := make(map[string]bool, len(res.Routes))
		for _, r := range res.Routes {
			names[r.GetName()] = true
		}
		if len(res.Routes) != len(res.Listeners) {
			return fmt.Errorf("%d API listeners, %d route configurations", len(res.Listeners), len(res.Routes))
		}
		for _, l := range res.Listeners {
			if l.GetApiListener() == nil || !names[envoy.GRPCRouteConfigPrefix+l.GetName()] {
				return fmt.Errorf("listener %s is not an API listener with its route configuration", l.GetName())
			}
		}
		return consistentRefs(nil, nil, res.Clusters, eps)
	}
	return consistentRefs(toResources(res.Listeners), toResources(res.Routes), res.Clusters, eps)
}

// consistentRefs is Snapshot.Consistent over listeners, route configurations, clusters and
// endpoint assignments.
func consistentRefs(listeners, routes []types.Resource, clusters []*clusterv3.Cluster, eps []types.Resource) error {
	ls := make(map[string]types.ResourceWithTTL, len(listeners))
	for _, l := range listeners {
		ls[cachev3.GetResourceName(l)] = types.ResourceWithTTL{Resource: l}
	}
	routeRefs := cachev3.GetResourceReferences(ls)[resourcev3.RouteType]
	if err := refsMatch(resourcev3.RouteType, routeRefs, routes); err != nil {
		return err
	}
	edsRefs := make(map[string]bool, len(clusters))
	for _, c := range clusters {
		// cachev3 getClusterReferences: an EDS cluster names its service name, else itself.
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		if sn := c.GetEdsClusterConfig().GetServiceName(); sn != "" {
			edsRefs[sn] = true
		} else {
			edsRefs[c.GetName()] = true
		}
	}
	return refsMatch(resourcev3.EndpointType, edsRefs, eps)
}

// refsMatch: the referenced names are exactly the names of list.
func refsMatch(typeURL string, refs map[string]bool, list []types.Resource) error {
	names := make(map[string]bool, len(list))
	for _, r := range list {
		names[cachev3.GetResourceName(r)] = true
	}
	if len(refs) != len(names) {
		return fmt.Errorf("mismatched %q reference and resource lengths: %d != %d", typeURL, len(refs), len(names))
	}
	for n := range refs {
		if !names[n] {
			return fmt.Errorf("inconsistent %q reference: %q not listed", typeURL, n)
		}
	}
	return nil
}
