package server

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

func pushes(h *harness, typ string) float64 {
	return testutil.ToFloat64(h.s.m.pushes.WithLabelValues(typ))
}

// An instance going down changes EDS only: listeners, routes and clusters are not pushed.
func TestInstanceChangePushesEDSOnly(t *testing.T) {
	h := start(t)
	a, b := xdstest.StartBackend(t, "a"), xdstest.StartBackend(t, "b")
	r := &model.Route{ID: "svc", Hosts: []string{"svc.test"}, RequireAuth: falsePtr(), Conditions: []model.Condition{{PathPattern: "/*"}},
		Targets: []model.Target{{Service: "pool"}}}
	inst := func(be *xdstest.Backend) *model.Service {
		return &model.Service{ID: "pool-" + be.Name, Name: "pool", Host: be.Host, Port: be.Port}
	}
	snap := snapshot(1, r)
	snap.Services = []*model.Service{inst(a), inst(b)}
	h.apply(t, snap)
	cc := xdstest.Dial(t, h.addr, "client-1", "svc.test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seen := map[string]bool{}
	waitFor(t, "both instances", func() bool {
		got, err := xdstest.Call(ctx, cc)
		if err != nil {
			t.Fatal(err)
		}
		seen[got] = true
		return seen["a"] && seen["b"]
	})
	waitFor(t, "ACKED", func() bool { return h.s.RouteStatus("svc").XDS["grpc"].State == StateAcked })
	lds, rds, cds, eds := pushes(h, "lds"), pushes(h, "rds"), pushes(h, "cds"), pushes(h, "eds")

	down := snapshot(2, r)
	down.Services = []*model.Service{inst(a), {ID: "pool-b", Name: "pool", Host: b.Host, Port: b.Port, Status: model.StatusUnhealthy}}
	h.apply(t, down)
	waitFor(t, "b drained", func() bool {
		for i := 0; i < 10; i++ {
			if got, err := xdstest.Call(ctx, cc); err != nil || got == "b" {
				return false
			}
		}
		return true
	})
	if pushes(h, "eds") <= eds {
		t.Fatal("no EDS push for the instance change")
	}
	if pushes(h, "lds") != lds || pushes(h, "rds") != rds || pushes(h, "cds") != cds {
		t.Fatalf("an instance change pushed lds %v rds %v cds %v", pushes(h, "lds")-lds, pushes(h, "rds")-rds, pushes(h, "cds")-cds)
	}
}

// Delta xDS: an Envoy-like client on the delta ADS stream gets the edge group's clusters,
// ACKs them, and a NACK on the delta stream is recorded.
func TestDeltaADS(t *testing.T) {
	h := start(t)
	a := xdstest.StartBackend(t, "a")
	h.apply(t, snapshot(1, route("r1", "echo.test", a)))
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "envoy-1", Cluster: "edge", UserAgentName: "envoy"}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range resp.GetResources() {
		names[r.GetName()] = true
		var c clusterv3.Cluster
		if err := proto.Unmarshal(r.GetResource().GetValue(), &c); err != nil {
			t.Fatal(err)
		}
	}
	if !names[translate.ClusterName("r1", 0)] || !names["api_gateway_grpc"] {
		t.Fatalf("delta clusters %v", names)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delta ACK recorded", func() bool {
		for _, n := range h.s.Nodes() {
			if n.ID == "envoy-1" && n.Group == "edge" && n.Acked["cds"] == resp.GetSystemVersionInfo() {
				return true
			}
		}
		return false
	})
	// A changed route pushes a delta update; the client rejects it.
	h.apply(t, snapshot(2, route("r1", "echo.test", a), route("r2", "other.test", a)))
	resp, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: statusProto("cluster r2/0: rejected by test")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delta NACK recorded", func() bool {
		st := h.s.RouteStatus("r2")
		return st != nil && st.XDS["edge"].State == StateNacked && st.XDS["edge"].Node == "envoy-1"
	})
	if st := h.s.RouteStatus("r1"); st.XDS["edge"].State == StateNacked {
		t.Fatalf("r1 is not concerned by a NACK naming r2/0: %+v", st)
	}
}

func statusProto(msg string) *rpcstatus.Status { return &rpcstatus.Status{Code: 3, Message: msg} }
