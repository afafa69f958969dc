package server

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/api-gateway/api-gateway/envoy"
)

// A NACK is attributed to the resources it names as whole names, or by index (grpc-js);
// a name inside a longer one is no mention.
func TestNACKAttribution(t *testing.T) {
	var names []string
	for i := 0; i <= 10; i++ {
		names = append(names, fmt.Sprintf("route/a/%d", i))
	}
	names = append(names, "grpc/a.test", "a.test") // 11, 12
	r := &response{delta: true, names: names, versions: make([]string, len(names))}
	cases := []struct {
		msg  string
		want string
		how  string
	}{
		{"Error adding/updating cluster(s) route/a/1: bad", "route/a/1", "named"},
		{"Error adding/updating cluster(s) route/a/10: bad, route/a/2: worse", "route/a/2 route/a/10", "named"},
		{"xDS response validation errors: [resource index 1: x]", "route/a/1", "index"},
		{"xDS response validation errors: [resource index 10: x; resource index 1: y]", "route/a/10 route/a/1", "index"},
		{`error parsing "ClusterResource" response: resource "route/a/1": unlike route/a/10`, "route/a/1", "named"},
		{"listener a.test.", "a.test", "named"},
		{"route configuration grpc/a.test: bad", "grpc/a.test", "named"},
		{"route/a/100 and xroute/a/1 and route/a/1x", strings.Join(names, " "), "all"},
		{"resource index 13: out of range; resource index 99999999999999999999: overflow", strings.Join(names, " "), "all"},
	}
	for _, c := range cases {
		idx, how := attribute(r, c.msg)
		var got []string
		for _, i := range idx {
			got = append(got, names[i])
		}
		if strings.Join(got, " ") != c.want || how != c.how {
			t.Errorf("%q: got %v (%s), want %s (%s)", c.msg, got, how, c.want, c.how)
		}
	}
}

// A route configuration NACK concerns the routes its message names (route r1 or its
// condition r1/2, never r10 for r1; a cluster route/r1/0 names no route), or every route of
// it when it names none.
func TestRouteConfigNACKConcernsNamedRoutes(t *testing.T) {
	routes := []string{"r1", "r10"}
	edge := Groups[0]
	st := &state{}
	for _, c := range []struct {
		msg     string
		concern map[string]bool
	}{
		{"route r10: bad regex", map[string]bool{"r1": false, "r10": true}},
		{"route r1/2: bad regex", map[string]bool{"r1": true, "r10": false}},
		{"cluster route/r1/0 is unknown", map[string]bool{"r1": true, "r10": true}},
		{"something is wrong", map[string]bool{"r1": true, "r10": true}},
	} {
		n := &NACK{Error: c.msg, tokens: tokens(c.msg)}
		for id, want := range c.concern {
			rej := rejected{typeURL: resourcev3.RouteType, name: envoy.EnvoyRouteConfigName, nack: n}
			if got := concerns(edge, rej, id, nil, st, routes); got != want {
				t.Errorf("%q concerns %s: %v, want %v", c.msg, id, got, want)
			}
		}
	}
}

// What a client can make the tracker hold is bounded: rejected resources per stream, delta
// responses remembered per type, and a NACK's stored message.
func TestTrackerBounds(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(slog.New(slog.DiscardHandler), m, time.Now)
	node := &corev3.Node{Id: "n", UserAgentName: "envoy"}
	if err := tr.OnStreamDeltaRequest(1, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	var res []*discoveryv3.Resource
	for i := range 2 * maxRejectedPerStream {
		res = append(res, &discoveryv3.Resource{Name: fmt.Sprintf("c%d", i), Version: "1"})
	}
	for i := range 3 * deltaPerType {
		tr.OnStreamDeltaResponse(1, nil, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ClusterType,
			Nonce: fmt.Sprint(i), SystemVersionInfo: fmt.Sprint(i), Resources: res})
	}
	if got := len(tr.streams[streamKey{id: 1, delta: true}].delta[resourcev3.ClusterType]); got != deltaPerType {
		t.Fatalf("%d delta responses remembered", got)
	}
	// A message naming nothing rejects every resource: at most the cap is held.
	huge := strings.Repeat("é", 1<<19) // 1 MiB
	last := fmt.Sprint(3*deltaPerType - 1)
	for range 3 {
		if err := tr.OnStreamDeltaRequest(1, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType,
			ResponseNonce: last, ErrorDetail: statusProto(huge)}); err != nil {
			t.Fatal(err)
		}
	}
	nodes := tr.Nodes()
	if len(nodes) != 1 || nodes[0].Nacks["cds"] != 1 {
		t.Fatalf("nodes %+v", nodes)
	}
	// Past the cap the rejection is of every resource of the type ("*").
	if got := nodes[0].Rejected["cds"]; len(got) != maxRejectedPerStream+1 || got[0] != "*" {
		t.Fatalf("%d rejected resources held, want the cap %d and \"*\"", len(got), maxRejectedPerStream)
	}
	if e := nodes[0].LastNACK.Error; len(e) > maxErrorBytes || !utf8.ValidString(e) || !strings.HasPrefix(e, "éé") {
		t.Fatalf("stored error of %d bytes (valid UTF-8: %v)", len(e), utf8.ValidString(e))
	}
	if n := len(tr.nodes["edge/n"].LastNACK.tokens); n > maxTokens {
		t.Fatalf("%d tokens kept", n)
	}
}

// On a delta stream a rejected resource stays rejected across ACKs of responses that do not
// carry it, and clears when an ACKed response carries a new version of it or removes it;
// a NACK repeated with the same nonce counts once.
func TestDeltaRejectionClears(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracker(slog.New(slog.DiscardHandler), m, time.Now)
	node := &corev3.Node{Id: "n", UserAgentName: "envoy"}
	if err := tr.OnStreamDeltaRequest(1, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	nonce := 0
	send := func(removed []string, res ...string) string {
		nonce++
		r := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ClusterType, Nonce: fmt.Sprint(nonce), RemovedResources: removed}
		for i := 0; i < len(res); i += 2 {
			r.Resources = append(r.Resources, &discoveryv3.Resource{Name: res[i], Version: res[i+1]})
		}
		tr.OnStreamDeltaResponse(1, nil, r)
		return r.Nonce
	}
	answer := func(n, msg string) {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: n}
		if msg != "" {
			req.ErrorDetail = statusProto(msg)
		}
		if err := tr.OnStreamDeltaRequest(1, req); err != nil {
			t.Fatal(err)
		}
	}
	rejectedNow := func() string { return strings.Join(tr.Nodes()[0].Rejected["cds"], " ") }

	n := send(nil, "route/x/0", "1", "route/y/0", "1")
	answer(n, "Error adding/updating cluster(s) route/x/0: bad")
	answer(n, "Error adding/updating cluster(s) route/x/0: bad")
	if got := rejectedNow(); got != "route/x/0" {
		t.Fatalf("rejected %q", got)
	}
	answer(send(nil, "route/y/0", "2"), "")
	if got := rejectedNow(); got != "route/x/0" {
		t.Fatalf("rejected %q after an ACK not carrying route/x/0", got)
	}
	answer(send(nil, "route/x/0", "1", "route/y/0", "3"), "")
	if got := rejectedNow(); got != "route/x/0" {
		t.Fatalf("rejected %q after an ACK carrying the same rejected version", got)
	}
	answer(send(nil, "route/x/0", "2"), "")
	if got := rejectedNow(); got != "" {
		t.Fatalf("rejected %q after an ACKed new version", got)
	}
	n = send(nil, "route/z/0", "1")
	answer(n, "route/z/0: bad")
	answer(send([]string{"route/z/0"}), "")
	if got := rejectedNow(); got != "" {
		t.Fatalf("rejected %q after its removal", got)
	}
	info := tr.Nodes()[0]
	if info.Nacks["cds"] != 2 || info.Acks["cds"] != 4 {
		t.Fatalf("acks %v nacks %v", info.Acks, info.Nacks)
	}
}
