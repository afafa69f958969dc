package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// adsClient is a hand-driven SotW ADS stream, the way a proxyless client speaks it: one
// request per type naming its resources, then one ACK or NACK per response.
type adsClient struct {
	t       *testing.T
	stream  discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node    *corev3.Node
	in      chan *discoveryv3.DiscoveryResponse
	pending map[string][]*discoveryv3.DiscoveryResponse
	names   map[string][]string // subscribed names by type
}

func dialADS(t *testing.T, h *harness, id, userAgent string) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = conn.Close() })
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, stream: stream, node: &corev3.Node{Id: id, Cluster: "clients", UserAgentName: userAgent},
		in: make(chan *discoveryv3.DiscoveryResponse, 64), pending: map[string][]*discoveryv3.DiscoveryResponse{}, names: map[string][]string{}}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(c.in)
				return
			}
			c.in <- r
		}
	}()
	return c
}

func (c *adsClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if c.node != nil {
		req.Node, c.node = c.node, nil
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next response of the type, keeping responses of other types for later.
func (c *adsClient) recv(typeURL string) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	if p := c.pending[typeURL]; len(p) > 0 {
		c.pending[typeURL] = p[1:]
		return p[0]
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r, ok := <-c.in:
			if !ok {
				c.t.Fatalf("stream closed waiting for %s", TypeName(typeURL))
			}
			if r.GetTypeUrl() == typeURL {
				return r
			}
			c.pending[r.GetTypeUrl()] = append(c.pending[r.GetTypeUrl()], r)
		case <-timeout:
			c.t.Fatalf("no %s response", TypeName(typeURL))
		}
	}
}

// subscribe requests names of a type and ACKs the response.
func (c *adsClient) subscribe(typeURL string, names ...string) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	c.names[typeURL] = names
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
	r := c.recv(typeURL)
	c.ack(r)
	return r
}

func (c *adsClient) ack(r *discoveryv3.DiscoveryResponse) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResourceNames: c.names[r.GetTypeUrl()],
		VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
}

// nack rejects r; the version is the last one accepted, as clients send it.
func (c *adsClient) nack(r *discoveryv3.DiscoveryResponse, accepted, msg string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResourceNames: c.names[r.GetTypeUrl()],
		VersionInfo: accepted, ResponseNonce: r.GetNonce(), ErrorDetail: statusProto(msg)})
}

// clusterIndex returns the position of the named cluster in a CDS response.
func clusterIndex(t *testing.T, r *discoveryv3.DiscoveryResponse, name string) int {
	t.Helper()
	for i, a := range r.GetResources() {
		var c clusterv3.Cluster
		if err := proto.Unmarshal(a.GetValue(), &c); err != nil {
			t.Fatal(err)
		}
		if c.GetName() == name {
			return i
		}
	}
	t.Fatalf("cluster %s not in the response", name)
	return -1
}

// threeRoutes serves routes a, b and c on hosts a.test, b.test and c.test; bMax sets b's
// circuit breaker, which changes b's cluster (and only it).
func threeRoutes(rev uint64, bMax int) *model.Snapshot {
	mk := func(id string, port int) *model.Route {
		return &model.Route{ID: id, Hosts: []string{id + ".test"}, RequireAuth: falsePtr(),
			Conditions: []model.Condition{{PathPattern: "/*"}}, Targets: []model.Target{{Host: "127.0.0.1", Port: port}}}
	}
	b := mk("b", 1002)
	b.CircuitBreaker = &model.CircuitBreaker{MaxRequests: bMax}
	return snapshot(rev, mk("a", 1001), b, mk("c", 1003))
}

// nodeCounts reads one node's ACK and NACK counts from the nodes endpoint.
type nodeCounts struct {
	ID       string              `json:"id"`
	Acks     map[string]int      `json:"acks"`
	Nacks    map[string]int      `json:"nacks"`
	Rejected map[string][]string `json:"rejected"`
	LastNACK *struct {
		Resources []string `json:"resources"`
		Error     string   `json:"error"`
	} `json:"last_nack"`
}

func nodesCounts(t *testing.T, h *harness, id string) nodeCounts {
	t.Helper()
	rec := httptest.NewRecorder()
	h.s.NodesHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/management/xds/nodes", nil))
	var body struct {
		Nodes []nodeCounts `json:"nodes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	for _, n := range body.Nodes {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("node %s not listed: %s", id, rec.Body.String())
	return nodeCounts{}
}

func grpcState(h *harness, id string) string {
	st := h.s.RouteStatus(id)
	if st == nil {
		return ""
	}
	return st.XDS["grpc"].State
}

func wantStates(t *testing.T, h *harness, what string, want map[string]string) {
	t.Helper()
	waitFor(t, what, func() bool {
		for id, s := range want {
			if grpcState(h, id) != s {
				return false
			}
		}
		return true
	})
}

// A client rejects one cluster of a CDS response, naming it the way grpc-js does (by its
// index in that response, repeating the NACK with the same nonce on later requests) or the
// way grpc-go does (by name): only the route owning that cluster is NACKED, the others stay
// ACKED; the NACK counts once; a later ACKed version of the cluster clears it.
func TestNACKMarksOnlyTheRouteOfTheRejectedCluster(t *testing.T) {
	styles := []struct {
		name, userAgent string
		msg             func(index int, name string) string
		repeats         int
	}{
		{"grpc-js", "gRPC Node Pure JS", func(i int, _ string) string {
			return fmt.Sprintf("xDS response validation errors: [resource index %d: LB policy is not supported]", i)
		}, 3},
		{"grpc-go", "gRPC Go", func(_ int, name string) string {
			return fmt.Sprintf("error parsing %q response: resource %q: unsupported lbPolicy", "ClusterResource", name)
		}, 1},
	}
	for _, style := range styles {
		t.Run(style.name, func(t *testing.T) {
			h := start(t)
			h.apply(t, threeRoutes(1, 10))
			c := dialADS(t, h, "client-1", style.userAgent)
			c.subscribe(resourcev3.ListenerType, "a.test", "b.test", "c.test")
			c.subscribe(resourcev3.RouteType, "grpc/a.test", "grpc/b.test", "grpc/c.test")
			first := c.subscribe(resourcev3.ClusterType, translate.ClusterName("a", 0), translate.ClusterName("b", 0), translate.ClusterName("c", 0))
			wantStates(t, h, "every route ACKED", map[string]string{"a": StateAcked, "b": StateAcked, "c": StateAcked})

			// Revision 2 changes b's cluster; the client rejects it.
			h.apply(t, threeRoutes(2, 20))
			second := c.recv(resourcev3.ClusterType)
			bName := translate.ClusterName("b", 0)
			msg := style.msg(clusterIndex(t, second, bName), bName)
			for range style.repeats {
				c.nack(second, first.GetVersionInfo(), msg)
			}
			wantStates(t, h, "b NACKED, a and c ACKED", map[string]string{"a": StateAcked, "b": StateNacked, "c": StateAcked})
			if x := h.s.RouteStatus("b").XDS["grpc"]; x.Error != msg || x.Node != "client-1" || x.Version != second.GetVersionInfo() {
				t.Fatalf("b's status %+v", x)
			}
			n := nodesCounts(t, h, "client-1")
			if n.LastNACK == nil || len(n.LastNACK.Resources) != 1 || n.LastNACK.Resources[0] != bName {
				t.Fatalf("last NACK %+v", n.LastNACK)
			}

			// Revision 3 changes b's cluster again; the client accepts it.
			h.apply(t, threeRoutes(3, 30))
			third := c.recv(resourcev3.ClusterType)
			c.ack(third)
			wantStates(t, h, "every route ACKED again", map[string]string{"a": StateAcked, "b": StateAcked, "c": StateAcked})

			// Requests on a stream are handled in order: every repeat was seen before the ACK.
			if got := testutil.ToFloat64(h.s.m.nacks.WithLabelValues("cds")); got != 1 {
				t.Fatalf("api_gateway_xds_nacks_total{type=cds} = %v, want 1", got)
			}
			n = nodesCounts(t, h, "client-1")
			want := map[string]int{"lds": 1, "rds": 1, "cds": 2}
			if fmt.Sprint(n.Acks) != fmt.Sprint(want) || fmt.Sprint(n.Nacks) != fmt.Sprint(map[string]int{"cds": 1}) {
				t.Fatalf("counts: acks %v nacks %v, want acks %v nacks map[cds:1]", n.Acks, n.Nacks, want)
			}
		})
	}
}

// A route stays NACKED while the client has not accepted a new version of its cluster,
// even when it ACKs responses carrying other changes (and the same rejected cluster); it
// clears when the cluster is no longer sent.
func TestNACKedClusterStaysUntilReplacedOrGone(t *testing.T) {
	h := start(t)
	snap := func(rev uint64, aMax, bMax int, withB bool) *model.Snapshot {
		s := threeRoutes(rev, bMax)
		s.Routes[0].CircuitBreaker = &model.CircuitBreaker{MaxRequests: aMax}
		if !withB {
			s.Routes = append(s.Routes[:1], s.Routes[2:]...)
		}
		return s
	}
	h.apply(t, snap(1, 10, 10, true))
	c := dialADS(t, h, "client-1", "gRPC Go")
	c.subscribe(resourcev3.ListenerType, "a.test", "b.test", "c.test")
	c.subscribe(resourcev3.RouteType, "grpc/a.test", "grpc/b.test", "grpc/c.test")
	first := c.subscribe(resourcev3.ClusterType, translate.ClusterName("a", 0), translate.ClusterName("b", 0), translate.ClusterName("c", 0))
	h.apply(t, snap(2, 10, 20, true))
	second := c.recv(resourcev3.ClusterType)
	bName := translate.ClusterName("b", 0)
	c.nack(second, first.GetVersionInfo(), fmt.Sprintf("resource %q: bad", bName))
	wantStates(t, h, "b NACKED", map[string]string{"a": StateAcked, "b": StateNacked, "c": StateAcked})

	// Revision 3 changes a only: the response carries a new a and the same rejected b. A
	// client accepting it does not make b's rejected version good.
	h.apply(t, snap(3, 30, 20, true))
	third := c.recv(resourcev3.ClusterType)
	c.ack(third)
	waitFor(t, "the ACK recorded", func() bool { return nodesCounts(t, h, "client-1").Acks["cds"] == 2 })
	if s := grpcState(h, "b"); s != StateNacked {
		t.Fatalf("b is %s after an ACK of a response carrying the same rejected cluster", s)
	}
	if s := grpcState(h, "a"); s != StateAcked {
		t.Fatalf("a is %s", s)
	}
	// Revision 4 drops route b: its cluster is no longer sent, no longer rejected.
	h.apply(t, snap(4, 30, 20, false))
	c.ack(c.recv(resourcev3.ClusterType))
	waitFor(t, "nothing rejected", func() bool {
		n := nodesCounts(t, h, "client-1")
		return n.Acks["cds"] == 3 && len(n.Rejected) == 0
	})
}

// A listener rejected by name concerns only the routes of that host: the name of a host
// inside a longer one (a.test in a.test.io, and in grpc/a.test) is not a mention.
func TestListenerNACKConcernsOnlyItsHost(t *testing.T) {
	h := start(t)
	mk := func(id, host string) *model.Route {
		return &model.Route{ID: id, Hosts: []string{host}, RequireAuth: falsePtr(),
			Conditions: []model.Condition{{PathPattern: "/*"}}, Targets: []model.Target{{Host: "127.0.0.1", Port: 1001}}}
	}
	h.apply(t, snapshot(1, mk("short", "a.test"), mk("long", "a.test.io")))
	c := dialADS(t, h, "client-1", "gRPC Go")
	r := c.recv
	c.names[resourcev3.ListenerType] = []string{"a.test", "a.test.io"}
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: c.names[resourcev3.ListenerType]})
	lds := r(resourcev3.ListenerType)
	c.nack(lds, "", "listener a.test.io: no route configuration for grpc/a.test.io.")
	c.subscribe(resourcev3.RouteType, "grpc/a.test", "grpc/a.test.io")
	waitFor(t, "long NACKED", func() bool { return grpcState(h, "long") == StateNacked })
	if s := grpcState(h, "short"); s == StateNacked {
		t.Fatalf("short is NACKED by a NACK naming a.test.io")
	}
}

// Hostile clients: the same NACK a thousand times, requests naming nonces never sent, and a
// NACK with a 1 MiB message count once (or not at all) and store at most 4 KiB.
func TestNACKFloodCountsOnce(t *testing.T) {
	h := start(t)
	h.apply(t, threeRoutes(1, 10))
	c := dialADS(t, h, "client-1", "gRPC Node Pure JS")
	c.subscribe(resourcev3.ListenerType, "a.test", "b.test", "c.test")
	c.names[resourcev3.ClusterType] = []string{translate.ClusterName("a", 0), translate.ClusterName("b", 0), translate.ClusterName("c", 0)}
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: c.names[resourcev3.ClusterType]})
	cds := c.recv(resourcev3.ClusterType)
	huge := "resource index 0: " + strings.Repeat("x", 1<<20)
	c.nack(cds, "", huge)
	for range 1000 {
		c.nack(cds, "", "resource index 1: again")
	}
	for i := range 100 {
		c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: c.names[resourcev3.ClusterType],
			ResponseNonce: fmt.Sprintf("unknown-%d", i), ErrorDetail: statusProto("resource index 2: forged")})
		c.send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNames: c.names[resourcev3.ClusterType],
			ResponseNonce: fmt.Sprintf("unknown-ack-%d", i)})
	}
	// A last request on another type, answered, marks the end of the flood.
	c.subscribe(resourcev3.RouteType, "grpc/a.test", "grpc/b.test", "grpc/c.test")
	waitFor(t, "the flood handled", func() bool { return nodesCounts(t, h, "client-1").Acks["rds"] == 1 })
	n := nodesCounts(t, h, "client-1")
	if fmt.Sprint(n.Nacks) != "map[cds:1]" || fmt.Sprint(n.Acks) != "map[lds:1 rds:1]" {
		t.Fatalf("counts: acks %v nacks %v", n.Acks, n.Nacks)
	}
	if got := testutil.ToFloat64(h.s.m.nacks.WithLabelValues("cds")); got != 1 {
		t.Fatalf("api_gateway_xds_nacks_total{type=cds} = %v, want 1", got)
	}
	if n.LastNACK == nil || len(n.LastNACK.Error) > 4<<10 || !strings.HasPrefix(n.LastNACK.Error, "resource index 0: xxx") {
		t.Fatalf("last NACK error of %d bytes", len(n.LastNACK.Error))
	}
	// Only the cluster at index 0 (the first NACK's) is rejected; the forged nonces changed nothing.
	rejected := 0
	for _, id := range []string{"a", "b", "c"} {
		if grpcState(h, id) == StateNacked {
			rejected++
		}
	}
	if rejected != 1 {
		t.Fatalf("%d routes NACKED, want 1", rejected)
	}
}
