package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

type harness struct {
	s    *Server
	addr string
	reg  *prometheus.Registry
}

func start(t *testing.T) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(Options{
		Translate:  translate.Options{ListenerAddress: "0.0.0.0:10000", ControlPlane: "127.0.0.1:18000"},
		Logger:     testLogger(t),
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(func() { g.Stop(); _ = s.Close() })
	return &harness{s: s, addr: l.Addr().String(), reg: reg}
}

func (h *harness) apply(t *testing.T, snap *model.Snapshot) {
	t.Helper()
	commit, err := h.s.Prepare(context.Background(), snap)
	if err != nil {
		t.Fatal(err)
	}
	commit()
}

func snapshot(rev uint64, routes ...*model.Route) *model.Snapshot {
	return &model.Snapshot{Revision: rev, Routes: routes, Settings: &model.Settings{ID: model.SettingsID}}
}

func weight(n int) *int { return &n }

func falsePtr() *bool { f := false; return &f }

func route(id, host string, targets ...*xdstest.Backend) *model.Route {
	r := &model.Route{ID: id, Hosts: []string{host}, RequireAuth: falsePtr(), Conditions: []model.Condition{{PathPattern: "/*"}}}
	for _, b := range targets {
		r.Targets = append(r.Targets, model.Target{Host: b.Host, Port: b.Port})
	}
	return r
}

// waitFor calls fn until it returns true or the deadline passes.
func waitFor(t *testing.T, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProxylessClientFollowsRoutes(t *testing.T) {
	h := start(t)
	a, b := xdstest.StartBackend(t, "a"), xdstest.StartBackend(t, "b")
	h.apply(t, snapshot(1, route("r1", "echo.test", a)))
	cc := xdstest.Dial(t, h.addr, "client-1", "echo.test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := xdstest.Call(ctx, cc)
	if err != nil || got != "a" {
		t.Fatalf("first call: %q %v", got, err)
	}
	// The route moves to b: the client follows.
	h.apply(t, snapshot(2, route("r1", "echo.test", b)))
	waitFor(t, "the client to reach b", func() bool { got, err := xdstest.Call(ctx, cc); return err == nil && got == "b" })
	st := h.s.RouteStatus("r1")
	waitFor(t, "ACKED", func() bool { st = h.s.RouteStatus("r1"); return st != nil && st.XDS["grpc"].State == StateAcked })
	if st.Translation != "ok" {
		t.Fatalf("translation %q", st.Translation)
	}
	nodes := h.s.Nodes()
	if len(nodes) != 1 || nodes[0].Group != "grpc" || nodes[0].ID != "client-1" || nodes[0].Acked["cds"] == "" {
		t.Fatalf("nodes: %+v", nodes)
	}
	if n := testutil.ToFloat64(h.s.m.nodes); n != 1 {
		t.Fatalf("connected nodes %v", n)
	}
}

func TestUnchangedModelPushesNothing(t *testing.T) {
	h := start(t)
	a := xdstest.StartBackend(t, "a")
	h.apply(t, snapshot(1, route("r1", "echo.test", a)))
	cc := xdstest.Dial(t, h.addr, "client-1", "echo.test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := xdstest.Call(ctx, cc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ACKED", func() bool { st := h.s.RouteStatus("r1"); return st != nil && st.XDS["grpc"].State == StateAcked })
	before := testutil.CollectAndCount(h.s.m.pushes)
	total := func() float64 {
		var n float64
		for _, typ := range []string{"lds", "rds", "cds", "eds"} {
			n += testutil.ToFloat64(h.s.m.pushes.WithLabelValues(typ))
		}
		return n
	}
	pushes := total()
	// A new revision with the same content (and a service registered elsewhere changing
	// nothing the client sees except EDS of a cluster it does not use): no push for the client.
	h.apply(t, snapshot(2, route("r1", "echo.test", a)))
	h.apply(t, snapshot(3, route("r1", "echo.test", a)))
	if _, err := xdstest.Call(ctx, cc); err != nil {
		t.Fatal(err)
	}
	if got := total(); got != pushes {
		t.Fatalf("unchanged model pushed %v responses (before %d series)", got-pushes, before)
	}
}

// TestNACKIsRecordedAndNotResent serves a cluster that Envoy accepts and grpc-go rejects
// (load balancing policy RANDOM); the NACK shows on the route's status and on the nodes
// endpoint, and the rejected version is not sent again.
func TestNACKIsRecordedAndNotResent(t *testing.T) {
	h := start(t)
	a := xdstest.StartBackend(t, "a")
	h.apply(t, snapshot(1, route("r1", "echo.test", a)))
	cc := xdstest.Dial(t, h.addr, "client-1", "echo.test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := xdstest.Call(ctx, cc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ACKED", func() bool { st := h.s.RouteStatus("r1"); return st != nil && st.XDS["grpc"].State == StateAcked })

	// Craft revision 2: the gRPC group's cluster r1/0 gets lb_policy RANDOM.
	p, err := h.s.build(snapshot(2, route("r1", "echo.test", a)))
	if err != nil {
		t.Fatal(err)
	}
	res := p.snaps["grpc"].Resources[types.Cluster]
	var items []types.Resource
	for _, it := range res.Items {
		// Built resources are shared with the memo (and the next revisions): never mutated.
		c := proto.Clone(it.Resource).(*clusterv3.Cluster)
		if c.GetName() == translate.ClusterName("r1", 0) {
			c.LbPolicy = clusterv3.Cluster_RANDOM
		}
		items = append(items, c)
	}
	p.snaps["grpc"].Resources[types.Cluster] = cachev3.NewResources("crafted", items)
	p.st.versions["grpc"][resourcev3.ClusterType] = "crafted"
	cdsPushes := testutil.ToFloat64(h.s.m.pushes.WithLabelValues("cds"))
	h.s.publish(p)

	var st *model.RouteStatus
	waitFor(t, "NACKED", func() bool { st = h.s.RouteStatus("r1"); return st.XDS["grpc"].State == StateNacked })
	x := st.XDS["grpc"]
	if !strings.Contains(x.Error, "lbPolicy") || x.Node != "client-1" {
		t.Fatalf("status %+v", x)
	}
	if n := testutil.ToFloat64(h.s.m.nacks.WithLabelValues("cds")); n != 1 {
		t.Fatalf("nacks_total{cds} = %v", n)
	}
	// The client keeps working on its last good configuration.
	if got, err := xdstest.Call(ctx, cc); err != nil || got != "a" {
		t.Fatalf("after NACK: %q %v", got, err)
	}
	// No re-send loop: the crafted version went out once. A loop would send it again right
	// away on every NACK (thousands within this window).
	time.Sleep(300 * time.Millisecond)
	if got := testutil.ToFloat64(h.s.m.pushes.WithLabelValues("cds")) - cdsPushes; got != 1 {
		t.Fatalf("crafted CDS sent %v times, want 1", got)
	}
	if n := testutil.ToFloat64(h.s.m.nacks.WithLabelValues("cds")); n != 1 {
		t.Fatalf("nacks_total{cds} = %v after waiting", n)
	}
	// The nodes endpoint shows it.
	rec := httptest.NewRecorder()
	h.s.NodesHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/management/xds/nodes", nil))
	var body struct {
		Nodes []NodeInfo `json:"nodes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Nodes) != 1 || body.Nodes[0].LastNACK == nil || body.Nodes[0].LastNACK.Type != "cds" ||
		!strings.Contains(body.Nodes[0].LastNACK.Error, "lbPolicy") {
		t.Fatalf("nodes: %s", rec.Body.String())
	}
	// A fixed revision is sent and ACKed; the route is ACKED again.
	h.apply(t, snapshot(3, route("r1", "echo.test", a)))
	waitFor(t, "ACKED after the fix", func() bool { return h.s.RouteStatus("r1").XDS["grpc"].State == StateAcked })
}

func TestBadRevisionKeepsLastGood(t *testing.T) {
	h := start(t)
	a := xdstest.StartBackend(t, "a")
	h.apply(t, snapshot(1, route("r1", "echo.test", a)))
	// Two routes with the same vhost name collide only in the IR validation if domains
	// repeat; a bad option is the other whole-revision failure.
	bad, err := New(Options{Translate: translate.Options{ControlPlane: "nope"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Prepare(context.Background(), snapshot(2)); err == nil {
		t.Fatal("a bad control-plane address must reject the revision")
	}
	if err := bad.Ready(); err == nil {
		t.Fatal("not ready without a published configuration")
	}
	if err := h.s.Ready(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateRoute(t *testing.T) {
	h := start(t)
	existing := &model.Route{ID: "a", Hosts: []string{"api.test"}, Conditions: []model.Condition{{PathPattern: "/x/*", Method: "GET"}},
		Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}}
	snap := snapshot(1, existing)
	snap.Services = []*model.Service{{ID: "s-1", Name: "users", Host: "10.0.0.2", Port: 80}}
	cases := []struct {
		name  string
		r     *model.Route
		field string
	}{
		{"conflict", &model.Route{ID: "b", Hosts: []string{"API.test"}, Conditions: []model.Condition{{PathPattern: "/x/*", Methods: []string{"get"}}},
			Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}}, "conditions[0]"},
		{"unknown service", &model.Route{ID: "c", Conditions: []model.Condition{{PathPattern: "/y"}}, Targets: []model.Target{{Service: "ghost"}}}, "targets[0].service"},
		{"envoy rejects", &model.Route{ID: "d", Conditions: []model.Condition{{PathPattern: "/z"}}, Rewrite: &model.Rewrite{Prefix: "/other"},
			Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}}, ""},
	}
	for _, c := range cases {
		errs := h.s.ValidateRoute(c.r, snap)
		if len(errs) == 0 || errs[0].Field != c.field {
			t.Errorf("%s: %v", c.name, errs)
		}
	}
	ok := []*model.Route{
		existing, // updating itself is no conflict
		{ID: "e", Hosts: []string{"other.test"}, Conditions: []model.Condition{{PathPattern: "/x/*", Method: "GET"}}, Targets: []model.Target{{Service: "users"}}},
		{ID: "f", Hosts: []string{"api.test"}, Conditions: []model.Condition{{PathPattern: "/x/*", Method: "POST"}}, Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}},
	}
	for _, r := range ok {
		if errs := h.s.ValidateRoute(r, snap); len(errs) > 0 {
			t.Errorf("%s: unexpected %v", r.ID, errs)
		}
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
