package translate

import (
	"reflect"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

// A mirror target naming a service gets the instances of that service in its own cluster:
// the memoized clusters follow an instance of the mirror's service as they follow a target's.
func TestMirrorClusterFollowsItsServiceInstances(t *testing.T) {
	f := false
	snap := func(host string, rev uint64) *model.Snapshot {
		return &model.Snapshot{Revision: rev,
			Services: []*model.Service{{ID: "m1", Name: "shadow", Host: host, Port: 9090, Meta: model.Meta{Revision: rev}}},
			Routes: []*model.Route{{ID: "r", RequireAuth: &f, Meta: model.Meta{Revision: 1},
				Conditions: []model.Condition{{PathPrefix: "/r"}}, Targets: []model.Target{{Host: "10.0.0.1", Port: 80}},
				Mirror: &model.Mirror{Target: &model.Target{Service: "shadow"}}}},
		}
	}
	o := Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return memoT0 }}
	memo := NewTranslator(o)
	if _, err := memo.Translate(snap("10.0.9.1", 2)); err != nil {
		t.Fatal(err)
	}
	got, err := memo.Translate(snap("10.0.9.2", 3))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Translate(snap("10.0.9.2", 3), o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the memo's IR differs from a fresh translation:\n%s", irDiff(got, want))
	}
	var mc *ir.Cluster
	for _, c := range got.Clusters {
		if c.Name == MirrorClusterName("r") {
			mc = c
		}
	}
	if mc == nil || len(mc.Endpoints) != 1 || mc.Endpoints[0].Host != "10.0.9.2" || mc.Endpoints[0].Port != 9090 {
		t.Fatalf("mirror cluster %+v, want the service's moved instance 10.0.9.2:9090", mc)
	}
	r := got.VirtualHosts[0].Routes[0]
	if r.Mirror == nil || r.Mirror.Cluster != MirrorClusterName("r") || r.Mirror.PerMillion != 1_000_000 {
		t.Fatalf("route mirror %+v, want its cluster at 100%%", r.Mirror)
	}
}
