package xdstest

import (
	"context"
	"errors"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// ADSProxy stands between xDS clients and a control plane: every client's bootstrap names
// the proxy, which forwards each AggregatedDiscoveryService stream (state of the world and
// delta) to the control plane unchanged and counts, per node and type, what the client
// answered. It is the clients' own view of their ACKs and NACKs, to hold against what the
// control plane reports.
//
// A request is an ACK when its response_nonce names a response the proxy forwarded on the
// same stream and it carries no error_detail; a NACK when it carries one. Each response is
// counted once: a client that repeats a nonce (grpc-js repeats a NACK's error_detail with
// the same nonce) adds nothing.
type ADSProxy struct {
	Addr     string
	upstream discoveryv3.AggregatedDiscoveryServiceClient

	mu    sync.Mutex
	nodes map[string]*proxyNode
	// corrupt holds, per node id, the types whose next SotW response is to be corrupted.
	corrupt map[string]map[string]bool
}

// Counts is what one node's client answered, by short type name (lds, rds, cds, eds).
type Counts struct {
	ACKs  map[string]int
	NACKs map[string]int
	// NACKErrors are the NACKs' error messages, "type: message", in the order they came.
	NACKErrors []string
	// Answered is the version of the latest response each type's client ACKed or NACKed.
	Answered map[string]string
	// Streams is how many of the node's streams are open.
	Streams int
}

type proxyNode struct {
	id     string
	counts Counts
}

// proxyStream is what the proxy knows of one stream: the responses it forwarded, by nonce.
type proxyStream struct {
	node     *proxyNode
	sent     map[string]sentResponse
	answered map[string]bool
}

type sentResponse struct{ typeURL, version string }

// StartADSProxy starts a proxy on a free loopback port forwarding to the control plane's
// gRPC address upstream; it stops at test cleanup.
func StartADSProxy(t testing.TB, upstream string) *ADSProxy {
	t.Helper()
	cc, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ADSProxy{Addr: l.Addr().String(), upstream: discoveryv3.NewAggregatedDiscoveryServiceClient(cc), nodes: map[string]*proxyNode{}, corrupt: map[string]map[string]bool{}}
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, adsForwarder{p: p})
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Stop()
		_ = cc.Close()
	})
	return p
}

// Counts returns a copy of a node's counts (zero when the node never connected).
func (p *ADSProxy) Counts(nodeID string) Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := Counts{ACKs: map[string]int{}, NACKs: map[string]int{}, Answered: map[string]string{}}
	n := p.nodes[nodeID]
	if n == nil {
		return out
	}
	for k, v := range n.counts.ACKs {
		out.ACKs[k] = v
	}
	for k, v := range n.counts.NACKs {
		out.NACKs[k] = v
	}
	for k, v := range n.counts.Answered {
		out.Answered[k] = v
	}
	out.NACKErrors = append([]string(nil), n.counts.NACKErrors...)
	out.Streams = n.counts.Streams
	return out
}

// Nodes returns the ids of the nodes with an open stream, sorted.
func (p *ADSProxy) Nodes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for id, n := range p.nodes {
		if n.counts.Streams > 0 {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// TotalNACKs is the sum of a node's NACKs over every type.
func (c Counts) TotalNACKs() int {
	n := 0
	for _, v := range c.NACKs {
		n += v
	}
	return n
}

// TypeName is the short name of an xDS type URL (lds, rds, cds, eds), as the control plane's
// API and metrics name types.
func TypeName(typeURL string) string {
	switch typeURL {
	case "type.googleapis.com/envoy.config.listener.v3.Listener":
		return "lds"
	case "type.googleapis.com/envoy.config.route.v3.RouteConfiguration":
		return "rds"
	case "type.googleapis.com/envoy.config.cluster.v3.Cluster":
		return "cds"
	case "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment":
		return "eds"
	}
	return typeURL[strings.LastIndex(typeURL, ".")+1:]
}

// open attaches a stream to its node on the stream's first request naming one. A node
// whose streams had all closed starts again from zero, as the control plane forgets a node
// once its last stream closes.
func (p *ADSProxy) open(st *proxyStream, nodeID string) {
	if st.node != nil || nodeID == "" {
		return
	}
	n := p.nodes[nodeID]
	if n == nil || n.counts.Streams == 0 {
		n = &proxyNode{id: nodeID, counts: Counts{ACKs: map[string]int{}, NACKs: map[string]int{}, Answered: map[string]string{}}}
		p.nodes[nodeID] = n
	}
	n.counts.Streams++
	st.node = n
}

func (p *ADSProxy) close(st *proxyStream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st.node != nil {
		st.node.counts.Streams--
	}
}

// request records a client's request: an ACK or a NACK of a response forwarded on st.
func (p *ADSProxy) request(st *proxyStream, nodeID, nonce string, errorDetail *string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open(st, nodeID)
	if nonce == "" || st.node == nil || st.answered[nonce] {
		return
	}
	s, ok := st.sent[nonce]
	if !ok {
		return
	}
	st.answered[nonce] = true
	typ := TypeName(s.typeURL)
	st.node.counts.Answered[typ] = s.version
	if errorDetail != nil {
		st.node.counts.NACKs[typ]++
		st.node.counts.NACKErrors = append(st.node.counts.NACKErrors, typ+": "+*errorDetail)
		return
	}
	st.node.counts.ACKs[typ]++
}

// response records a response before it is forwarded, so the client's answer always finds it.
func (p *ADSProxy) response(st *proxyStream, typeURL, version, nonce string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st.sent[nonce] = sentResponse{typeURL: typeURL, version: version}
}

// corruptType is the type URL a corrupted response's resources carry: a type no xDS client
// takes for any resource type (grpc-go: "unexpected resource type", grpc-js: "resource index
// N: incorrect resource type"), so every client rejects the response, whatever it holds.
const corruptType = "type.googleapis.com/google.protobuf.Empty"

// CorruptNext makes the next state-of-the-world response of typeURL that the proxy forwards
// to the node carry every resource under a type no client takes: the client NACKs a
// response the control plane built correctly, so a test gets a real NACK from a real client.
// The response keeps its nonce and version: the client's NACK names what the control plane
// sent, and the proxy counts it as it counts any answer.
func (p *ADSProxy) CorruptNext(nodeID, typeURL string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.corrupt[nodeID] == nil {
		p.corrupt[nodeID] = map[string]bool{}
	}
	p.corrupt[nodeID][typeURL] = true
}

// Corrupting reports whether a CorruptNext for the node and type is still to happen.
func (p *ADSProxy) Corrupting(nodeID, typeURL string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.corrupt[nodeID][typeURL]
}

// sotwResponse records a SotW response and corrupts it when CorruptNext asked for it.
func (p *ADSProxy) sotwResponse(st *proxyStream, res *discoveryv3.DiscoveryResponse) {
	p.response(st, res.GetTypeUrl(), res.GetVersionInfo(), res.GetNonce())
	p.mu.Lock()
	defer p.mu.Unlock()
	if st.node == nil || !p.corrupt[st.node.id][res.GetTypeUrl()] || len(res.GetResources()) == 0 {
		return
	}
	delete(p.corrupt[st.node.id], res.GetTypeUrl())
	for _, r := range res.GetResources() {
		r.TypeUrl = corruptType
	}
}

type adsForwarder struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	p *ADSProxy
}

// upstreamContext carries the client's request metadata to the control plane.
func upstreamContext(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		if !strings.HasPrefix(k, ":") && k != "content-type" && k != "te" && k != "user-agent" && !strings.HasPrefix(k, "grpc-") {
			out[k] = v
		}
	}
	return metadata.NewOutgoingContext(ctx, out)
}

// pipe runs the two directions of a stream until either ends; a client that closes its
// side cleanly ends the stream without error.
func pipe(cancel context.CancelFunc, down, up func() error) error {
	errc := make(chan error, 2)
	go func() { errc <- down() }()
	go func() { errc <- up() }()
	err := <-errc
	cancel()
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (f adsForwarder) StreamAggregatedResources(ds discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return relay(f.p, ds, f.p.upstream.StreamAggregatedResources, f.p.sotwResponse)
}

func (f adsForwarder) DeltaAggregatedResources(ds discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return relay(f.p, ds, f.p.upstream.DeltaAggregatedResources, func(st *proxyStream, res *discoveryv3.DeltaDiscoveryResponse) {
		f.p.response(st, res.GetTypeUrl(), res.GetSystemVersionInfo(), res.GetNonce())
	})
}

// adsRequest is what the proxy reads of a request, SotW or delta.
type adsRequest interface {
	GetNode() *corev3.Node
	GetResponseNonce() string
	GetErrorDetail() *statuspb.Status
}

// relay forwards one client stream (SotW or delta) to the gateway and back, counting the
// client's answers from its requests and what was sent from the gateway's responses.
func relay[Req any, Res any, PReq interface {
	*Req
	adsRequest
}](p *ADSProxy, ds grpc.BidiStreamingServer[Req, Res],
	open func(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[Req, Res], error),
	sent func(*proxyStream, *Res)) error {
	ctx, cancel := context.WithCancel(upstreamContext(ds.Context()))
	defer cancel()
	us, err := open(ctx)
	if err != nil {
		return err
	}
	st := &proxyStream{sent: map[string]sentResponse{}, answered: map[string]bool{}}
	defer p.close(st)
	return pipe(cancel, func() error {
		for {
			req, err := ds.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					_ = us.CloseSend()
				}
				return err
			}
			r := PReq(req)
			var detail *string
			if ed := r.GetErrorDetail(); ed != nil {
				m := ed.GetMessage()
				detail = &m
			}
			p.request(st, r.GetNode().GetId(), r.GetResponseNonce(), detail)
			if err := us.Send(req); err != nil {
				return err
			}
		}
	}, func() error {
		for {
			res, err := us.Recv()
			if err != nil {
				return err
			}
			sent(st, res)
			if err := ds.Send(res); err != nil {
				return err
			}
		}
	})
}
