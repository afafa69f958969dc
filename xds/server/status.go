package server

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/model"
)

// xDS states of a route at a node group.
const (
	StateAcked   = "ACKED"
	StateNacked  = "NACKED"
	StatePending = "PENDING"
	// StateOmitted: the group leaves the route out by design (a feature its clients cannot
	// apply); the status's error says which. Not a failure: the other groups serve it.
	StateOmitted = "OMITTED"
)

// RouteStatus is the xDS state of a route per node group with connected clients: NACKED
// when a client rejected one of the route's own resources (its clusters and endpoint
// assignments by name; the listener and route configuration that hold it: for the gRPC
// group "<host>" and "grpc/<host>" of each host of the route, for the Envoy groups the one
// route configuration and listener unless the error names other routes only), until an
// ACKed response carries a new version of that resource or it stops being sent; ACKED when
// every client of the group answered the current route and cluster versions (the resources
// a NACK does not name were accepted); PENDING otherwise. OMITTED, with or without clients,
// when the group leaves the route out by design (the error says why). Translation is "ok" or
// why the route was left out. nil when the route is not in the published configuration.
func (s *Server) RouteStatus(id string) *model.RouteStatus {
	s.mu.RLock()
	st := s.published
	s.mu.RUnlock()
	if st == nil {
		return nil
	}
	out := &model.RouteStatus{Translation: "ok"}
	if e, bad := st.routeErrors[id]; bad {
		out.Translation = e
		return out
	}
	if i := sort.SearchStrings(st.cfg.Routes, id); i == len(st.cfg.Routes) || st.cfg.Routes[i] != id {
		return nil
	}
	out.Warnings = slices.Clone(st.cfg.RouteWarnings[id])
	clusters := st.routeClusters[id]
	for _, g := range Groups {
		if why, omitted := st.omitted[g.Name][id]; omitted {
			if out.XDS == nil {
				out.XDS = map[string]model.XDSStatus{}
			}
			out.XDS[g.Name] = model.XDSStatus{State: StateOmitted, Error: why}
			continue
		}
		v := s.tracker.view(g.Name)
		if v.nodes == 0 {
			continue
		}
		if out.XDS == nil {
			out.XDS = map[string]model.XDSStatus{}
		}
		versions := st.versions[g.Name]
		xs := model.XDSStatus{State: StateAcked, Version: versions[resourcev3.RouteType]}
		if r, ok := v.rejectionOf(g, id, clusters, st); ok {
			n := r.nack
			xs = model.XDSStatus{State: StateNacked, Version: n.Version, Error: n.Error, Node: n.Node}
		}
		if xs.State == StateAcked {
			for i := range v.followers {
				f := &v.followers[i]
				// A proxyless client follows the listeners of the hosts it dialed: the
				// route of another host is not waiting for it (and a client whose host has
				// no cluster never answers a cluster version). Envoy follows every listener.
				if g.Flavor == envoy.FlavorGRPC && !f.follows(st.hostsOf(id)) {
					continue
				}
				if f.answered[resourcev3.RouteType] != versions[resourcev3.RouteType] ||
					(len(clusters) > 0 && f.answered[resourcev3.ClusterType] != versions[resourcev3.ClusterType]) {
					xs.State = StatePending
					break
				}
			}
		}
		out.XDS[g.Name] = xs
	}
	return out
}

// rejectionOf returns the newest rejection of one of the route's resources at group g.
func (v *groupView) rejectionOf(g Group, id string, clusters []string, st *state) (rejected, bool) {
	var best rejected
	found := false
	take := func(r rejected) {
		if !found || r.nack.At.After(best.nack.At) {
			best, found = r, true
		}
	}
	for _, c := range clusters {
		if list := v.endpoints[c]; len(list) > 0 {
			take(list[0])
		}
	}
	if len(clusters) > 0 && len(v.allEndpoints) > 0 {
		take(v.allEndpoints[0])
	}
	for _, r := range v.holders {
		if concerns(g, r, id, clusters, st, st.cfg.Routes) {
			take(r)
			break
		}
	}
	return best, found
}

// concerns decides whether a rejected resource is one of the route's at group g.
func concerns(g Group, r rejected, id string, clusters []string, st *state, routes []string) bool {
	if r.all {
		return len(clusters) > 0 || (r.typeURL != resourcev3.ClusterType && r.typeURL != resourcev3.EndpointType)
	}
	switch r.typeURL {
	case resourcev3.ClusterType, resourcev3.EndpointType:
		// An endpoint assignment carries its cluster's name.
		return contains(clusters, r.name)
	case resourcev3.RouteType, resourcev3.ListenerType:
		if g.Flavor == envoy.FlavorGRPC {
			// One listener and route configuration per host, holding that host's routes.
			for _, h := range st.hostsOf(id) {
				if (r.typeURL == resourcev3.ListenerType && r.name == h) ||
					(r.typeURL == resourcev3.RouteType && r.name == envoy.GRPCRouteConfigPrefix+h) {
					return true
				}
			}
			return false
		}
		// Envoy: the one listener and route configuration hold every route; an error
		// naming routes (Envoy names a route in some) concerns those.
		named := false
		for _, tk := range r.nack.tokens {
			if rid := routeIDOf(tk, routes); rid != "" {
				if rid == id {
					return true
				}
				named = true
			}
		}
		return !named
	}
	return false
}

// routeIDOf returns the route id a token names ("<id>", or "<id>/<n>", the Envoy route of
// the id's n-th condition), or "". A bare number names no route: Envoy's validation errors
// are full of indices ("VirtualHosts[0]", "Routes[3]"), and taking one for a numeric route id
// would blame that route alone and clear the one rejected (naming none blames them all).
func routeIDOf(tk string, routes []string) string {
	if allDigits(tk) {
		return ""
	}
	if has(routes, tk) {
		return tk
	}
	if i := strings.LastIndexByte(tk, '/'); i > 0 && i < len(tk)-1 && allDigits(tk[i+1:]) && has(routes, tk[:i]) {
		return tk[:i]
	}
	return ""
}

func has(sorted []string, s string) bool {
	i := sort.SearchStrings(sorted, s)
	return i < len(sorted) && sorted[i] == s
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// routeHosts maps each route id to the virtual hosts holding it, built once per published
// state on first use (a gRPC listener and its route configuration are named by host).
type routeHosts struct {
	once sync.Once
	m    map[string][]string
}

func (st *state) hostsOf(id string) []string {
	st.hosts.once.Do(func() {
		st.hosts.m = map[string][]string{}
		for _, vh := range st.cfg.VirtualHosts {
			for _, r := range vh.Routes {
				hs := st.hosts.m[r.RouteID]
				if len(hs) == 0 || hs[len(hs)-1] != vh.Name {
					st.hosts.m[r.RouteID] = append(hs, vh.Name)
				}
			}
		}
	})
	return st.hosts.m[id]
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// NodesHandler serves GET /api/v1/management/xds/nodes: the connected nodes, their group,
// last ACKed version per type, their counts of ACKs and NACKs per type (NodeInfo says
// exactly what one is), the resources they reject, and their last NACK.
func (s *Server) NodesHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.RLock()
		var published map[string]map[string]string
		var rev uint64
		if s.published != nil {
			published, rev = s.published.versions, s.published.revision
		}
		s.mu.RUnlock()
		current := map[string]map[string]string{}
		for g, vs := range published {
			current[g] = shortKeys(vs)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"revision": rev,
			"versions": current,
			"nodes":    s.Nodes(),
		})
	})
}
