package server

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/api-gateway/api-gateway/envoy"
)

// Group is a node group with its own snapshot.
type Group struct {
	Name       string
	Flavor     envoy.Flavor
	StatPrefix string
}

// Node groups: Envoy's node.cluster "sidecar" selects the sidecar group, anything else the
// edge group; proxyless gRPC clients (user agent "gRPC ...") get the gRPC group.
var Groups = []Group{
	{Name: "edge", Flavor: envoy.FlavorEnvoy, StatPrefix: "ingress_http"},
	{Name: "sidecar", Flavor: envoy.FlavorEnvoy, StatPrefix: "sidecar_http"},
	{Name: "grpc", Flavor: envoy.FlavorGRPC, StatPrefix: "grpc"},
}

// GRPCGroup is the group of proxyless gRPC clients.
const GRPCGroup = "grpc"

// GroupOf returns the group of a node.
func GroupOf(n *corev3.Node) string {
	if strings.HasPrefix(strings.ToLower(n.GetUserAgentName()), "grpc") {
		return GRPCGroup
	}
	if n.GetCluster() == "sidecar" {
		return "sidecar"
	}
	return "edge"
}

// groupHash keys the snapshot cache by group.
type groupHash struct{}

func (groupHash) ID(n *corev3.Node) string { return GroupOf(n) }
