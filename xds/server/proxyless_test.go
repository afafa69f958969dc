package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

// startHealthBackend starts a grpc.health.v1 server whose Check runs through intercept.
func startHealthBackend(t *testing.T, intercept grpc.UnaryServerInterceptor) *xdstest.Backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(intercept))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	a := l.Addr().(*net.TCPAddr)
	return &xdstest.Backend{Host: "127.0.0.1", Port: a.Port, Addr: a.String()}
}

// snapshotNames lists the resource names of one type in a group's snapshot.
func snapshotNames(s *cachev3.Snapshot, typ types.ResponseType) map[string]bool {
	names := map[string]bool{}
	for name := range s.Resources[typ].Items {
		names[name] = true
	}
	return names
}

// A route with a method condition: the Envoy groups serve it, the gRPC snapshot holds
// neither it nor its cluster, the API accepts it, and its status says OMITTED for the gRPC
// group with the reason, before any client connects and after; translation stays "ok".
func TestOmittedRouteStatus(t *testing.T) {
	h := start(t)
	a := xdstest.StartBackend(t, "a")
	m := route("m", "om.test", a)
	m.Conditions[0].Method = "POST"
	ok := route("ok", "ok.test", a)
	snap := snapshot(1, m, ok)
	if errs := h.s.ValidateRoute(m, snapshot(1, ok)); len(errs) > 0 {
		t.Fatalf("the write must be accepted: %v", errs)
	}
	h.apply(t, snap)

	check := func(st *model.RouteStatus) {
		t.Helper()
		if st == nil || st.Translation != "ok" {
			t.Fatalf("status %+v", st)
		}
		x := st.XDS["grpc"]
		if x.State != StateOmitted || !strings.HasPrefix(x.Error, "conditions[0].method: proxyless gRPC clients do not put :method") {
			t.Fatalf("grpc status %+v", x)
		}
	}
	st := h.s.RouteStatus("m")
	check(st)
	if len(st.XDS) != 1 {
		t.Fatalf("no client connected: only the omission shows, got %+v", st.XDS)
	}
	if st := h.s.RouteStatus("ok"); st == nil || len(st.XDS) != 0 {
		t.Fatalf("a served route without clients has no xDS state: %+v", st)
	}

	p, err := h.s.build(snap)
	if err != nil {
		t.Fatal(err)
	}
	edgeRoutes := map[string]bool{}
	for _, r := range p.snaps["edge"].Resources[types.Route].Items {
		for _, vh := range r.Resource.(*routev3.RouteConfiguration).GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				edgeRoutes[rt.GetName()] = true
			}
		}
	}
	if !edgeRoutes["m"] || !snapshotNames(p.snaps["edge"], types.Cluster)[translate.ClusterName("m", 0)] {
		t.Fatalf("Envoy must serve the route: %v", edgeRoutes)
	}
	if snapshotNames(p.snaps["grpc"], types.Cluster)[translate.ClusterName("m", 0)] {
		t.Fatal("the omitted route's cluster is in the gRPC snapshot")
	}
	for _, r := range p.snaps["grpc"].Resources[types.Route].Items {
		for _, vh := range r.Resource.(*routev3.RouteConfiguration).GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				if rt.GetName() == "m" {
					t.Fatal("the omitted route is in the gRPC snapshot")
				}
			}
		}
	}

	// A client of the host whose only route is omitted gets "no matching route"; a client
	// of the other host is served and ACKs; the omission stands with clients connected.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	okc := xdstest.Dial(t, h.addr, "client-ok", "ok.test")
	if got, err := xdstest.Call(ctx, okc); err != nil || got != "a" {
		t.Fatalf("ok.test: %q %v", got, err)
	}
	waitFor(t, "ok ACKED", func() bool { st := h.s.RouteStatus("ok"); return st.XDS["grpc"].State == StateAcked })
	check(h.s.RouteStatus("m"))
	omc := xdstest.Dial(t, h.addr, "client-om", "om.test")
	_, err = xdstest.Call(ctx, omc)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no matched route") {
		t.Fatalf("om.test: %v", err)
	}
	check(h.s.RouteStatus("m"))
}

// The route timeout applies to proxyless clients: a 300 ms timeout fails a call the backend
// answers after 800 ms, at about 300 ms.
func TestProxylessRouteTimeout(t *testing.T) {
	h := start(t)
	slow := startHealthBackend(t, func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		select {
		case <-time.After(800 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return next(ctx, req)
	})
	r := route("slow", "slow.test", slow)
	r.Timeout = model.Duration(300 * time.Millisecond)
	h.apply(t, snapshot(1, r))
	cc := xdstest.Dial(t, h.addr, "client-1", "slow.test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The first call also waits for the xDS resources: warm up on a call that may time out.
	_, _ = xdstest.Call(ctx, cc)
	start := time.Now()
	_, err := xdstest.Call(ctx, cc)
	took := time.Since(start)
	if status.Code(err) != codes.DeadlineExceeded || took >= 800*time.Millisecond {
		t.Fatalf("call after %v: %v; want DeadlineExceeded from the 300ms route timeout", took, err)
	}
}

// retries: 3 on a route with a protocol grpc target retries UNAVAILABLE at a proxyless
// client: a backend failing every other call fails none of them.
func TestProxylessRetriesUnavailable(t *testing.T) {
	h := start(t)
	var n atomic.Int64
	flaky := startHealthBackend(t, func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if n.Add(1)%2 == 1 {
			return nil, status.Error(codes.Unavailable, "every other call fails")
		}
		return next(ctx, req)
	})
	r := route("flaky", "flaky.test", flaky)
	r.Targets[0].Protocol = "grpc"
	r.Retries = 3
	h.apply(t, snapshot(1, r))
	cc := xdstest.Dial(t, h.addr, "client-1", "flaky.test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitFor(t, "the route", func() bool {
		_, err := xdstest.Call(ctx, cc)
		return status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "every other call")
	})
	failed := 0
	for range 40 {
		if _, err := xdstest.Call(ctx, cc); err != nil {
			if !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.Unavailable {
				t.Fatal(err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Fatalf("%d of 40 calls failed", failed)
	}
}
