package server

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

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

// RouteStatus is the xDS state of a route per node group with connected clients (or an open
// NACK): NACKED when a client rejected a current resource of the route (its clusters or
// endpoints by name, or a route configuration whose error names the route or no route at
// all), ACKED when every client of the group acknowledged the current route and cluster
// versions, PENDING otherwise; OMITTED, with or without clients, when the group leaves the
// route out by design (the error says why). Translation is "ok" or why the route was left
// out. nil when the route is not in the published configuration.
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
		for i, n := range v.nacks {
			if concerns(v.types[i], n, id, clusters, st.cfg.Routes) {
				xs = model.XDSStatus{State: StateNacked, Version: n.Version, Error: n.Error, Node: n.Node}
				break
			}
		}
		if xs.State == StateAcked {
			for _, acked := range v.acked {
				if acked[resourcev3.RouteType] != versions[resourcev3.RouteType] ||
					(len(clusters) > 0 && acked[resourcev3.ClusterType] != versions[resourcev3.ClusterType]) {
					xs.State = StatePending
					break
				}
			}
		}
		out.XDS[g.Name] = xs
	}
	return out
}

// concerns decides whether an open NACK is about the route.
func concerns(typeURL string, n *NACK, id string, clusters, routes []string) bool {
	switch typeURL {
	case resourcev3.ClusterType, resourcev3.EndpointType:
		for _, c := range clusters {
			if strings.Contains(n.Error, c) || contains(n.Resources, c) {
				return true
			}
		}
		return false
	case resourcev3.RouteType, resourcev3.ListenerType:
		if strings.Contains(n.Error, id) {
			return true
		}
		for _, r := range routes {
			if strings.Contains(n.Error, r) {
				return false // it names another route
			}
		}
		return true
	}
	return false
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
// last ACKed version per type and last NACK.
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
