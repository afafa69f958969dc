package server

import (
	"context"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// What one client can make the tracker hold is bounded: a NACK's message is cut to
// maxErrorBytes (stored and logged), a stream remembers few responses per type (a SotW
// response's resources only until it is answered), and a stream
// holds at most maxRejectedPerStream rejected resources (names come only from responses this
// server sent on it, so the bound is the configuration's size, as for go-control-plane's own
// per-stream state; the cap is a second line).
const (
	maxErrorBytes = 4 << 10
	// sotwPerType: go-control-plane sends the next SotW response of a type only after a
	// request naming the last one's nonce (it ignores stale nonces), so the last is enough.
	sotwPerType          = 1
	deltaPerType         = 16 // delta responses awaiting an answer, per stream and type
	maxRejectedPerStream = 4096
	maxTokens            = 1024
)

// NACK is one rejected response: counted and recorded once per stream and response nonce.
type NACK struct {
	Node    string `json:"node"`
	Group   string `json:"group"`
	Type    string `json:"type"`
	Version string `json:"version"`
	Nonce   string `json:"nonce,omitempty"`
	// Resources are the resources of the response the NACK rejected: those its message
	// names, or those at the indices it gives ("resource index N", grpc-js), or every
	// resource of the response when it names none (Attribution "named", "index", "all").
	Resources   []string  `json:"resources,omitempty"`
	Attribution string    `json:"attribution,omitempty"`
	Error       string    `json:"error"` // at most 4 KiB
	At          time.Time `json:"at"`
	tokens      []string  // the message's name-like tokens (route ids in route configuration errors)
}

// NodeInfo is one connected xDS client (all its streams).
//
// Acks and Nacks count, per short type name (lds, rds, cds, eds), the responses of this
// server the node answered. One ACK is a request on a stream whose response_nonce names a
// response this server sent on that stream (of the request's type) and that carries no
// error_detail; one NACK is the same with error_detail. Each response is counted once, by
// the first request naming its nonce: later requests repeating that nonce (a subscription
// change, or grpc-js repeating error_detail) are not counted, and neither are requests
// with an empty nonce or a nonce this server did not send on that stream (or that is not
// the last SotW response of its type there, which go-control-plane ignores as stale too, or
// not among the last 16 unanswered delta responses of its type). The counts live as long as the node has a stream
// open; api_gateway_xds_acks_total and api_gateway_xds_nacks_total count the same events.
type NodeInfo struct {
	ID          string            `json:"id"`
	Cluster     string            `json:"cluster"`
	Group       string            `json:"group"`
	UserAgent   string            `json:"user_agent,omitempty"`
	Streams     int               `json:"streams"`
	ConnectedAt time.Time         `json:"connected_at"`
	Acked       map[string]string `json:"acked"`
	Sent        map[string]string `json:"sent"`
	Acks        map[string]int    `json:"acks"`
	Nacks       map[string]int    `json:"nacks"`
	// Rejected lists, per type, the resources whose last version sent on a stream was
	// rejected there and not yet followed there by an ACKed new version (or stopped being
	// sent or subscribed), while that stream is open. "*" is every resource of the type: a
	// NACK rejected more than a stream holds by name (4096), until that stream ACKs the type.
	Rejected map[string][]string `json:"rejected,omitempty"`
	LastNACK *NACK               `json:"last_nack,omitempty"`

	// answered is, per type URL, the version of the last response ACKed or NACKed: a
	// NACKed response's resources that the NACK does not name were accepted.
	answered map[string]string
}

// rejection is one rejected resource: its version (delta: the resource version; SotW: a
// hash of its bytes) and the NACK.
type rejection struct {
	version string
	nack    *NACK
}

// response is one response sent on a stream. Of a SotW response only the names and the
// hashes of its resources are kept, read when it is sent: go-control-plane marshals each
// response per stream and drops it once sent, so keeping the resources until a client
// answers would let a client that never answers hold a copy of the configuration per stream.
type response struct {
	typeURL, version, nonce string
	delta                   bool
	nameBuf                 []byte   // SotW: the names, one after another
	nameEnd                 []int    // SotW: where each name ends in nameBuf
	hashes                  []uint64 // SotW: a hash of each resource's bytes
	names                   []string // delta: at hand; SotW: nil until needed (a NACK)
	versions                []string // delta: per-resource versions
	removed                 []string // delta
	answered                bool
}

// sotwResponse reads the names and hashes of a SotW response's resources.
func sotwResponse(resp *discoveryv3.DiscoveryResponse) *response {
	res := resp.GetResources()
	r := &response{typeURL: resp.GetTypeUrl(), version: resp.GetVersionInfo(), nonce: resp.GetNonce(),
		nameEnd: make([]int, len(res)), hashes: make([]uint64, len(res))}
	known := false
	switch r.typeURL {
	case resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType:
		known = true
	}
	// The names are read in place twice (to size the buffer, then to fill it): cheaper than
	// growing it.
	raw := func(a *anypb.Any) ([]byte, bool) {
		if known && a.GetTypeUrl() == r.typeURL {
			return nameField(a.GetValue())
		}
		return nil, false
	}
	size := 0
	for _, a := range res {
		b, _ := raw(a)
		size += len(b)
	}
	r.nameBuf = make([]byte, 0, size)
	for i, a := range res {
		if b, ok := raw(a); ok {
			r.nameBuf = append(r.nameBuf, b...)
		} else {
			r.nameBuf = append(r.nameBuf, anyName(a, r.typeURL)...)
		}
		r.nameEnd[i] = len(r.nameBuf)
		r.hashes[i] = xxhash.Sum64(a.GetValue())
	}
	return r
}

// sotwName is the i-th name of a SotW response, in place.
func (r *response) sotwName(i int) []byte {
	start := 0
	if i > 0 {
		start = r.nameEnd[i-1]
	}
	return r.nameBuf[start:r.nameEnd[i]]
}

// resourceNames returns the names of the response's resources, in order.
func (r *response) resourceNames() []string {
	if r.names == nil && !r.delta {
		r.names = make([]string, len(r.nameEnd))
		for i := range r.nameEnd {
			r.names[i] = string(r.sotwName(i))
		}
	}
	return r.names
}

// resourceVersion is the version of the i-th resource: delta's own, or for SotW a hash of
// its bytes (go-control-plane marshals deterministically: same content, same bytes).
func (r *response) resourceVersion(i int) string {
	if r.delta {
		return r.versions[i]
	}
	return strconv.FormatUint(r.hashes[i], 16)
}

// carried returns the version r carries of each name in rej. It runs on every ACK of a
// stream holding a rejection of the type: a SotW response's names are compared in place,
// the only work per resource.
func (r *response) carried(rej map[string]*rejection) map[string]string {
	out := make(map[string]string, len(rej))
	if r.delta || r.names != nil {
		for i, n := range r.resourceNames() {
			if rej[n] != nil {
				out[n] = r.resourceVersion(i)
			}
		}
		return out
	}
	for i := range r.nameEnd {
		if b := r.sotwName(i); rej[string(b)] != nil {
			out[string(b)] = r.resourceVersion(i)
		}
	}
	return out
}

type streamState struct {
	node  *NodeInfo
	sotw  map[string][]*response // by type URL: the latest responses, oldest first
	delta map[string][]*response // by type URL: unanswered responses, oldest first
	// rejected: what this stream's client rejects (type URL -> resource name). A rejection
	// is one client's: clients sharing a node id, or a client's next stream, answer only
	// for themselves, and it ends with the stream.
	rejected map[string]map[string]*rejection
	// nRejected counts them, at most maxRejectedPerStream: per stream, so that one client
	// cannot use up the room of another sharing its node id.
	nRejected int
	// overflow: per type URL, a NACK that rejected more than the stream could hold by name:
	// it rejects every resource of the type until the stream ACKs a response of the type.
	overflow map[string]*NACK
	// listeners: the listener names the stream subscribes to (nil: none asked yet; all:
	// a wildcard subscription, as Envoy's). A proxyless client asks for the listener of
	// each host it dialed: a route of another host is none of its business, and a client
	// whose host has no cluster never asks for clusters at all.
	listeners    map[string]bool
	allListeners bool
}

// maxListenersPerStream bounds the listener names remembered per stream; past it the stream
// counts as following every listener (its clients then weigh on every route's state, as
// before names were remembered).
const maxListenersPerStream = 4096

// followListeners records a SotW listener subscription (no names or "*": wildcard).
func (st *streamState) followListeners(names []string) {
	if len(names) == 0 || contains(names, "*") || len(names) > maxListenersPerStream {
		st.listeners, st.allListeners = nil, true
		return
	}
	st.allListeners = false
	st.listeners = make(map[string]bool, len(names))
	for _, n := range names {
		st.listeners[n] = true
	}
}

// followDeltaListeners applies a delta listener request's subscribe and unsubscribe lists.
func (st *streamState) followDeltaListeners(req *discoveryv3.DeltaDiscoveryRequest) {
	if st.allListeners {
		return
	}
	if st.listeners == nil && len(req.GetResourceNamesSubscribe()) == 0 && req.GetResponseNonce() == "" {
		st.allListeners = true // the first request names nothing: a wildcard subscription
		return
	}
	if st.listeners == nil {
		st.listeners = map[string]bool{}
	}
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" || len(st.listeners) >= maxListenersPerStream {
			st.listeners, st.allListeners = nil, true
			return
		}
		st.listeners[n] = true
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		delete(st.listeners, n)
	}
}

// find returns the remembered response of a type with the nonce, or nil.
func find(list []*response, nonce string) *response {
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].nonce == nonce {
			return list[i]
		}
	}
	return nil
}

// remember appends r to list, keeping at most max entries.
func remember(list []*response, r *response, max int) []*response {
	if len(list) >= max {
		list = append(list[:0], list[len(list)-max+1:]...)
	}
	return append(list, r)
}

// tracker implements the go-control-plane server callbacks: it follows nodes, ACKs and
// NACKs, attributes each NACK to the resources it rejects, and keeps a NACKed version from
// being sent again in a loop.
type tracker struct {
	log *slog.Logger
	m   *metrics
	now func() time.Time

	mu sync.Mutex
	// streams: go-control-plane numbers SotW and delta streams with separate counters (the
	// first of each is 1), so a stream is its kind and id.
	streams map[streamKey]*streamState
	nodes   map[string]*NodeInfo // by group + "/" + node id
	// gen counts changes to nodes, ACKs and NACKs; views caches group views per gen.
	gen   uint64
	views map[string]cachedView
}

type streamKey struct {
	id    int64
	delta bool
}

type cachedView struct {
	gen uint64
	v   groupView
}

func newTracker(log *slog.Logger, m *metrics, now func() time.Time) *tracker {
	return &tracker{log: log, m: m, now: now, streams: map[streamKey]*streamState{}, nodes: map[string]*NodeInfo{}}
}

// TypeName is the short name of a type URL used in metrics and the API (lds, rds, cds, eds).
func TypeName(typeURL string) string {
	switch typeURL {
	case resourcev3.ListenerType:
		return "lds"
	case resourcev3.RouteType:
		return "rds"
	case resourcev3.ClusterType:
		return "cds"
	case resourcev3.EndpointType:
		return "eds"
	}
	return typeURL[strings.LastIndex(typeURL, ".")+1:]
}

func (t *tracker) stream(k streamKey) *streamState {
	st := t.streams[k]
	if st == nil {
		st = &streamState{sotw: map[string][]*response{}, delta: map[string][]*response{}}
		t.streams[k] = st
	}
	return st
}

// attach records the node of a stream on its first request.
func (t *tracker) attach(st *streamState, n *corev3.Node) {
	if st.node != nil || n == nil {
		return
	}
	g := GroupOf(n)
	key := g + "/" + n.GetId()
	ni := t.nodes[key]
	if ni == nil {
		ni = &NodeInfo{ID: n.GetId(), Cluster: n.GetCluster(), Group: g, UserAgent: n.GetUserAgentName(),
			ConnectedAt: t.now(), Acked: map[string]string{}, Sent: map[string]string{},
			Acks: map[string]int{}, Nacks: map[string]int{}, answered: map[string]string{}}
		t.nodes[key] = ni
	}
	ni.Streams++
	st.node = ni
	t.gen++
	t.m.nodes.Set(float64(len(t.nodes)))
}

func (t *tracker) closed(k streamKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[k]
	delete(t.streams, k)
	if st == nil || st.node == nil {
		return
	}
	st.node.Streams--
	t.gen++
	if st.node.Streams <= 0 {
		delete(t.nodes, st.node.Group+"/"+st.node.ID)
	}
	t.m.nodes.Set(float64(len(t.nodes)))
}

// ack records an ACK of r: counted once; rejected resources of the type that r carries in
// a new version, or (SotW) no longer carries, or (delta) removes, are accepted now.
func (t *tracker) ack(st *streamState, r *response, v verdict) {
	ni := st.node
	r.answered = true
	ni.Acks[TypeName(r.typeURL)]++
	t.m.acks.WithLabelValues(TypeName(r.typeURL)).Inc()
	ni.Acked[r.typeURL] = r.version
	ni.answered[r.typeURL] = r.version
	t.settle(st, r, nil, v.at)
	delete(st.overflow, r.typeURL)
	r.release()
	t.gen++
}

// release drops an answered SotW response's names and hashes: nothing asks for them again.
func (r *response) release() {
	r.nameBuf, r.nameEnd, r.hashes, r.names = nil, nil, nil, nil
}

// settle clears the rejections of r's type that r answers: a resource r carries in another
// version than the rejected one, or that r removes (delta) or no longer carries (SotW
// listeners and clusters, whose responses hold every subscribed resource; a SotW route
// configuration or endpoint assignment left out of a response may just be unchanged, and
// ends its rejection when the client unsubscribes from it, see unsubscribed). Names in keep
// stay rejected.
func (t *tracker) settle(st *streamState, r *response, keep map[string]bool, at map[string]string) {
	rej := st.rejected[r.typeURL]
	if len(rej) == 0 {
		return
	}
	for name, x := range rej {
		if keep[name] {
			continue
		}
		version, carried := at[name]
		switch {
		case carried && version == x.version:
			continue
		case !carried && r.delta && !contains(r.removed, name):
			continue // a delta response carries only what changed
		case !carried && !r.delta && r.typeURL != resourcev3.ListenerType && r.typeURL != resourcev3.ClusterType:
			continue
		}
		delete(rej, name)
		st.nRejected--
	}
	if len(rej) == 0 {
		delete(st.rejected, r.typeURL)
	}
}

// nack records a NACK of r: counted once, attributed to the resources it names (or to all
// of r's when it names none); the other resources r carries in a new version were accepted.
func (t *tracker) nack(st *streamState, r *response, v verdict) {
	ni := st.node
	r.answered = true
	msg, how := v.msg, v.how
	n := &NACK{Node: ni.ID, Group: ni.Group, Type: TypeName(r.typeURL), Version: r.version, Nonce: r.nonce,
		Attribution: how, Error: msg, At: t.now(), tokens: v.tokens}
	keep := make(map[string]bool, len(v.names))
	rej := st.rejected[r.typeURL]
	for k, name := range v.names {
		n.Resources = append(n.Resources, name)
		keep[name] = true
		if rej == nil {
			rej = map[string]*rejection{}
			if st.rejected == nil {
				st.rejected = map[string]map[string]*rejection{}
			}
			st.rejected[r.typeURL] = rej
		}
		if rej[name] == nil {
			if st.nRejected >= maxRejectedPerStream {
				if st.overflow == nil {
					st.overflow = map[string]*NACK{}
				}
				st.overflow[r.typeURL] = n
				continue
			}
			st.nRejected++
		}
		rej[name] = &rejection{version: v.versions[k], nack: n}
	}
	if len(rej) == 0 {
		delete(st.rejected, r.typeURL)
	}
	t.settle(st, r, keep, v.at)
	r.release()
	ni.answered[r.typeURL] = r.version
	ni.Nacks[n.Type]++
	ni.LastNACK = n
	t.gen++
	t.m.nacks.WithLabelValues(n.Type).Inc()
	logged := n.Resources
	if len(logged) > 16 {
		logged = logged[:16]
	}
	t.log.Warn("xDS NACK", "node", ni.ID, "group", ni.Group, "type", n.Type, "version", r.version, "nonce", r.nonce,
		"rejected", len(n.Resources), "resources", logged, "attribution", how, "error", msg)
}

// verdict is what an answer to a response says, worked out before the tracker's lock is
// taken (the part that grows with the response's resources). go-control-plane calls a
// stream's callbacks on that stream's goroutine, the only one writing its responses and
// rejections, so it reads them without the lock; other goroutines only read them, under it.
type verdict struct {
	// at: the version the response carries of each name the stream rejects (settle).
	at map[string]string
	// NACK: its message (cut), the names it rejects with their versions, how they were found,
	// and its tokens.
	msg, how        string
	names, versions []string
	tokens          []string
}

func judge(st *streamState, r *response, nack bool, detail string) verdict {
	var v verdict
	if rej := st.rejected[r.typeURL]; len(rej) > 0 {
		v.at = r.carried(rej)
	}
	if !nack {
		return v
	}
	v.msg = truncate(detail, maxErrorBytes)
	var idx []int
	idx, v.how = attribute(r, v.msg)
	names := r.resourceNames()
	for _, i := range idx {
		v.names = append(v.names, names[i])
		v.versions = append(v.versions, r.resourceVersion(i))
	}
	v.tokens = tokens(v.msg)
	return v
}

// OnStreamOpen is called when a SotW stream opens.
func (t *tracker) OnStreamOpen(context.Context, int64, string) error { return nil }

// OnStreamClosed is called when a SotW stream closes.
func (t *tracker) OnStreamClosed(id int64, _ *corev3.Node) { t.closed(streamKey{id: id}) }

// OnStreamRequest sees every SotW request before the cache does. The first request naming
// a response's nonce ACKs or NACKs it (see NodeInfo). A NACK's version_info is set to the
// version just rejected (on every request repeating it too), so the cache treats the
// client as current and does not send the same resources again (a NACK loop); the next
// change is sent as usual.
func (t *tracker) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	t.mu.Lock()
	st := t.stream(streamKey{id: id})
	t.attach(st, req.GetNode())
	if req.GetTypeUrl() == resourcev3.ListenerType {
		st.followListeners(req.GetResourceNames())
		t.gen++
	}
	t.mu.Unlock()
	if st.node == nil || req.GetResponseNonce() == "" {
		return nil
	}
	r := find(st.sotw[req.GetTypeUrl()], req.GetResponseNonce())
	if r == nil {
		return nil
	}
	ed := req.GetErrorDetail()
	if ed != nil {
		req.VersionInfo = r.version
	}
	var v verdict
	if !r.answered {
		v = judge(st, r, ed != nil, ed.GetMessage())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case r.answered:
	case ed != nil:
		t.nack(st, r, v)
	default:
		t.ack(st, r, v)
	}
	// The request names the last response's nonce, so go-control-plane applies its
	// subscription: what the client no longer subscribes to, it no longer rejects.
	if rej := st.rejected[r.typeURL]; len(rej) > 0 {
		t.unsubscribed(st, r.typeURL, req.GetResourceNames())
	}
	return nil
}

// unsubscribed drops the stream's rejections of a type that a SotW subscription (names;
// none or "*" is a wildcard, which keeps them) no longer names.
func (t *tracker) unsubscribed(st *streamState, typeURL string, names []string) {
	if len(names) == 0 || contains(names, "*") {
		return
	}
	subscribed := make(map[string]bool, len(names))
	for _, n := range names {
		subscribed[n] = true
	}
	rej := st.rejected[typeURL]
	for name := range rej {
		if !subscribed[name] {
			delete(rej, name)
			st.nRejected--
			t.gen++
		}
	}
	if len(rej) == 0 {
		delete(st.rejected, typeURL)
	}
}

// OnStreamResponse records what was sent: the names and hashes of the response's resources
// (read before the lock is taken), until it is answered or a later response replaces it.
func (t *tracker) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	r := sotwResponse(resp)
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stream(streamKey{id: id})
	st.sotw[r.typeURL] = remember(st.sotw[r.typeURL], r, sotwPerType)
	if st.node != nil {
		st.node.Sent[r.typeURL] = r.version
	}
	t.m.pushes.WithLabelValues(TypeName(r.typeURL)).Inc()
}

// OnFetchRequest is called for REST fetches.
func (t *tracker) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error { return nil }

// OnFetchResponse is called for REST fetches.
func (t *tracker) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// OnDeltaStreamOpen is called when a delta stream opens.
func (t *tracker) OnDeltaStreamOpen(context.Context, int64, string) error { return nil }

// OnDeltaStreamClosed is called when a delta stream closes.
func (t *tracker) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	t.closed(streamKey{id: id, delta: true})
}

// OnStreamDeltaRequest records delta ACKs and NACKs, once per response nonce.
func (t *tracker) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	t.mu.Lock()
	st := t.stream(streamKey{id: id, delta: true})
	t.attach(st, req.GetNode())
	if req.GetTypeUrl() == resourcev3.ListenerType {
		st.followDeltaListeners(req)
		t.gen++
	}
	t.mu.Unlock()
	if st.node != nil && req.GetResponseNonce() != "" {
		if r := find(st.delta[req.GetTypeUrl()], req.GetResponseNonce()); r != nil {
			ed := req.GetErrorDetail()
			v := judge(st, r, ed != nil, ed.GetMessage())
			t.mu.Lock()
			defer t.mu.Unlock()
			t.deltaUnsubscribe(st, req)
			list := st.delta[req.GetTypeUrl()]
			for i, x := range list {
				if x == r {
					st.delta[req.GetTypeUrl()] = append(list[:i:i], list[i+1:]...)
					break
				}
			}
			if ed != nil {
				t.nack(st, r, v)
			} else {
				t.ack(st, r, v)
			}
			return nil
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.deltaUnsubscribe(st, req)
	return nil
}

// deltaUnsubscribe ends the stream's rejections of the names a delta request unsubscribes.
func (t *tracker) deltaUnsubscribe(st *streamState, req *discoveryv3.DeltaDiscoveryRequest) {
	rej := st.rejected[req.GetTypeUrl()]
	if len(rej) == 0 {
		return
	}
	for _, name := range req.GetResourceNamesUnsubscribe() {
		if rej[name] != nil {
			delete(rej, name)
			st.nRejected--
			t.gen++
		}
	}
	if len(rej) == 0 {
		delete(st.rejected, req.GetTypeUrl())
	}
}

// OnStreamDeltaResponse records what was sent.
func (t *tracker) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stream(streamKey{id: id, delta: true})
	r := &response{typeURL: resp.GetTypeUrl(), version: resp.GetSystemVersionInfo(), nonce: resp.GetNonce(), delta: true,
		names: make([]string, 0, len(resp.GetResources())), versions: make([]string, 0, len(resp.GetResources())),
		removed: resp.GetRemovedResources()}
	for _, x := range resp.GetResources() {
		r.names = append(r.names, x.GetName())
		r.versions = append(r.versions, x.GetVersion())
	}
	st.delta[r.typeURL] = remember(st.delta[r.typeURL], r, deltaPerType)
	if st.node != nil {
		st.node.Sent[r.typeURL] = r.version
	}
	t.m.pushes.WithLabelValues(TypeName(r.typeURL)).Inc()
}

// Nodes returns a copy of the connected nodes, sorted by group and id.
func (t *tracker) Nodes() []NodeInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	rejectedBy := map[*NodeInfo]map[string][]string{}
	for _, st := range t.streams {
		if st.node == nil {
			continue
		}
		for typ := range st.overflow {
			m := rejectedBy[st.node]
			if m == nil {
				m = map[string][]string{}
				rejectedBy[st.node] = m
			}
			m[TypeName(typ)] = append(m[TypeName(typ)], "*") // every resource of the type
		}
		for typ, rej := range st.rejected {
			m := rejectedBy[st.node]
			if m == nil {
				m = map[string][]string{}
				rejectedBy[st.node] = m
			}
			for name := range rej {
				m[TypeName(typ)] = append(m[TypeName(typ)], name)
			}
		}
	}
	out := make([]NodeInfo, 0, len(t.nodes))
	for _, n := range t.nodes {
		c := *n
		c.Acked = shortKeys(n.Acked)
		c.Sent = shortKeys(n.Sent)
		c.Acks = copyCounts(n.Acks)
		c.Nacks = copyCounts(n.Nacks)
		c.Rejected = rejectedBy[n]
		for typ, names := range c.Rejected {
			sort.Strings(names)
			c.Rejected[typ] = dedupSorted(names) // streams of one node may reject the same resource
		}
		if n.LastNACK != nil {
			l := *n.LastNACK
			c.LastNACK = &l
		}
		c.answered = nil
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func dedupSorted(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func copyCounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func shortKeys(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[TypeName(k)] = v
	}
	return out
}

// groupView is what the route status needs of one group's nodes.
type groupView struct {
	nodes int
	// followers are the group's nodes, each with what it answered and follows.
	followers []follower
	// endpoints are the rejected clusters and endpoint assignments by name; holders the
	// rejected listeners and route configurations; each newest NACK first.
	endpoints map[string][]rejected
	holders   []rejected
	// allEndpoints: rejections of every cluster or endpoint assignment (past a stream's bound).
	allEndpoints []rejected
}

// follower is one node of a group in the route status.
type follower struct {
	// answered is, per type URL, the version of the last response ACKed or NACKed.
	answered map[string]string
	// listeners are the listener names its streams subscribe to; all: a wildcard.
	listeners map[string]bool
	all       bool
}

// follows reports whether the node subscribes to a listener of one of hosts (a wildcard
// subscription follows every listener).
func (f *follower) follows(hosts []string) bool {
	if f.all {
		return true
	}
	for _, h := range hosts {
		if f.listeners[h] {
			return true
		}
	}
	return false
}

// rejected is one rejected resource at a node of the group.
type rejected struct {
	typeURL, name string
	nack          *NACK
	all           bool // every resource of the type (name "*")
}

// view returns what the route status needs of a group, cached until the next change (a
// route list asks once per route).
func (t *tracker) view(group string) groupView {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.views[group]; ok && c.gen == t.gen {
		return c.v
	}
	if t.views == nil {
		t.views = map[string]cachedView{}
	}
	v := t.buildView(group)
	t.views[group] = cachedView{gen: t.gen, v: v}
	return v
}

func (t *tracker) buildView(group string) groupView {
	var v groupView
	// One walk of the streams for every node's listeners (not one per node: the view is
	// rebuilt after every ACK while route statuses are read).
	of := map[*NodeInfo]*follower{}
	for _, n := range t.nodes {
		if n.Group != group {
			continue
		}
		f := &follower{answered: make(map[string]string, len(n.answered)), listeners: map[string]bool{}}
		for k, x := range n.answered {
			f.answered[k] = x
		}
		of[n] = f
	}
	for _, st := range t.streams {
		if f := of[st.node]; f != nil {
			f.all = f.all || st.allListeners
			for l := range st.listeners {
				f.listeners[l] = true
			}
		}
	}
	v.nodes = len(of)
	for _, f := range of {
		v.followers = append(v.followers, *f)
	}
	copies := map[*NACK]*NACK{} // one copy per NACK, however many resources it rejects
	for _, st := range t.streams {
		if st.node == nil || st.node.Group != group {
			continue
		}
		for typ, n := range st.overflow {
			c := copies[n]
			if c == nil {
				cp := *n
				c = &cp
				copies[n] = c
			}
			r := rejected{typeURL: typ, name: "*", nack: c, all: true}
			if typ == resourcev3.ClusterType || typ == resourcev3.EndpointType {
				v.allEndpoints = append(v.allEndpoints, r)
			} else {
				v.holders = append(v.holders, r)
			}
		}
		for typ, rej := range st.rejected {
			for name, x := range rej {
				c := copies[x.nack]
				if c == nil {
					cp := *x.nack
					c = &cp
					copies[x.nack] = c
				}
				r := rejected{typeURL: typ, name: name, nack: c}
				if typ == resourcev3.ClusterType || typ == resourcev3.EndpointType {
					if v.endpoints == nil {
						v.endpoints = map[string][]rejected{}
					}
					v.endpoints[name] = append(v.endpoints[name], r)
				} else {
					v.holders = append(v.holders, r)
				}
			}
		}
	}
	for _, list := range v.endpoints {
		sortRejected(list)
	}
	sortRejected(v.holders)
	sortRejected(v.allEndpoints)
	return v
}

// sortRejected orders rejections newest NACK first (then by type, name and node): a status
// shows the first that concerns its route.
func sortRejected(list []rejected) {
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if !a.nack.At.Equal(b.nack.At) {
			return a.nack.At.After(b.nack.At)
		}
		if a.typeURL != b.typeURL {
			return a.typeURL < b.typeURL
		}
		if a.name != b.name {
			return a.name < b.name
		}
		return a.nack.Node < b.nack.Node
	})
}

// grpc-js names a rejected resource by its index in the response ("resource index N: ...",
// xds-client.js AdsResponseParser.parseResource); grpc-go by name (`resource "<name>": ...`,
// xdsclient combineErrors); Envoy by name ("Error adding/updating cluster(s) <name>: ...").
var (
	indexRE = regexp.MustCompile(`resource index ([0-9]{1,9}):`)
	quoteRE = regexp.MustCompile(`resource "([^"]{1,512})"`)
)

// attribute returns the indices in r of the resources msg rejects and how they were found:
// "index" (grpc-js), "named" (grpc-go's quoted names, else any resource name of r appearing
// in msg as a whole token), or "all" (msg names none: every resource of r).
func attribute(r *response, msg string) ([]int, string) {
	names := r.resourceNames()
	var idx []int
	seen := map[int]bool{}
	add := func(i int) {
		if !seen[i] {
			seen[i] = true
			idx = append(idx, i)
		}
	}
	for _, m := range indexRE.FindAllStringSubmatch(msg, -1) {
		if i, err := strconv.Atoi(m[1]); err == nil && i < len(names) {
			add(i)
		}
	}
	if len(idx) > 0 {
		return idx, "index"
	}
	at := make(map[string]int, len(names))
	for i, n := range names {
		if _, dup := at[n]; !dup {
			at[n] = i
		}
	}
	for _, m := range quoteRE.FindAllStringSubmatch(msg, -1) {
		if i, ok := at[m[1]]; ok {
			add(i)
		}
	}
	if len(idx) > 0 {
		return idx, "named"
	}
	toks := map[string]bool{}
	for _, tk := range tokens(msg) {
		toks[tk] = true
	}
	for i, n := range names {
		if n != "" && (toks[n] || (!tokenOnly(n) && mentions(msg, n))) {
			add(i)
		}
	}
	if len(idx) > 0 {
		return idx, "named"
	}
	for i := range names {
		idx = append(idx, i)
	}
	return idx, "all"
}

// isTokenByte: the bytes of resource names and route ids (ids are [A-Za-z0-9._-]; names join
// them with '/'; hosts may carry a ":port").
func isTokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/' || c == ':'
}

func tokenOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isTokenByte(s[i]) {
			return false
		}
	}
	return true
}

// tokens splits msg into maximal runs of name bytes, without the '.' and ':' that end a
// sentence or introduce an error ("cluster route/a/1: ..."), deduplicated, at most maxTokens.
// A name is mentioned only as a whole token: route/a/1 is not in "route/a/10".
func tokens(msg string) []string {
	var out []string
	seen := map[string]bool{}
	for i := 0; i < len(msg) && len(out) < maxTokens; {
		if !isTokenByte(msg[i]) {
			i++
			continue
		}
		j := i
		for j < len(msg) && isTokenByte(msg[j]) {
			j++
		}
		tk := strings.TrimRight(msg[i:j], ".:")
		if tk != "" && !seen[tk] {
			seen[tk] = true
			out = append(out, tk)
		}
		i = j
	}
	return out
}

// mentions reports whether name (holding bytes outside tokens) occurs in msg bounded by
// non-name bytes (a trailing '.' or ':' run counts as a boundary).
func mentions(msg, name string) bool {
	for off := 0; ; {
		i := strings.Index(msg[off:], name)
		if i < 0 {
			return false
		}
		start, end := off+i, off+i+len(name)
		for k := end; ; k++ {
			if k == len(msg) || !isTokenByte(msg[k]) {
				if start == 0 || !isTokenByte(msg[start-1]) {
					return true
				}
				break
			}
			if msg[k] != '.' && msg[k] != ':' {
				break
			}
		}
		off = start + 1
	}
}

// truncate cuts s to at most n bytes (an ellipsis included), on a rune boundary.
func truncate(s string, n int) string {
	const more = "…"
	if len(s) <= n {
		return s
	}
	s = s[:n-len(more)]
	for i := 0; i < utf8.UTFMax && len(s) > 0; i++ {
		if r, size := utf8.DecodeLastRuneInString(s); r != utf8.RuneError || size != 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s + more
}

// anyName is the name of one resource of a response: the name field (field 1 of a
// Listener, RouteConfiguration, Cluster and ClusterLoadAssignment) read from its bytes,
// else the resource decoded (a TTL Resource wrapper names itself).
func anyName(a *anypb.Any, typeURL string) string {
	if b, ok := rawName(a, typeURL); ok {
		return string(b)
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return ""
	}
	if w, ok := m.(*discoveryv3.Resource); ok {
		return w.GetName()
	}
	if r, ok := m.(types.Resource); ok {
		return cachev3.GetResourceName(r)
	}
	return ""
}

// rawName is the name field of a Listener, RouteConfiguration, Cluster or
// ClusterLoadAssignment of the response's type, in the resource's bytes; false for other
// resources (decode them).
func rawName(a *anypb.Any, typeURL string) ([]byte, bool) {
	if a.GetTypeUrl() != typeURL {
		return nil, false
	}
	switch typeURL {
	case resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType:
		return nameField(a.GetValue())
	}
	return nil, false
}

// nameField reads field 1 (a string) of a marshaled message, in place.
func nameField(b []byte) ([]byte, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, false
			}
			return v, true
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, false
		}
		b = b[m:]
	}
	return nil, true
}
