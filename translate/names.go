package translate

import (
	"fmt"
	"strconv"
	"strings"
)

// Resource names. Every name this package gives a cluster (and so an EDS load assignment,
// which carries its cluster's name) is made here, so one file shows why no two objects can
// share a name: a shared name used to make the whole revision fail IR validation ("duplicate
// name") and every later revision with it, while the API kept answering 2xx.
//
// A name is a kind prefix and the object's id, joined by '/':
//
//	route/<route id>/<target index>   a route target's cluster
//	route/<route id>/mirror           a route's mirror target's cluster
//	service/<service name>            a registered service's cluster
//
// Model ids and service names hold only [A-Za-z0-9._-] (model validID); translation
// also refuses a '/' in them (checkNamePart), so a name splits back into exactly its kind and
// fields: route ids and service names live in different prefixes and can never meet. The
// other names of a configuration cannot meet these either: the control-plane clusters
// (ir.ControlPlaneCluster, ir.OTLPCluster) hold no '/'; listeners, virtual hosts and route
// configurations are named by host ("http", "<host>", "grpc/<host>", and for gRPC clients
// "service/<name>" virtual hosts) in a namespace of their own type; route names are
// "<route id>" and "<route id>/<condition index>" and unique per virtual host.
const (
	// RouteClusterPrefix prefixes the clusters of route targets ("route/<id>/<i>").
	RouteClusterPrefix = "route/"
	// ServiceClusterPrefix prefixes the clusters of registered services ("service/<name>").
	ServiceClusterPrefix = "service/"
)

// ClusterName is the cluster of a route's i-th target: "route/<routeID>/<i>".
func ClusterName(routeID string, i int) string {
	return RouteClusterPrefix + routeID + "/" + strconv.Itoa(i)
}

// MirrorClusterName is the cluster of a route's mirror target: "route/<routeID>/mirror"
// (target clusters end in a number, so the two never meet).
func MirrorClusterName(routeID string) string { return RouteClusterPrefix + routeID + "/mirror" }

// ServiceClusterName is the cluster of the registered service name: "service/<name>".
func ServiceClusterName(name string) string { return ServiceClusterPrefix + name }

// checkNamePart refuses an id that could make a resource name ambiguous: an empty one, or one
// holding the separator '/'. The API never stores such ids (model validID); an object
// written around it (by hand into Redis, or by an older replica) is left out with this
// reason instead of clashing with another object's names.
func checkNamePart(s string) error {
	if s == "" {
		return fmt.Errorf("id is empty")
	}
	if strings.ContainsRune(s, '/') {
		return fmt.Errorf("id %q holds '/', which resource names use as their separator", s)
	}
	return nil
}
