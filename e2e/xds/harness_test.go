package xds_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

// env is one gateway and the two proxyless clients, grpc-go's and grpc-js's, whose xDS
// clients reach the gateway through an ADS proxy that counts what each answered.
type env struct {
	g       *testutil.Gateway
	proxy   *xdstest.ADSProxy
	clients []xdsClient
}

func newEnv(t *testing.T, o testutil.GatewayOptions) *env {
	t.Helper()
	g := testutil.StartGateway(t, o)
	proxy := xdstest.StartADSProxy(t, g.GRPCAddr())
	return &env{g: g, proxy: proxy, clients: []xdsClient{
		newGoClient(t, proxy.Addr),
		startJSClient(t, proxy.Addr, "grpc-js-"+t.Name()),
	}}
}

// scenario runs once per client, as the client's subtest.
type scenario struct {
	name string
	run  func(t *testing.T, e *env, c xdsClient)
}

// runScenarios runs every scenario with every client, one after the other.
func (e *env) runScenarios(t *testing.T, scenarios []scenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			for _, c := range e.clients {
				t.Run(c.Name(), func(t *testing.T) { sc.run(t, e, c) })
			}
		})
	}
}

// eventually polls fn until it returns "" (done) or the deadline passes, then fails with
// the last thing fn said.
func eventually(t testing.TB, within time.Duration, fn func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := fn()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gwNode is a node as GET /api/v1/management/xds/nodes shows it.
type gwNode struct {
	ID        string            `json:"id"`
	Group     string            `json:"group"`
	UserAgent string            `json:"user_agent"`
	Acked     map[string]string `json:"acked"`
	ACKs      map[string]int    `json:"acks"`
	NACKs     map[string]int    `json:"nacks"`
	LastNACK  *struct {
		Type  string `json:"type"`
		Error string `json:"error"`
	} `json:"last_nack"`
}

type nodesDoc struct {
	Versions map[string]map[string]string `json:"versions"`
	Nodes    []gwNode                     `json:"nodes"`
}

func (e *env) nodes(t testing.TB) nodesDoc {
	t.Helper()
	var doc nodesDoc
	if code, raw := e.g.Do("GET", "/api/v1/management/xds/nodes", nil, &doc); code != 200 {
		t.Fatalf("xds/nodes: %d %s", code, raw)
	}
	return doc
}

func (e *env) node(t testing.TB, id string) *gwNode {
	t.Helper()
	for _, n := range e.nodes(t).Nodes {
		if n.ID == id {
			return &n
		}
	}
	return nil
}

// countsDiffer says how the gateway's per-node ACK and NACK counts differ from what the
// proxy saw the client send ("" when they agree, a missing count being 0).
func countsDiffer(gw map[string]int, proxy map[string]int) string {
	keys := map[string]bool{}
	for k := range gw {
		keys[k] = true
	}
	for k := range proxy {
		keys[k] = true
	}
	var diffs []string
	for k := range keys {
		if gw[k] != proxy[k] {
			diffs = append(diffs, fmt.Sprintf("%s: gateway %d, client %d", k, gw[k], proxy[k]))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "; ")
}

// checkNoNACKs fails when any of the client's nodes rejected a response, naming what.
func (e *env) checkNoNACKs(t testing.TB, c xdsClient) {
	t.Helper()
	for _, id := range c.Nodes() {
		if cs := e.proxy.Counts(id); cs.TotalNACKs() > 0 {
			t.Errorf("%s node %s NACKed %v: %q", c.Name(), id, cs.NACKs, cs.NACKErrors)
		}
	}
}

// nackMark is how many NACKs each of a client's nodes had sent at a moment.
type nackMark map[string]int

func (e *env) markNACKs(c xdsClient) nackMark {
	m := nackMark{}
	for _, id := range c.Nodes() {
		m[id] = e.proxy.Counts(id).TotalNACKs()
	}
	return m
}

// checkNoNACKsSince fails when any of the client's nodes rejected a response since the mark
// (a node opened since then counts from zero), naming what it rejected.
func (e *env) checkNoNACKsSince(t testing.TB, c xdsClient, m nackMark) {
	t.Helper()
	for _, id := range c.Nodes() {
		cs := e.proxy.Counts(id)
		if n := cs.TotalNACKs() - m[id]; n > 0 {
			t.Errorf("%s node %s NACKed %d response(s): %q", c.Name(), id, n, cs.NACKErrors[len(cs.NACKErrors)-n:])
		}
	}
}

// checkCountsAgree waits until /xds/nodes reports, for each of the client's nodes, the
// ACKs and NACKs per type the proxy saw the client send (the gateway counts a client's
// answer once it has read it, a moment after the proxy forwarded it).
func (e *env) checkCountsAgree(t testing.TB, c xdsClient) {
	t.Helper()
	eventually(t, 10*time.Second, func() string {
		doc := e.nodes(t)
		byID := map[string]gwNode{}
		for _, n := range doc.Nodes {
			byID[n.ID] = n
		}
		var problems []string
		for _, id := range c.Nodes() {
			pc := e.proxy.Counts(id)
			if pc.Streams == 0 {
				continue // closed: the gateway forgets it too
			}
			n, ok := byID[id]
			if !ok {
				problems = append(problems, fmt.Sprintf("node %s is not on /xds/nodes", id))
				continue
			}
			if n.ACKs == nil && len(n.Acked) > 0 {
				t.Fatalf("/xds/nodes shows node %s with ACKed versions %v but no per-type \"acks\" counts (the client sent %v)", id, n.Acked, pc.ACKs)
			}
			if d := countsDiffer(n.ACKs, pc.ACKs); d != "" {
				problems = append(problems, fmt.Sprintf("node %s acks differ (%s)", id, d))
			}
			if d := countsDiffer(n.NACKs, pc.NACKs); d != "" {
				problems = append(problems, fmt.Sprintf("node %s nacks differ (%s; client's NACKs: %q)", id, d, pc.NACKErrors))
			}
		}
		return strings.Join(problems, "\n")
	})
}

// behind names the nodes of a group whose ACKed route or cluster version is not the
// group's current one (what keeps a route PENDING).
func (e *env) behind(t testing.TB, group string) string {
	t.Helper()
	doc := e.nodes(t)
	cur := doc.Versions[group]
	var out []string
	for _, n := range doc.Nodes {
		if n.Group != group {
			continue
		}
		for _, typ := range []string{"rds", "cds"} {
			if n.Acked[typ] != cur[typ] {
				out = append(out, fmt.Sprintf("%s %s %q (current %q)", n.ID, typ, n.Acked[typ], cur[typ]))
			}
		}
	}
	if len(out) == 0 {
		return "every node of " + group + " ACKed the current rds and cds versions"
	}
	return "nodes behind: " + strings.Join(out, ", ")
}

// routeStatus is a route's status as GET /routes/{id} shows it.
type routeStatus struct {
	Translation string `json:"translation"`
	XDS         map[string]struct {
		State   string `json:"state"`
		Version string `json:"version"`
		Error   string `json:"error"`
		Node    string `json:"node"`
	} `json:"xds"`
}

func (e *env) routeStatus(t testing.TB, id string) routeStatus {
	t.Helper()
	var rt struct {
		Status routeStatus `json:"status"`
	}
	if code, raw := e.g.Do("GET", "/api/v1/management/routes/"+id, nil, &rt); code != 200 {
		t.Fatalf("GET route %s: %d %s", id, code, raw)
	}
	return rt.Status
}

// waitBackend calls until a call answers from want (each call on the scenario's channel);
// when none does, it fails naming what the client's nodes rejected.
func (e *env) waitBackend(t testing.TB, c xdsClient, r rpcs, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last tally
	for time.Since(start) < within {
		last = c.Call(t, r)
		if last.Backends[want] > 0 {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: no call to %s reached %s within %v; last: %s%s", c.Name(), r.Target, want, within, last, e.nackSummary(c))
	return 0
}

// nackSummary names what the client's nodes rejected, for failure messages ("" if nothing).
func (e *env) nackSummary(c xdsClient) string {
	var out []string
	for _, id := range c.Nodes() {
		if cs := e.proxy.Counts(id); len(cs.NACKErrors) > 0 {
			out = append(out, fmt.Sprintf("node %s NACKed %q", id, cs.NACKErrors))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; " + strings.Join(out, "; ")
}

func grpcTarget(b *xdstest.Backend, w int) map[string]any {
	return map[string]any{"host": b.Host, "port": b.Port, "weight": w, "protocol": "grpc"}
}

func publicRoute(id, host string, targets ...any) map[string]any {
	return map[string]any{
		"id": id, "hosts": []string{host}, "require_auth": false,
		"conditions": []any{map[string]any{"path_pattern": "/*"}}, "targets": targets,
	}
}
