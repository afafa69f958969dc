package server

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The tracker sees every request and response of every client. These benchmarks drive its
// callbacks the way go-control-plane does for 100 SotW streams over the four types: one
// response then its ACK (or NACK) per op, with responses of n clusters-sized resources.
const benchStreams = 100

var benchTypes = []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType}

// benchResources returns n marshaled resources of each type (clusters of about 150 bytes,
// the others smaller) named route/r<i>/0; gen changes their content.
func benchResources(b *testing.B, n int, gen int) map[string][]*anypb.Any {
	out := map[string][]*anypb.Any{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("route/r%05d/0", i)
		for _, m := range []proto.Message{
			&listenerv3.Listener{Name: name, StatPrefix: strconv.Itoa(gen)},
			&routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: strconv.Itoa(gen), Domains: []string{"*"}}}},
			&clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Duration(gen+1) * time.Second),
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: name,
					EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
			&endpointv3.ClusterLoadAssignment{ClusterName: name, Policy: &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(uint32(100 + gen))}},
		} {
			a, err := anypb.New(m)
			if err != nil {
				b.Fatal(err)
			}
			out[a.GetTypeUrl()] = append(out[a.GetTypeUrl()], a)
		}
	}
	return out
}

func benchTracker(b *testing.B) *tracker {
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	tr := newTracker(slog.New(slog.DiscardHandler), m, time.Now)
	for s := 1; s <= benchStreams; s++ {
		node := &corev3.Node{Id: fmt.Sprintf("client-%03d", s), UserAgentName: "gRPC Go"}
		if err := tr.OnStreamRequest(int64(s), &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ListenerType}); err != nil {
			b.Fatal(err)
		}
	}
	return tr
}

// benchRound sends response nonce on stream s for type typ and answers it (detail "" ACKs).
func benchRound(b *testing.B, tr *tracker, s int64, typ, nonce string, res []*anypb.Any, detail string) {
	tr.OnStreamResponse(context.Background(), s, nil, &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: nonce, Nonce: nonce, Resources: res})
	req := &discoveryv3.DiscoveryRequest{TypeUrl: typ, ResponseNonce: nonce, VersionInfo: nonce}
	if detail != "" {
		req.ErrorDetail = &rpcstatus.Status{Code: 3, Message: detail}
	}
	if err := tr.OnStreamRequest(s, req); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkTrackerACK is one response and its ACK: the path every client takes on every push.
// "rejected" holds one rejected resource per stream and type first, so each ACK settles it.
func BenchmarkTrackerACK(b *testing.B) {
	for _, n := range []int{100, 10000} {
		for _, rejected := range []bool{false, true} {
			b.Run(fmt.Sprintf("resources=%d/rejected=%v", n, rejected), func(b *testing.B) {
				res := benchResources(b, n, 0)
				tr := benchTracker(b)
				i := 0
				if rejected {
					for s := 1; s <= benchStreams; s++ {
						for _, typ := range benchTypes {
							i++
							benchRound(b, tr, int64(s), typ, strconv.Itoa(i), res[typ], `resource "route/r00001/0": bad`)
						}
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					i++
					typ := benchTypes[i%len(benchTypes)]
					benchRound(b, tr, int64(i%benchStreams+1), typ, strconv.Itoa(i), res[typ], "")
				}
			})
		}
	}
}

// BenchmarkTrackerACKParallel is BenchmarkTrackerACK with 100 resources from every core at
// once: what the tracker's one lock costs when all clients answer together.
func BenchmarkTrackerACKParallel(b *testing.B) {
	res := benchResources(b, 100, 0)
	tr := benchTracker(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			s := int64(i%benchStreams + 1)
			typ := benchTypes[i%len(benchTypes)]
			benchRound(b, tr, s, typ, strconv.Itoa(i)+"-"+strconv.FormatInt(s, 10), res[typ], "")
		}
	})
}

// BenchmarkTrackerNACK is one response and its NACK, attributed by index (grpc-js), by a
// quoted name (grpc-go), or to every resource (a message naming none).
func BenchmarkTrackerNACK(b *testing.B) {
	for _, n := range []int{100, 10000} {
		for _, style := range []struct{ name, msg string }{
			{"index", "xDS response validation errors: [resource index 7: LB policy is not supported]"},
			{"quoted", `error parsing "ClusterResource" response: resource "route/r00007/0": unsupported`},
			{"none", "something went wrong"},
		} {
			b.Run(fmt.Sprintf("resources=%d/%s", n, style.name), func(b *testing.B) {
				// Alternate two generations so each NACK rejects new versions and each
				// ACK clears them: the held rejections stay bounded.
				c := resourcev3.ClusterType
				res := [][]*anypb.Any{benchResources(b, n, 0)[c], benchResources(b, n, 1)[c]}
				tr := benchTracker(b)
				i := 0
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					i++
					s := int64(i%benchStreams + 1)
					benchRound(b, tr, s, resourcev3.ClusterType, strconv.Itoa(2*i), res[0], style.msg)
					benchRound(b, tr, s, resourcev3.ClusterType, strconv.Itoa(2*i+1), res[1], "")
				}
			})
		}
	}
}

// BenchmarkTrackerACKBesideRejected is an ACK of 100 resources on one stream while another
// stream, holding a rejection, ACKs responses of 10,000 resources in a loop: what one
// client's large responses cost the others through the tracker's lock.
func BenchmarkTrackerACKBesideRejected(b *testing.B) {
	small, large := benchResources(b, 100, 0), benchResources(b, 10000, 0)
	tr := benchTracker(b)
	c := resourcev3.ClusterType
	benchRound(b, tr, 1, c, "x0", large[c], `resource "route/r00001/0": bad`)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			benchRound(b, tr, 1, c, "x"+strconv.Itoa(i), large[c], "")
		}
	}()
	i := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		i++
		typ := benchTypes[i%len(benchTypes)]
		benchRound(b, tr, int64(i%(benchStreams-1)+2), typ, strconv.Itoa(i), small[typ], "")
	}
	b.StopTimer()
	close(stop)
	<-done
}

// BenchmarkResponseMarshal is the reference for the tracker's per-response work: what
// go-control-plane does for every response on every stream, marshaling each resource of it
// (here the clusters of BenchmarkTrackerACK, 100 and 10,000).
func BenchmarkResponseMarshal(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("resources=%d", n), func(b *testing.B) {
			var msgs []proto.Message
			for _, a := range benchResources(b, n, 0)[resourcev3.ClusterType] {
				m, err := a.UnmarshalNew()
				if err != nil {
					b.Fatal(err)
				}
				msgs = append(msgs, m)
			}
			b.ReportAllocs()
			for b.Loop() {
				for _, m := range msgs {
					if _, err := anypb.New(m); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
