package server

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// NACK is one rejected response.
type NACK struct {
	Node      string    `json:"node"`
	Group     string    `json:"group"`
	Type      string    `json:"type"`
	Version   string    `json:"version"`
	Resources []string  `json:"resources,omitempty"`
	Error     string    `json:"error"`
	At        time.Time `json:"at"`
}

// NodeInfo is one connected xDS client.
type NodeInfo struct {
	ID          string            `json:"id"`
	Cluster     string            `json:"cluster"`
	Group       string            `json:"group"`
	UserAgent   string            `json:"user_agent,omitempty"`
	Streams     int               `json:"streams"`
	ConnectedAt time.Time         `json:"connected_at"`
	Acked       map[string]string `json:"acked"`
	Sent        map[string]string `json:"sent"`
	LastNACK    *NACK             `json:"last_nack,omitempty"`
	nacks       map[string]*NACK  // by type: the latest NACK not followed by an ACK
}

type sent struct {
	version, nonce string
	names          []string
}

type streamState struct {
	node      *NodeInfo
	sotw      map[string]sent // by type URL: the latest response
	deltaSent map[string]sent // by nonce
}

// tracker implements the go-control-plane server callbacks: it follows nodes, ACKs and
// NACKs, and keeps a NACKed version from being sent again in a loop.
type tracker struct {
	log *slog.Logger
	m   *metrics
	now func() time.Time

	mu      sync.Mutex
	streams map[int64]*streamState
	nodes   map[string]*NodeInfo // by group + "/" + node id
	// gen counts changes to nodes, ACKs and NACKs; views caches group views per gen.
	gen   uint64
	views map[string]cachedView
}

type cachedView struct {
	gen uint64
	v   groupView
}

func newTracker(log *slog.Logger, m *metrics, now func() time.Time) *tracker {
	return &tracker{log: log, m: m, now: now, streams: map[int64]*streamState{}, nodes: map[string]*NodeInfo{}}
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

func (t *tracker) stream(id int64) *streamState {
	st := t.streams[id]
	if st == nil {
		st = &streamState{sotw: map[string]sent{}, deltaSent: map[string]sent{}}
		t.streams[id] = st
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
			ConnectedAt: t.now(), Acked: map[string]string{}, Sent: map[string]string{}, nacks: map[string]*NACK{}}
		t.nodes[key] = ni
	}
	ni.Streams++
	st.node = ni
	t.gen++
	t.m.nodes.Set(float64(len(t.nodes)))
}

func (t *tracker) closed(id int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[id]
	delete(t.streams, id)
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

func (t *tracker) ack(ni *NodeInfo, typeURL, version string) {
	if ni.Acked[typeURL] != version || ni.nacks[typeURL] != nil {
		t.gen++
	}
	ni.Acked[typeURL] = version
	delete(ni.nacks, typeURL)
}

func (t *tracker) nack(ni *NodeInfo, typeURL string, s sent, detail string) {
	n := &NACK{Node: ni.ID, Group: ni.Group, Type: TypeName(typeURL), Version: s.version, Resources: s.names, Error: detail, At: t.now()}
	ni.nacks[typeURL] = n
	ni.LastNACK = n
	t.gen++
	t.m.nacks.WithLabelValues(n.Type).Inc()
	t.log.Warn("xDS NACK", "node", ni.ID, "group", ni.Group, "type", n.Type, "version", s.version, "error", detail)
}

// OnStreamOpen is called when a SotW stream opens.
func (t *tracker) OnStreamOpen(context.Context, int64, string) error { return nil }

// OnStreamClosed is called when a SotW stream closes.
func (t *tracker) OnStreamClosed(id int64, _ *corev3.Node) { t.closed(id) }

// OnStreamRequest sees every SotW request before the cache does. An ACK records the version;
// a NACK is recorded and its version_info is set to the version just rejected, so the cache
// treats the client as current and does not send the same resources again (a NACK loop);
// the next change is sent as usual.
func (t *tracker) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stream(id)
	t.attach(st, req.GetNode())
	if st.node == nil || req.GetResponseNonce() == "" {
		return nil
	}
	s, ok := st.sotw[req.GetTypeUrl()]
	if !ok || s.nonce != req.GetResponseNonce() {
		return nil
	}
	if ed := req.GetErrorDetail(); ed != nil {
		t.nack(st.node, req.GetTypeUrl(), s, ed.GetMessage())
		req.VersionInfo = s.version
		return nil
	}
	t.ack(st.node, req.GetTypeUrl(), req.GetVersionInfo())
	return nil
}

// OnStreamResponse records what was sent.
func (t *tracker) OnStreamResponse(_ context.Context, id int64, req *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stream(id)
	st.sotw[resp.GetTypeUrl()] = sent{version: resp.GetVersionInfo(), nonce: resp.GetNonce(), names: req.GetResourceNames()}
	if st.node != nil {
		st.node.Sent[resp.GetTypeUrl()] = resp.GetVersionInfo()
	}
	t.m.pushes.WithLabelValues(TypeName(resp.GetTypeUrl())).Inc()
}

// OnFetchRequest is called for REST fetches.
func (t *tracker) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error { return nil }

// OnFetchResponse is called for REST fetches.
func (t *tracker) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// OnDeltaStreamOpen is called when a delta stream opens.
func (t *tracker) OnDeltaStreamOpen(context.Context, int64, string) error { return nil }

// OnDeltaStreamClosed is called when a delta stream closes.
func (t *tracker) OnDeltaStreamClosed(id int64, _ *corev3.Node) { t.closed(id) }

// OnStreamDeltaRequest records delta ACKs and NACKs.
func (t *tracker) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stream(id)
	t.attach(st, req.GetNode())
	if st.node == nil || req.GetResponseNonce() == "" {
		return nil
	}
	s, ok := st.deltaSent[req.GetResponseNonce()]
	if !ok {
		return nil
	}
	delete(st.deltaSent, req.GetResponseNonce())
	if ed := req.GetErrorDetail(); ed != nil {
		t.nack(st.node, req.GetTypeUrl(), s, ed.GetMessage())
		return nil
	}
	t.ack(st.node, req.GetTypeUrl(), s.version)
	return nil
}

// OnStreamDeltaResponse records what was sent.
func (t *tracker) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.stream(id)
	names := make([]string, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		names = append(names, r.GetName())
	}
	st.deltaSent[resp.GetNonce()] = sent{version: resp.GetSystemVersionInfo(), nonce: resp.GetNonce(), names: names}
	if st.node != nil {
		st.node.Sent[resp.GetTypeUrl()] = resp.GetSystemVersionInfo()
	}
	t.m.pushes.WithLabelValues(TypeName(resp.GetTypeUrl())).Inc()
}

// Nodes returns a copy of the connected nodes, sorted by group and id.
func (t *tracker) Nodes() []NodeInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]NodeInfo, 0, len(t.nodes))
	for _, n := range t.nodes {
		c := *n
		c.Acked = shortKeys(n.Acked)
		c.Sent = shortKeys(n.Sent)
		if n.LastNACK != nil {
			l := *n.LastNACK
			c.LastNACK = &l
		}
		c.nacks = nil
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
	acked []map[string]string // per node, by type URL
	nacks []*NACK             // open NACKs (not followed by an ACK), with their type URL in Type
	types []string
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
	for _, n := range t.nodes {
		if n.Group != group {
			continue
		}
		v.nodes++
		a := make(map[string]string, len(n.Acked))
		for k, x := range n.Acked {
			a[k] = x
		}
		v.acked = append(v.acked, a)
		for typ, nk := range n.nacks {
			c := *nk
			v.nacks = append(v.nacks, &c)
			v.types = append(v.types, typ)
		}
	}
	return v
}
