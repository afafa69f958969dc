package faults

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/xds"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

var resolverSeq atomic.Int64

// controlPlaneTarget registers a resolver scheme that lists every replica's gRPC address,
// the way a DNS name or a headless Kubernetes Service does, and returns a target using it.
// The xDS client's channel picks the first; when it dies, the channel moves to the next.
func controlPlaneTarget(t *testing.T, replicas ...*testutil.Gateway) string {
	t.Helper()
	scheme := "agwfaults" + string(rune('a'+resolverSeq.Add(1)))
	r := manual.NewBuilderWithScheme(scheme)
	var addrs []resolver.Address
	for _, g := range replicas {
		addrs = append(addrs, resolver.Address{Addr: g.GRPCAddr()})
	}
	r.InitialState(resolver.State{Addresses: addrs})
	resolver.Register(r)
	return scheme + ":///control-plane"
}

// dialXDS opens a proxyless grpc-go channel to xds:///target whose xDS client talks to the
// control plane at cpTarget.
func dialXDS(t *testing.T, cpTarget, nodeID, target string) *grpc.ClientConn {
	t.Helper()
	rb, err := xds.NewXDSResolverWithConfigForTesting(xdstest.Bootstrap(cpTarget, nodeID, "edge"))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func grpcRoute(id, host string, b *xdstest.Backend) map[string]any {
	return map[string]any{"id": id, "hosts": []string{host}, "require_auth": false,
		"conditions": []any{map[string]any{"path_pattern": "/*"}},
		"targets":    []any{map[string]any{"host": b.Host, "port": b.Port}}}
}

// Kill one of two replicas sharing Redis: grpc-go xDS clients connected to it keep their
// routes while it is gone, reconnect to the other replica, and follow changes made there;
// no configuration is lost.
func TestReplicaKill(t *testing.T) {
	rs := startPersistentRedis(t)
	g1 := startReplica(t, rs.Addr)
	g2 := startReplica(t, rs.Addr)
	a, b := xdstest.StartBackend(t, "a"), xdstest.StartBackend(t, "b")

	// Configuration written on replica 1.
	mustDo(t, g1, "POST", "/api/v1/management/routes", jsonBody(grpcRoute("echo", "echo.faults", a)), nil, http.StatusCreated)
	for _, id := range []string{"acme", "globex", "initech"} {
		mustDo(t, g1, "POST", "/api/v1/management/tenants", `{"id":"`+id+`"}`, nil, http.StatusCreated)
	}

	// Clients whose control-plane channel lists replica 1 first: they connect to it.
	cp := controlPlaneTarget(t, g1, g2)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var clients []*grpc.ClientConn
	for _, node := range []string{"client-1", "client-2"} {
		cc := dialXDS(t, cp, node, "echo.faults")
		eventually(t, 20*time.Second, node+" to reach backend a", func() bool {
			got, err := xdstest.Call(ctx, cc)
			return err == nil && got == "a"
		})
		clients = append(clients, cc)
	}

	// A write on replica 1 reaches a client of replica 2 within one second.
	mustDo(t, g1, "POST", "/api/v1/management/routes", jsonBody(grpcRoute("mirror", "mirror.faults", a)), nil, http.StatusCreated)
	mirror := dialXDS(t, controlPlaneTarget(t, g2), "client-of-2", "mirror.faults")
	eventually(t, 20*time.Second, "a client of replica 2 to reach a", func() bool {
		got, err := xdstest.Call(ctx, mirror)
		return err == nil && got == "a"
	})
	mustDo(t, g1, "PUT", "/api/v1/management/routes/mirror", jsonBody(grpcRoute("mirror", "mirror.faults", b)), nil, http.StatusOK)
	written := time.Now()
	eventually(t, 10*time.Second, "replica 2 to serve the write made on replica 1", func() bool {
		got, err := xdstest.Call(ctx, mirror)
		return err == nil && got == "b"
	})
	if lag := time.Since(written); lag > time.Second {
		t.Errorf("replica 2 served a write made on replica 1 after %s (want within 1s)", lag)
	} else {
		t.Logf("replica 2 served a write made on replica 1 after %s", lag.Round(time.Millisecond))
	}

	g1.Kill()
	if err := waitTCPClosed(g1.GRPCAddr(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// While the replica is gone the clients keep routing with what they have.
	for i := 0; i < 20; i++ {
		for _, cc := range clients {
			if got, err := xdstest.Call(ctx, cc); err != nil || got != "a" {
				t.Fatalf("call after the replica died: %q %v", got, err)
			}
		}
	}
	// Replica 2 has every object written on replica 1.
	if ids := listIDs(t, g2, "tenants"); len(ids) != 3 {
		t.Fatalf("replica 2 tenants: %v", ids)
	}
	mustDo(t, g2, "GET", "/api/v1/management/routes/echo", nil, nil, http.StatusOK)

	// A change on replica 2 reaches the same clients: they reconnected to it.
	mustDo(t, g2, "PUT", "/api/v1/management/routes/echo", jsonBody(grpcRoute("echo", "echo.faults", b)), nil, http.StatusOK)
	start := time.Now()
	for i, cc := range clients {
		eventually(t, 30*time.Second, "a client of the dead replica to follow replica 2", func() bool {
			got, err := xdstest.Call(ctx, cc)
			return err == nil && got == "b"
		})
		t.Logf("client-%d follows replica 2 after %s", i+1, time.Since(start).Round(time.Millisecond))
	}

	// Replica 1 comes back and serves the same configuration, including the change made
	// while it was gone.
	g1.Start()
	mustDo(t, g1, "GET", "/api/v1/management/routes/echo", nil, nil, http.StatusOK)
	fresh := dialXDS(t, controlPlaneTarget(t, g1), "client-3", "echo.faults")
	eventually(t, 20*time.Second, "a new client of the restarted replica to reach b", func() bool {
		got, err := xdstest.Call(ctx, fresh)
		return err == nil && got == "b"
	})
}
