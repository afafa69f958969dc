package envoy_test

import (
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/translate"
)

// A route whose Envoy resources fail ValidateAll is dropped and reported; the listener and
// the other routes are still built.
func TestBuildDropsInvalidRouteOnly(t *testing.T) {
	snap, opts := golden.Load(t, "testdata/in/paths.yaml")
	cfg, err := translate.Translate(snap, opts)
	if err != nil {
		t.Fatal(err)
	}
	var victim *ir.Route
	for _, vh := range cfg.VirtualHosts {
		for _, r := range vh.Routes {
			if r.RouteID == "health" {
				victim = r
			}
		}
	}
	// Envoy rejects a header name with a newline (HeaderValue.key is a well-known header name).
	victim.RequestHeaders.Add = []ir.HeaderValue{{Name: "bad\nheader", Value: "x"}}
	res, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	if res.RouteErrors["health"] == "" || len(res.RouteErrors) != 1 {
		t.Fatalf("route errors %v", res.RouteErrors)
	}
	if len(res.Listeners) != 1 || len(res.Routes) != 1 {
		t.Fatalf("listener and route configuration must stay: %d %d", len(res.Listeners), len(res.Routes))
	}
	names := map[string]bool{}
	for _, vh := range res.Routes[0].GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			names[r.GetName()] = true
		}
	}
	if names["health"] || !names["users-prefix"] || !names["catch-all"] {
		t.Fatalf("routes %v", names)
	}
	for _, c := range res.Clusters {
		if c.GetName() == translate.ClusterName("health", 0) {
			t.Fatal("the dropped route's cluster must be left out too")
		}
	}
}

// Identical input gives identical resources, whatever the order of the model's lists.
func TestBuildIsDeterministic(t *testing.T) {
	snap, opts := golden.Load(t, "testdata/in/load_balance.yaml")
	build := func() *envoy.Resources {
		cfg, err := translate.Translate(snap, opts)
		if err != nil {
			t.Fatal(err)
		}
		res, err := envoy.Build(cfg, envoy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a := build()
	rand.Shuffle(len(snap.Routes), func(i, j int) { snap.Routes[i], snap.Routes[j] = snap.Routes[j], snap.Routes[i] })
	b := build()
	if !proto.Equal(a.Routes[0], b.Routes[0]) || len(a.Clusters) != len(b.Clusters) {
		t.Fatal("route configuration differs")
	}
	for i := range a.Clusters {
		if !proto.Equal(a.Clusters[i], b.Clusters[i]) {
			t.Fatalf("cluster %d differs", i)
		}
	}
	ab, _ := proto.MarshalOptions{Deterministic: true}.Marshal(a.Listeners[0])
	bb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(b.Listeners[0])
	if string(ab) != string(bb) {
		t.Fatal("listener bytes differ")
	}
}
