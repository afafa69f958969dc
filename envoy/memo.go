package envoy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/api-gateway/api-gateway/ir"
)

// Memo remembers the routes, clusters, endpoint assignments and API listeners built (and
// validated) by the previous Build, keyed by the content hash of the IR they were built from
// (builders are pure functions of their IR value and the flavor). A Build with a Memo builds,
// validates and hashes only what changed since the previous one, so a one-route change costs
// O(changed) there; unchanged resources keep their proto pointers. Entries the latest Build
// did not use are dropped. A Memo serves one Build at a time.
//
// The memo also remembers which IR route and cluster (by pointer) each entry was built
// from, and the previous Build's input and Resources. A Build given the same *ir.Route or
// *ir.Cluster again (the memoizing translator hands out the same objects while their inputs
// do not change) takes its entry without hashing it, and a Build whose whole input is the
// same (a WAF ban changes nothing Envoy reads) returns the previous Resources, or a copy with
// the changed endpoint assignments (a heartbeat): the cost follows what changed, not the
// number of routes. That relies on IR objects being immutable once translated (see the ir
// package). In race-enabled builds (go test -race) every such reuse re-hashes the object and
// panics if it changed, so a mutation of the IR after translation fails the tests.
type Memo struct {
	prev, cur map[uint64]*memoEntry
	// The IR routes and clusters of the previous and current Build in the order Build met
	// them, with their entries: an object met again near its old position (a cursor skips a
	// few removed or added ones) is recalled without hashing it or looking it up.
	prevRoutes, curRoutes     []seqRoute
	prevClusters, curClusters []seqCluster
	routeAt, clusterAt        int // cursors into prevRoutes and prevClusters
	// verify: re-hash a reused IR object and panic if it changed (verifyReuse, or a test).
	verify bool
	// last is what the previous Build read and returned: a Build whose input is the same
	// returns the same Resources (see recall).
	last *lastBuild
}

// lastBuild is a Build's input, as far as its output depends on it (Build reads nothing of
// the Config but these fields), and its output.
type lastBuild struct {
	flavor     Flavor
	statPrefix string
	listener   ir.Listener
	control    ir.Address
	otlp       *ir.Address
	service    string
	vhosts     []*ir.VirtualHost
	hosts      []*ir.ServiceHost
	clusters   []*ir.Cluster
	keys       [][2]uint64 // per cluster: clusterKeys
	res        *Resources
	// routeKeys (verify only) is the content hash of every route of vhosts when built: a
	// route left out of the build (its cluster failed, or an earlier condition of it did) has
	// no memo entry, so the recall checks the routes against these.
	routeKeys map[*ir.Route]uint64
}

// seqRoute is an IR route and what one flavor built from it.
type seqRoute struct {
	r *ir.Route
	f Flavor
	e *memoEntry
}

// seqCluster is an IR cluster and what one flavor built from it.
type seqCluster struct {
	c *ir.Cluster
	f Flavor
	p clusterPair
}

// clusterPair is a built cluster and, for EDS, its load assignment.
type clusterPair struct{ c, cla *memoEntry }

// seqWindow is how far ahead of its cursor the memo looks for an IR object (routes or
// clusters removed since the previous Build).
const seqWindow = 8

// NewMemo returns an empty memo.
func NewMemo() *Memo {
	return &Memo{cur: map[uint64]*memoEntry{}, verify: verifyReuse}
}

// SharedMemo holds what builds of different flavors produce identically (endpoint
// assignments; EDS clusters without TLS, health checks or the random policy), so builds
// running in parallel for two flavors build and validate each such resource once. Its
// generations are the caller's: Begin before the builds of a revision, End after them.
type SharedMemo struct {
	mu sync.Mutex
	m  Memo
}

// NewSharedMemo returns an empty shared memo.
func NewSharedMemo() *SharedMemo { return &SharedMemo{m: *NewMemo()} }

// Begin starts a revision's builds: entries they do not use are dropped at End.
func (s *SharedMemo) Begin() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.begin()
}

// End ends a revision's builds.
func (s *SharedMemo) End() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.end()
}

// Len is the number of remembered resources.
func (s *SharedMemo) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.Len()
}

func (s *SharedMemo) get(key uint64, name string) *memoEntry {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.get(key, name)
}

func (s *SharedMemo) put(key uint64, e *memoEntry) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.put(key, e)
}

// memoEntry is one built resource (or the error that dropped it).
type memoEntry struct {
	name     string // guards against a (64-bit) hash collision
	route    *routev3.Route
	cluster  *clusterv3.Cluster
	cla      *endpointv3.ClusterLoadAssignment
	listener *listenerv3.Listener
	// hash is the resource's version (the key, or a narrower hash for clusters).
	hash uint64
	err  error
}

// Kinds of memoized resources, part of every key.
const (
	kindRoute uint64 = iota + 1
	kindCluster
	kindCLA
	kindAPIListener
	kindRouteConfig
	kindVirtualHost
)

// flavorAny keys a resource every flavor builds identically.
const flavorAny Flavor = -1

func (m *Memo) begin() {
	if m == nil {
		return
	}
	m.prev, m.cur = m.cur, make(map[uint64]*memoEntry, len(m.cur))
	m.prevRoutes, m.curRoutes = m.curRoutes, make([]seqRoute, 0, len(m.curRoutes))
	m.prevClusters, m.curClusters = m.curClusters, make([]seqCluster, 0, len(m.curClusters))
	m.routeAt, m.clusterAt = 0, 0
	m.last = nil // set again when this Build succeeds
}

func (m *Memo) end() {
	if m != nil {
		m.prev, m.prevRoutes, m.prevClusters = nil, nil, nil
	}
}

// routeOf returns the entry built from this very IR route by the previous Build (nil: none
// near its position), carrying it into the current generation.
func (m *Memo) routeOf(h *ir.Hasher, r *ir.Route, f Flavor) *memoEntry {
	if m == nil {
		return nil
	}
	var e *memoEntry
	for i := m.routeAt; i < len(m.prevRoutes) && i < m.routeAt+seqWindow; i++ {
		if p := m.prevRoutes[i]; p.r == r && p.f == f {
			e, m.routeAt = p.e, i+1
			break
		}
	}
	if e == nil {
		return nil
	}
	if m.verify {
		key := keyOf(h, kindRoute, f)
		key.Route(r)
		if key.Sum64() != e.hash {
			panic(fmt.Sprintf("envoy: IR route %q was changed after it was built: IR objects are immutable once translated", r.Name))
		}
	}
	m.cur[e.hash] = e
	return e
}

// putRoute records the entry of r in the current Build's order.
func (m *Memo) putRoute(r *ir.Route, f Flavor, e *memoEntry) {
	if m != nil {
		m.curRoutes = append(m.curRoutes, seqRoute{r, f, e})
	}
}

// clusterOf is routeOf for a cluster and its load assignment.
func (m *Memo) clusterOf(h *ir.Hasher, c *ir.Cluster, f Flavor) (clusterPair, bool) {
	if m == nil {
		return clusterPair{}, false
	}
	found := false
	var p clusterPair
	for i := m.clusterAt; i < len(m.prevClusters) && i < m.clusterAt+seqWindow; i++ {
		if s := m.prevClusters[i]; s.c == c && s.f == f {
			p, found, m.clusterAt = s.p, true, i+1
			break
		}
	}
	if !found {
		return p, false
	}
	if m.verify {
		if ck, claKey := clusterKeys(h, c, f); ck != p.c.hash || (p.cla != nil && claKey != p.cla.hash) {
			panic(fmt.Sprintf("envoy: IR cluster %q was changed after it was built: IR objects are immutable once translated", c.Name))
		}
	}
	m.cur[p.c.hash] = p.c
	if p.cla != nil {
		m.cur[p.cla.hash] = p.cla
	}
	return p, true
}

// putCluster records the entries of c in the current Build's order.
func (m *Memo) putCluster(c *ir.Cluster, f Flavor, p clusterPair) {
	if m != nil {
		m.curClusters = append(m.curClusters, seqCluster{c, f, p})
	}
}

// get returns the entry of key, carrying it into the current generation.
func (m *Memo) get(key uint64, name string) *memoEntry {
	if m == nil {
		return nil
	}
	if e := m.cur[key]; e != nil && e.name == name {
		return e
	}
	if e := m.prev[key]; e != nil && e.name == name {
		m.cur[key] = e
		return e
	}
	return nil
}

func (m *Memo) put(key uint64, e *memoEntry) {
	if m != nil {
		m.cur[key] = e
	}
}

// Len is the number of remembered resources.
func (m *Memo) Len() int {
	if m == nil {
		return 0
	}
	return len(m.cur)
}

// HashMessage is the content hash of a resource's deterministic encoding (for resources not
// built from one IR value: listeners, control-plane clusters).
func HashMessage(m proto.Message) (uint64, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return 0, err
	}
	return xxhash.Sum64(b), nil
}

// Version formats a resource hash as an xDS version string.
func Version(h uint64) string { return strconv.FormatUint(h, 16) }

// keyOf starts a key: kind and flavor.
func keyOf(h *ir.Hasher, kind uint64, f Flavor) *ir.Hasher {
	h.Reset()
	h.U64(kind)
	h.U64(uint64(f))
	return h
}

// remember records a Build's input and output for recall.
func (m *Memo) remember(h *ir.Hasher, cfg *ir.Config, o Options, res *Resources) {
	if m == nil {
		return
	}
	l := &lastBuild{flavor: o.Flavor, statPrefix: o.StatPrefix, listener: cfg.Listener, control: cfg.ControlPlane,
		otlp: cfg.OTLP, service: cfg.ServiceName, vhosts: cfg.VirtualHosts, hosts: cfg.ServiceHosts,
		clusters: cfg.Clusters, keys: make([][2]uint64, len(cfg.Clusters)), res: res}
	for i, c := range cfg.Clusters {
		l.keys[i][0], l.keys[i][1] = clusterKeys(h, c, o.Flavor)
	}
	if m.verify {
		l.routeKeys = map[*ir.Route]uint64{}
		for _, vh := range cfg.VirtualHosts {
			for _, r := range vh.Routes {
				l.routeKeys[r] = routeHash(h, r, o.Flavor)
			}
		}
	}
	m.last = l
}

// recall returns the previous Build's Resources when cfg is the same input: the same
// top-level settings, virtual hosts with the same names, domains and (identical, so
// unchanged) routes, the same service hosts, and clusters that are the same objects or have
// the same content hashes. When only the endpoints of some EDS clusters changed (a heartbeat)
// it returns a copy with those load assignments built and validated again. ok false: build.
func (m *Memo) recall(h *ir.Hasher, cfg *ir.Config, o Options) (res *Resources, ok bool) {
	if m == nil || m.last == nil {
		return nil, false
	}
	l := m.last
	if l.flavor != o.Flavor || l.statPrefix != o.StatPrefix || l.listener != cfg.Listener || l.control != cfg.ControlPlane ||
		(l.otlp == nil) != (cfg.OTLP == nil) || (l.otlp != nil && *l.otlp != *cfg.OTLP) || l.service != cfg.ServiceName ||
		len(l.vhosts) != len(cfg.VirtualHosts) || len(l.hosts) != len(cfg.ServiceHosts) || len(l.clusters) != len(cfg.Clusters) {
		return nil, false
	}
	for i, vh := range cfg.VirtualHosts {
		if p := l.vhosts[i]; p != vh && (p.Name != vh.Name || !slices.Equal(p.Domains, vh.Domains) || !slices.Equal(p.Routes, vh.Routes)) {
			return nil, false
		}
	}
	for i, s := range cfg.ServiceHosts {
		if *l.hosts[i] != *s {
			return nil, false
		}
	}
	if m.verify {
		// The routes are recalled by identity: check that none changed in place since it was
		// built (or left out).
		for _, vh := range cfg.VirtualHosts {
			for _, r := range vh.Routes {
				if k, ok := l.routeKeys[r]; !ok || k != routeHash(h, r, o.Flavor) {
					panic(fmt.Sprintf("envoy: IR route %q was changed after it was built: IR objects are immutable once translated", r.Name))
				}
			}
		}
	}
	var changed []int // clusters whose endpoints changed
	for i, c := range cfg.Clusters {
		if c == l.clusters[i] && !m.verify {
			continue
		}
		k, claKey := clusterKeys(h, c, o.Flavor)
		if c == l.clusters[i] && (k != l.keys[i][0] || claKey != l.keys[i][1]) {
			panic(fmt.Sprintf("envoy: IR cluster %q was changed after it was built: IR objects are immutable once translated", c.Name))
		}
		if c.Name != l.clusters[i].Name || k != l.keys[i][0] {
			return nil, false
		}
		if claKey != l.keys[i][1] {
			if _, served := l.res.EndpointHashes[c.Name]; !served {
				return nil, false // left out (unreferenced or failed): a build decides again
			}
			changed = append(changed, i)
		}
	}
	res = l.res
	if len(changed) > 0 {
		c := *l.res
		c.Endpoints = slices.Clone(l.res.Endpoints)
		c.EndpointHashes = maps.Clone(l.res.EndpointHashes)
		for _, i := range changed {
			ic := cfg.Clusters[i]
			ce, cla := clusterEntryByContent(h, cfg, o, ic)
			if ce.err != nil || cla == nil || cla.err != nil || ce.hash != l.keys[i][0] {
				return nil, false
			}
			j, found := slices.BinarySearchFunc(c.Endpoints, ic.Name, func(e *endpointv3.ClusterLoadAssignment, name string) int {
				return strings.Compare(e.ClusterName, name)
			})
			if !found {
				return nil, false
			}
			c.Endpoints[j], c.EndpointHashes[ic.Name] = cla.cla, cla.hash
			delete(m.cur, l.keys[i][1])
			m.cur[cla.hash] = cla
		}
		res = &c
	}
	// The next Build compares with these objects and keys.
	nl := *l
	nl.vhosts, nl.hosts, nl.clusters, nl.res = cfg.VirtualHosts, cfg.ServiceHosts, cfg.Clusters, res
	if len(changed) > 0 {
		nl.keys = slices.Clone(l.keys)
		for _, i := range changed {
			nl.keys[i][0], nl.keys[i][1] = clusterKeys(h, cfg.Clusters[i], o.Flavor)
		}
	}
	m.last = &nl
	return res, true
}

// routeHash is the memo key of a route.
func routeHash(h *ir.Hasher, r *ir.Route, f Flavor) uint64 {
	key := keyOf(h, kindRoute, f)
	key.Route(r)
	return key.Sum64()
}
