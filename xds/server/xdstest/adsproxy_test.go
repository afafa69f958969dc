package xdstest

import (
	"context"
	"net"
	"reflect"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	cdsType = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	ldsType = "type.googleapis.com/envoy.config.listener.v3.Listener"
)

// upstreamADS is a control plane the test drives by hand: each stream the proxy opens is
// handed to the test, which sends responses and reads the requests forwarded to it.
type upstreamADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	sotw  chan discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer
	delta chan discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
}

func (u *upstreamADS) StreamAggregatedResources(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	u.sotw <- s
	<-s.Context().Done()
	return nil
}

func (u *upstreamADS) DeltaAggregatedResources(s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	u.delta <- s
	<-s.Context().Done()
	return nil
}

func startUpstream(t *testing.T) (*upstreamADS, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstreamADS{
		sotw:  make(chan discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, 4),
		delta: make(chan discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, 4),
	}
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, u)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return u, l.Addr().String()
}

func adsClient(t *testing.T, addr string) discoveryv3.AggregatedDiscoveryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
}

func waitCounts(t *testing.T, p *ADSProxy, node string, ok func(Counts) bool) Counts {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := p.Counts(node)
		if ok(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s counts: %+v", node, c)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The proxy counts one ACK or NACK per forwarded response, by the nonce the client names:
// a repeated nonce, a nonce it never forwarded and a request without one count nothing;
// NACK messages are kept; a node whose streams all closed starts again from zero.
func TestADSProxyCountsEachAnsweredResponseOnce(t *testing.T) {
	up, upAddr := startUpstream(t)
	p := StartADSProxy(t, upAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	sctx, closeStream := context.WithCancel(ctx)
	cs, err := adsClient(t, p.Addr).StreamAggregatedResources(sctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(r *discoveryv3.DiscoveryRequest) {
		t.Helper()
		if err := cs.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n1"}, TypeUrl: cdsType})
	us := <-up.sotw
	// Every request reaches the control plane unchanged.
	if r, err := us.Recv(); err != nil || r.GetNode().GetId() != "n1" || r.GetTypeUrl() != cdsType {
		t.Fatalf("forwarded %v %v", r, err)
	}
	respond := func(typ, version, nonce string) {
		t.Helper()
		if err := us.Send(&discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: version, Nonce: nonce}); err != nil {
			t.Fatal(err)
		}
		if r, err := cs.Recv(); err != nil || r.GetNonce() != nonce || r.GetVersionInfo() != version {
			t.Fatalf("client got %v %v", r, err)
		}
	}
	forwarded := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, err := us.Recv(); err != nil {
				t.Fatal(err)
			}
		}
	}
	respond(cdsType, "v1", "1")
	send(&discoveryv3.DiscoveryRequest{TypeUrl: cdsType, VersionInfo: "v1", ResponseNonce: "1"})
	send(&discoveryv3.DiscoveryRequest{TypeUrl: cdsType, VersionInfo: "v1", ResponseNonce: "1"})     // repeated
	send(&discoveryv3.DiscoveryRequest{TypeUrl: cdsType, VersionInfo: "v1", ResponseNonce: "other"}) // never sent
	respond(cdsType, "v2", "2")
	nack := &discoveryv3.DiscoveryRequest{TypeUrl: cdsType, VersionInfo: "v1", ResponseNonce: "2", ErrorDetail: &statuspb.Status{Code: 3, Message: "resource index 0: bad"}}
	send(nack)
	send(nack) // grpc-js repeats a NACK with the same nonce
	respond(ldsType, "l1", "3")
	send(&discoveryv3.DiscoveryRequest{TypeUrl: ldsType, VersionInfo: "l1", ResponseNonce: "3"})
	forwarded(6)

	c := p.Counts("n1")
	want := Counts{ACKs: map[string]int{"cds": 1, "lds": 1}, NACKs: map[string]int{"cds": 1},
		NACKErrors: []string{"cds: resource index 0: bad"}, Answered: map[string]string{"cds": "v2", "lds": "l1"}, Streams: 1}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("counts %+v, want %+v", c, want)
	}
	if c.TotalNACKs() != 1 {
		t.Fatalf("total NACKs %d", c.TotalNACKs())
	}
	if got := p.Nodes(); !reflect.DeepEqual(got, []string{"n1"}) {
		t.Fatalf("nodes %v", got)
	}

	// A closed stream leaves the node without streams; a new one starts from zero.
	closeStream()
	waitCounts(t, p, "n1", func(c Counts) bool { return c.Streams == 0 })
	if got := p.Nodes(); len(got) != 0 {
		t.Fatalf("nodes after close %v", got)
	}
	cs2, err := adsClient(t, p.Addr).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs2.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n1"}, TypeUrl: cdsType}); err != nil {
		t.Fatal(err)
	}
	c = waitCounts(t, p, "n1", func(c Counts) bool { return c.Streams == 1 })
	if len(c.ACKs) != 0 || len(c.NACKs) != 0 || len(c.NACKErrors) != 0 {
		t.Fatalf("a reconnected node kept its old counts: %+v", c)
	}
	// A nonce of another stream is not this stream's response.
	if err := cs2.Send(&discoveryv3.DiscoveryRequest{TypeUrl: cdsType, ResponseNonce: "1"}); err != nil {
		t.Fatal(err)
	}
	us2 := <-up.sotw
	for i := 0; i < 2; i++ {
		if _, err := us2.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if c := p.Counts("n1"); len(c.ACKs) != 0 {
		t.Fatalf("a nonce from another stream counted: %+v", c)
	}
}

// Delta streams are counted the same way, by the nonce of each forwarded response.
func TestADSProxyCountsDelta(t *testing.T) {
	up, upAddr := startUpstream(t)
	p := StartADSProxy(t, upAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := adsClient(t, p.Addr).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "d1"}, TypeUrl: cdsType}); err != nil {
		t.Fatal(err)
	}
	us := <-up.delta
	if _, err := us.Recv(); err != nil {
		t.Fatal(err)
	}
	for i, nonce := range []string{"a", "b"} {
		if err := us.Send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: cdsType, SystemVersionInfo: "s" + nonce, Nonce: nonce}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.Recv(); err != nil {
			t.Fatal(err)
		}
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: cdsType, ResponseNonce: nonce}
		if i == 1 {
			req.ErrorDetail = &statuspb.Status{Code: 3, Message: "no"}
		}
		if err := cs.Send(req); err != nil {
			t.Fatal(err)
		}
		if _, err := us.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	c := p.Counts("d1")
	if c.ACKs["cds"] != 1 || c.NACKs["cds"] != 1 || c.Answered["cds"] != "sb" || !reflect.DeepEqual(c.NACKErrors, []string{"cds: no"}) {
		t.Fatalf("delta counts %+v", c)
	}
}

// CorruptNext corrupts exactly the next response of the type to the node: every resource
// under a type no client takes, nonce and version kept; other types and later responses
// pass unchanged.
func TestADSProxyCorruptNext(t *testing.T) {
	up, upAddr := startUpstream(t)
	p := StartADSProxy(t, upAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cs, err := adsClient(t, p.Addr).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "c1"}, TypeUrl: cdsType}); err != nil {
		t.Fatal(err)
	}
	us := <-up.sotw
	if _, err := us.Recv(); err != nil {
		t.Fatal(err)
	}
	p.CorruptNext("c1", cdsType)
	p.CorruptNext("other", ldsType)
	res := func(typ, nonce string) *discoveryv3.DiscoveryResponse {
		return &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: "v" + nonce, Nonce: nonce,
			Resources: []*anypb.Any{{TypeUrl: typ, Value: []byte{0x0a, 0x01, 'x'}}, {TypeUrl: typ, Value: []byte{0x0a, 0x01, 'y'}}}}
	}
	for _, step := range []struct {
		typ, nonce string
		corrupt    bool
	}{{ldsType, "1", false}, {cdsType, "2", true}, {cdsType, "3", false}} {
		if err := us.Send(res(step.typ, step.nonce)); err != nil {
			t.Fatal(err)
		}
		got, err := cs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got.GetNonce() != step.nonce || got.GetVersionInfo() != "v"+step.nonce || len(got.GetResources()) != 2 {
			t.Fatalf("response %s forwarded as %v", step.nonce, got)
		}
		for _, r := range got.GetResources() {
			if corrupted := r.GetTypeUrl() == corruptType; corrupted != step.corrupt || (!corrupted && r.GetTypeUrl() != step.typ) {
				t.Fatalf("response %s (corrupt %v): resource type %s", step.nonce, step.corrupt, r.GetTypeUrl())
			}
		}
	}
	if p.Corrupting("c1", cdsType) || !p.Corrupting("other", ldsType) {
		t.Fatal("a corruption was used up by the wrong node or type")
	}
}
