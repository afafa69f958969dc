package server

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// go-control-plane numbers SotW and delta streams with separate counters, so the first
// SotW stream and the first delta stream both have id 1: a gRPC client on SotW and an Envoy
// on delta are still two nodes, each with its own counts, and closing one leaves the other.
func TestSotwAndDeltaStreamsWithTheSameID(t *testing.T) {
	h := start(t)
	h.apply(t, threeRoutes(1, 10))
	c := dialADS(t, h, "grpc-1", "gRPC Go")
	c.subscribe(resourcev3.ClusterType, translate.ClusterName("a", 0))
	waitFor(t, "the SotW ACK", func() bool { return nodesCounts(t, h, "grpc-1").Acks["cds"] == 1 })

	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dctx, closeDelta := context.WithCancel(ctx)
	defer closeDelta()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(dctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-1", Cluster: "edge", UserAgentName: "envoy"}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: statusProto("Error adding/updating cluster(s) " + translate.ClusterName("b", 0) + ": bad")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "envoy-1 listed with its NACK", func() bool {
		for _, n := range h.s.Nodes() {
			if n.ID == "envoy-1" {
				return n.Group == "edge" && n.Nacks["cds"] == 1
			}
		}
		return false
	})
	g := nodesCounts(t, h, "grpc-1")
	if fmt.Sprint(g.Acks) != "map[cds:1]" || len(g.Nacks) != 0 || len(g.Rejected) != 0 {
		t.Fatalf("grpc-1 took the delta stream's answers: acks %v nacks %v rejected %v", g.Acks, g.Nacks, g.Rejected)
	}
	if s := grpcState(h, "b"); s == StateNacked {
		t.Fatalf("b is %s for the gRPC group after an Envoy's NACK", s)
	}

	closeDelta()
	waitFor(t, "envoy-1 gone", func() bool {
		for _, n := range h.s.Nodes() {
			if n.ID == "envoy-1" {
				return false
			}
		}
		return true
	})
	// grpc-1's stream is still open.
	if g := nodesCounts(t, h, "grpc-1"); g.Acks["cds"] != 1 {
		t.Fatalf("grpc-1 after the delta stream closed: %+v", g)
	}
}

// Clients sharing a node id (one bootstrap file for many processes, or a client whose new
// stream opens before its old one closes) are several streams of one node: a rejection is
// the rejecting stream's, and ends with it; the other streams' ACKs do not answer for it.
func TestRejectionEndsWithItsStream(t *testing.T) {
	h := start(t)
	h.apply(t, threeRoutes(1, 10))
	clusters := []string{translate.ClusterName("a", 0), translate.ClusterName("b", 0), translate.ClusterName("c", 0)}
	var cs []*adsClient
	var firsts []*discoveryv3.DiscoveryResponse
	for range 2 {
		c := dialADS(t, h, "shared", "gRPC Go")
		c.subscribe(resourcev3.ListenerType, "a.test", "b.test", "c.test")
		c.subscribe(resourcev3.RouteType, "grpc/a.test", "grpc/b.test", "grpc/c.test")
		firsts = append(firsts, c.subscribe(resourcev3.ClusterType, clusters...))
		cs = append(cs, c)
	}
	wantStates(t, h, "every route ACKED", map[string]string{"a": StateAcked, "b": StateAcked, "c": StateAcked})

	h.apply(t, threeRoutes(2, 20))
	bad, good := cs[0].recv(resourcev3.ClusterType), cs[1].recv(resourcev3.ClusterType)
	cs[0].nack(bad, firsts[0].GetVersionInfo(), fmt.Sprintf("resource %q: unsupported", clusters[1]))
	cs[1].ack(good)
	waitFor(t, "both answers", func() bool {
		n := nodesCounts(t, h, "shared")
		return n.Acks["cds"] == 3 && n.Nacks["cds"] == 1
	})
	if s := grpcState(h, "b"); s != StateNacked {
		t.Fatalf("b is %s while a stream rejects its cluster", s)
	}
	// The rejecting stream ends: nothing rejects b's cluster any more.
	if err := cs[0].stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one stream left", func() bool {
		for _, n := range h.s.Nodes() {
			if n.ID == "shared" {
				return n.Streams == 1
			}
		}
		return false
	})
	if n := nodesCounts(t, h, "shared"); len(n.Rejected) != 0 {
		t.Fatalf("rejected %v after the rejecting stream closed", n.Rejected)
	}
	wantStates(t, h, "every route ACKED", map[string]string{"a": StateAcked, "b": StateAcked, "c": StateAcked})
}

// A SotW route configuration or endpoint assignment missing from a response may be
// unchanged, but one the client no longer subscribes to is no longer rejected: a route
// whose endpoints were rejected and that was then deleted leaves nothing behind (a stale
// rejection would hold one of the stream's 4096 places for the life of the stream), and
// re-created with the same id (so the same names) it is as good as its new resources.
func TestUnsubscribedRejectionClears(t *testing.T) {
	h := start(t)
	mk := func(rev uint64, bPort int, withB bool) *model.Snapshot {
		r := func(id string, port int) *model.Route {
			return &model.Route{ID: id, Hosts: []string{id + ".test"}, RequireAuth: falsePtr(),
				Conditions: []model.Condition{{PathPattern: "/*"}}, Targets: []model.Target{{Host: "127.0.0.1", Port: port}}}
		}
		if !withB {
			return snapshot(rev, r("a", 1001))
		}
		return snapshot(rev, r("a", 1001), r("b", bPort))
	}
	aName, bName := translate.ClusterName("a", 0), translate.ClusterName("b", 0)
	h.apply(t, mk(1, 1002, true))
	c := dialADS(t, h, "client-1", "gRPC Go")
	first := c.subscribe(resourcev3.EndpointType, aName, bName)
	if len(first.GetResources()) != 2 {
		t.Fatalf("%d endpoint assignments", len(first.GetResources()))
	}
	h.apply(t, mk(2, 1003, true))
	second := c.recv(resourcev3.EndpointType)
	c.nack(second, first.GetVersionInfo(), fmt.Sprintf("resource %q: bad endpoint", bName))
	waitFor(t, "b's endpoints rejected", func() bool {
		return fmt.Sprint(nodesCounts(t, h, "client-1").Rejected) == "map[eds:["+bName+"]]"
	})

	// Route b is deleted: the client's routes no longer name its cluster, so it stops
	// subscribing to b's endpoints (a request repeating the last nonce, as clients send a
	// subscription change).
	h.apply(t, mk(3, 1003, false))
	c.names[resourcev3.EndpointType] = []string{aName}
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: []string{aName},
		VersionInfo: first.GetVersionInfo(), ResponseNonce: second.GetNonce()})
	// A request on another type, answered, marks that the subscription change was seen.
	c.subscribe(resourcev3.ClusterType, aName)
	waitFor(t, "the CDS ACK", func() bool { return nodesCounts(t, h, "client-1").Acks["cds"] == 1 })
	if n := nodesCounts(t, h, "client-1"); len(n.Rejected) != 0 {
		t.Fatalf("rejected %v after the client unsubscribed", n.Rejected)
	}
}

// On a delta stream, resource_names_unsubscribe ends the rejection of those names.
func TestDeltaUnsubscribeClearsRejection(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(slog.New(slog.DiscardHandler), m, time.Now)
	node := &corev3.Node{Id: "n", UserAgentName: "envoy"}
	req := func(r *discoveryv3.DeltaDiscoveryRequest) {
		r.TypeUrl = resourcev3.EndpointType
		if err := tr.OnStreamDeltaRequest(1, r); err != nil {
			t.Fatal(err)
		}
	}
	req(&discoveryv3.DeltaDiscoveryRequest{Node: node, ResourceNamesSubscribe: []string{"x", "y"}})
	tr.OnStreamDeltaResponse(1, nil, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.EndpointType, Nonce: "1",
		Resources: []*discoveryv3.Resource{{Name: "x", Version: "1"}, {Name: "y", Version: "1"}}})
	req(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: "1", ErrorDetail: statusProto(`resource "x": bad`)})
	if got := fmt.Sprint(tr.Nodes()[0].Rejected); got != "map[eds:[x]]" {
		t.Fatalf("rejected %s", got)
	}
	req(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{"x"}})
	if got := tr.Nodes()[0].Rejected; len(got) != 0 {
		t.Fatalf("rejected %v after unsubscribing", got)
	}
	if n := tr.streams[streamKey{id: 1, delta: true}].nRejected; n != 0 {
		t.Fatalf("nRejected %d", n)
	}
}

// An ACK on a stream holding a rejection looks the rejected names up in the response: it
// runs for every push to such a client, under the tracker's lock, so it copies nothing per
// resource (10,000 resources, a handful of allocations).
func TestACKWithRejectionAllocatesNothingPerResource(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(slog.New(slog.DiscardHandler), m, time.Now)
	var res []*anypb.Any
	for i := range 10000 {
		a, err := anypb.New(&clusterv3.Cluster{Name: fmt.Sprintf("route/r%05d/0", i)})
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, a)
	}
	node := &corev3.Node{Id: "n", UserAgentName: "gRPC Go"}
	nonce := 0
	round := func(detail string) {
		nonce++
		n := fmt.Sprint(nonce)
		tr.OnStreamResponse(context.Background(), 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.ClusterType, Nonce: n, Resources: res})
		req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType, ResponseNonce: n}
		if detail != "" {
			req.ErrorDetail = statusProto(detail)
		}
		if err := tr.OnStreamRequest(1, req); err != nil {
			t.Fatal(err)
		}
	}
	round(`resource "route/r00005/0": bad`)
	if got := fmt.Sprint(tr.Nodes()[0].Rejected); got != "map[cds:[route/r00005/0]]" {
		t.Fatalf("rejected %s", got)
	}
	allocs := testing.AllocsPerRun(20, func() { round("") })
	if got := fmt.Sprint(tr.Nodes()[0].Rejected); got != "map[cds:[route/r00005/0]]" {
		t.Fatalf("rejected %s after ACKs of the same version", got)
	}
	if allocs > 50 {
		t.Fatalf("%.0f allocations per ACK of 10,000 resources", allocs)
	}
}

// The bound on held rejections is per stream: a client sharing another's node id (by
// accident or on purpose) filling it with NACKs that name nothing in large responses does
// not hide the other client's real rejection.
func TestRejectionBoundIsPerStream(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(slog.New(slog.DiscardHandler), m, time.Now)
	node := &corev3.Node{Id: "shared", UserAgentName: "gRPC Go"}
	respond := func(stream int64, names ...string) {
		var res []*anypb.Any
		for _, n := range names {
			a, err := anypb.New(&clusterv3.Cluster{Name: n})
			if err != nil {
				t.Fatal(err)
			}
			res = append(res, a)
		}
		tr.OnStreamResponse(context.Background(), stream, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.ClusterType, Nonce: "1", Resources: res})
	}
	nack := func(stream int64, msg string) {
		if err := tr.OnStreamRequest(stream, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType,
			ResponseNonce: "1", ErrorDetail: statusProto(msg)}); err != nil {
			t.Fatal(err)
		}
	}
	var many []string
	for i := range 2 * maxRejectedPerStream {
		many = append(many, fmt.Sprintf("route/r%05d/0", i))
	}
	respond(1, many...)
	nack(1, "no names here")
	respond(2, "route/real/0", "route/other/0")
	nack(2, `error parsing "ClusterResource" response: resource "route/real/0": bad`)
	rej := tr.Nodes()[0].Rejected["cds"]
	if !contains(rej, "route/real/0") {
		t.Fatalf("the second stream's rejection was dropped (%d rejected held)", len(rej))
	}
	// The first stream's cap, "*" (every cluster, past its cap), the second stream's one.
	if len(rej) != maxRejectedPerStream+2 || rej[0] != "*" {
		t.Fatalf("%d rejected held, want %d", len(rej), maxRejectedPerStream+2)
	}
}

// Envoy's proto validation errors hold indices ("VirtualHosts[0]", "Routes[1]") and no route
// name: with numeric route ids they name no route, so the NACK concerns every route of the
// route configuration, not only routes "0" and "1" (which would hide the rejected one).
func TestNumericRouteIDsAreNotIndices(t *testing.T) {
	routes := []string{"0", "1", "7"}
	msg := `Proto constraint validation failed (RouteConfigurationValidationError.VirtualHosts[0]: embedded message failed validation | caused by VirtualHostValidationError.Routes[1]: embedded message failed validation | caused by RouteValidationError.Match: value is required)`
	n := &NACK{Error: msg, tokens: tokens(msg)}
	rej := rejected{typeURL: resourcev3.RouteType, name: envoy.EnvoyRouteConfigName, nack: n}
	for _, id := range routes {
		if !concerns(Groups[0], rej, id, nil, &state{}, routes) {
			t.Errorf("the NACK does not concern route %s", id)
		}
	}
	// A route named in Envoy's form for a later condition is still named.
	named := "route 7/2: bad regex"
	n = &NACK{Error: named, tokens: tokens(named)}
	rej.nack = n
	for _, id := range routes {
		if got := concerns(Groups[0], rej, id, nil, &state{}, routes); got != (id == "7") {
			t.Errorf("%q concerns %s: %v", named, id, got)
		}
	}
}

// A NACK rejecting more resources than a stream holds by name (a message naming none, on a
// response of more than 4096 clusters) still makes every route of that response NACKED,
// until the stream ACKs a later response of the type: past the bound, the rejection is of
// the whole response, not silently of its first 4096 resources.
func TestRejectionPastTheBoundCoversTheResponse(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(slog.New(slog.DiscardHandler), m, time.Now)
	node := &corev3.Node{Id: "n", UserAgentName: "gRPC Go"}
	var res []*anypb.Any
	for i := range maxRejectedPerStream + 100 {
		a, err := anypb.New(&clusterv3.Cluster{Name: fmt.Sprintf("route/r%05d/0", i)})
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, a)
	}
	answer := func(nonce, msg string) {
		tr.OnStreamResponse(context.Background(), 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resourcev3.ClusterType, Nonce: nonce, Resources: res})
		req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType, ResponseNonce: nonce}
		if msg != "" {
			req.ErrorDetail = statusProto(msg)
		}
		if err := tr.OnStreamRequest(1, req); err != nil {
			t.Fatal(err)
		}
	}
	st := &state{cfg: &ir.Config{}}
	rejectedAt := func(i int) bool {
		v := tr.view(GRPCGroup)
		_, found := v.rejectionOf(Groups[len(Groups)-1], "r", []string{fmt.Sprintf("route/r%05d/0", i)}, st)
		return found
	}
	answer("1", "something went wrong")
	for _, i := range []int{0, maxRejectedPerStream - 1, maxRejectedPerStream, maxRejectedPerStream + 99} {
		if !rejectedAt(i) {
			t.Errorf("cluster %d of the rejected response is not rejected", i)
		}
	}
	answer("2", "")
	if rejectedAt(maxRejectedPerStream + 50) {
		t.Errorf("still rejected after an ACK")
	}
}
