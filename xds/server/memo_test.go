package server

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/cespare/xxhash/v2"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// memoModel is a small model with services, routes of several shapes (weighted targets,
// ip_hash, authz, sticky sessions, rewrites) and a revision number.
func memoModel(rev uint64, mutate func(*model.Snapshot)) *model.Snapshot {
	snap := benchModel(0)
	snap.Revision = rev
	snap.Services = snap.Services[:40]
	for i := 0; i < 30; i++ {
		r := &model.Route{
			ID:         fmt.Sprintf("r%02d", i),
			Hosts:      []string{fmt.Sprintf("h%d.test", i%4)},
			Conditions: []model.Condition{{PathPattern: fmt.Sprintf("/p%d/*", i)}, {PathPrefix: fmt.Sprintf("/q%d", i), Method: "POST"}},
			Targets:    []model.Target{{Service: fmt.Sprintf("svc-%04d", i%20)}, {Service: fmt.Sprintf("svc-%04d", (i+1)%20), Weight: weight(3)}},
			Timeout:    model.Duration(int64(i+1) * 1e9),
		}
		// Most routes reach the gRPC flavor; a method condition, ext_authz or a rewrite leave
		// the others out of it (both kinds go through the memos).
		if i%6 != 5 {
			r.Conditions[1].Method = ""
		}
		if i%8 != 0 {
			r.RequireAuth = falsePtr()
		}
		switch i % 4 {
		case 0:
			r.LoadBalance = "ip_hash"
		case 2:
			r.StickySession = &model.StickySession{}
		case 3:
			r.Rewrite = &model.Rewrite{Prefix: "/x"}
		}
		// Clusters the flavors build differently: health checks, TLS to a DNS name.
		switch i % 5 {
		case 0:
			r.Targets[0].HealthPath = "/health"
		case 1:
			r.Targets = append(r.Targets, model.Target{Host: fmt.Sprintf("b%d.example", i), Port: 443, TLS: true})
		}
		snap.Routes = append(snap.Routes, r)
	}
	if mutate != nil {
		mutate(snap)
	}
	return snap
}

// TestMemoizedBuildEqualsFreshBuild applies a sequence of revisions to one server (memos
// carried over) and compares every group's resources and versions with a build from empty
// memos: equal content, equal versions; unchanged routes keep their protos; an instance
// going away changes EDS only.
func TestMemoizedBuildEqualsFreshBuild(t *testing.T) {
	to := translate.Options{ControlPlane: "127.0.0.1:18000"}
	s, err := New(Options{Translate: to})
	if err != nil {
		t.Fatal(err)
	}
	revs := []func(*model.Snapshot){
		nil,
		func(s *model.Snapshot) { s.Routes[3].Timeout = model.Duration(99e9) },             // one route
		func(s *model.Snapshot) { s.Services = append(s.Services[:5], s.Services[6:]...) }, // an instance goes
		func(s *model.Snapshot) { s.Routes = s.Routes[1:] },                                // a route goes
		func(s *model.Snapshot) { s.Routes[7].LoadBalance = "random" },                     // a cluster changes
		func(s *model.Snapshot) {
			s.Routes[9].Conditions[0].Headers = []model.HeaderMatch{{Name: "X-A", Exact: "1"}}
		},
		nil, // back to the first
	}
	// Each revision is the first model with one change (not cumulative).
	var prev, base *prepared
	for i, mut := range revs {
		got, err := s.build(memoModel(uint64(i+1), mut))
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := buildSnapshot(memoModel(uint64(i+1), mut), to, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range Groups {
			if !equalVersions(got.st.versions[g.Name], fresh.st.versions[g.Name]) {
				t.Fatalf("rev %d group %s: versions %v, fresh %v", i, g.Name, got.st.versions[g.Name], fresh.st.versions[g.Name])
			}
			for _, rt := range []types.ResponseType{types.Listener, types.Route, types.Cluster} {
				a, b := got.snaps[g.Name].Resources[rt].Items, fresh.snaps[g.Name].Resources[rt].Items
				if len(a) != len(b) {
					t.Fatalf("rev %d group %s type %d: %d resources, fresh %d", i, g.Name, rt, len(a), len(b))
				}
				for name, r := range a {
					if !proto.Equal(r.Resource, b[name].Resource) {
						t.Fatalf("rev %d group %s: %s differs from a fresh build", i, g.Name, name)
					}
				}
			}
		}
		if len(got.eds) != len(fresh.eds) {
			t.Fatalf("rev %d: %d endpoint assignments, fresh %d", i, len(got.eds), len(fresh.eds))
		}
		for name, e := range got.eds {
			if !proto.Equal(e, fresh.eds[name]) || got.st.edsHash[name] != fresh.st.edsHash[name] {
				t.Fatalf("rev %d: endpoints %s differ from a fresh build", i, name)
			}
		}
		if i == 1 {
			// Only r03 changed: every other Envoy route is the same proto as before.
			old, cur := routesByName(prev, "edge"), routesByName(got, "edge")
			for name, r := range cur {
				same := old[name] == r
				if changed := name == "r03" || name == "r03/1"; same == changed {
					t.Errorf("route %s: reused=%v", name, same)
				}
			}
			if got.st.versions["edge"][resourcev3.ClusterType] != prev.st.versions["edge"][resourcev3.ClusterType] {
				t.Error("a route timeout changed the CDS version")
			}
		}
		if i == 0 {
			base = got
		}
		if i == 2 {
			for _, g := range Groups {
				v, pv := got.st.versions[g.Name], base.st.versions[g.Name]
				if !equalVersions(v, pv) {
					t.Errorf("group %s: an instance going away changed %v -> %v (EDS only expected)", g.Name, pv, v)
				}
			}
			changed := 0
			for name, h := range got.st.edsHash {
				if base.st.edsHash[name] != h {
					changed++
				}
			}
			if changed == 0 {
				t.Error("an instance going away changed no endpoint assignment")
			}
		}
		prev = got
	}
	first, err := buildSnapshot(memoModel(1, nil), to, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range Groups {
		if !equalVersions(prev.st.versions[g.Name], first.st.versions[g.Name]) {
			t.Errorf("group %s: the same model after changes has other versions", g.Name)
		}
	}
}

func routesByName(p *prepared, group string) map[string]*routev3.Route {
	out := map[string]*routev3.Route{}
	for _, it := range p.snaps[group].Resources[types.Route].Items {
		for _, vh := range it.Resource.(*routev3.RouteConfiguration).VirtualHosts {
			for _, r := range vh.Routes {
				out[r.Name] = r
			}
		}
	}
	return out
}

// TestMemoKeepsOnlyLiveEntries: entries of resources gone from the model are dropped.
func TestMemoKeepsOnlyLiveEntries(t *testing.T) {
	to := translate.Options{ControlPlane: "127.0.0.1:18000"}
	memos := map[envoy.Flavor]*envoy.Memo{envoy.FlavorEnvoy: envoy.NewMemo(), envoy.FlavorGRPC: envoy.NewMemo()}
	if _, err := buildSnapshot(memoModel(1, nil), to, memos, envoy.NewSharedMemo(), nil); err != nil {
		t.Fatal(err)
	}
	full := memos[envoy.FlavorEnvoy].Len()
	if _, err := buildSnapshot(memoModel(2, func(s *model.Snapshot) { s.Routes = s.Routes[:3] }), to, memos, envoy.NewSharedMemo(), nil); err != nil {
		t.Fatal(err)
	}
	if n := memos[envoy.FlavorEnvoy].Len(); n == 0 || n >= full/5 {
		t.Fatalf("memo holds %d entries after dropping 27 of 30 routes (had %d)", n, full)
	}
}

// withContentRevisions gives every object of snap a store revision derived from its content
// (as the store's: a changed object has a new revision), so the memoizing translator reuses
// the IR of unchanged ones.
func withContentRevisions(t *testing.T, snap *model.Snapshot) *model.Snapshot {
	t.Helper()
	rev := func(o any, m *model.Meta) {
		m.Revision = 0
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		m.Revision = xxhash.Sum64(b) >> 1
	}
	for _, r := range snap.Routes {
		rev(r, &r.Meta)
	}
	for _, s := range snap.Services {
		rev(s, &s.Meta)
	}
	rev(snap.Settings, &snap.Settings.Meta)
	return snap
}

// TestTranslatorReuseBuildEqualsFreshBuild: the pipeline's path, a memoizing translator
// handing the same IR objects to the memoized build, gives every group the versions and
// endpoint assignments a fresh translation and build give (with -race the memos also
// re-hash every IR object they reuse and panic if it was changed in place).
func TestTranslatorReuseBuildEqualsFreshBuild(t *testing.T) {
	to := translate.Options{ControlPlane: "127.0.0.1:18000"}
	tr := translate.NewTranslator(to)
	memos := map[envoy.Flavor]*envoy.Memo{envoy.FlavorEnvoy: envoy.NewMemo(), envoy.FlavorGRPC: envoy.NewMemo()}
	shared, last := envoy.NewSharedMemo(), &lastBuild{}
	revs := []func(*model.Snapshot){
		nil,
		nil, // nothing changed
		func(s *model.Snapshot) { s.Routes[3].Timeout = model.Duration(99e9) },
		func(s *model.Snapshot) { s.Services = append(s.Services[:5], s.Services[6:]...) },
		func(s *model.Snapshot) { s.Routes = s.Routes[1:] },
		func(s *model.Snapshot) { s.Routes[7].LoadBalance = "random" },
		nil,
	}
	for i, mut := range revs {
		snap := withContentRevisions(t, memoModel(uint64(i+1), mut))
		cfg, err := tr.Translate(snap)
		if err != nil {
			t.Fatal(err)
		}
		got, err := buildConfig(snap.Revision, cfg, memos, shared, last)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := buildSnapshot(withContentRevisions(t, memoModel(uint64(i+1), mut)), to, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range Groups {
			if !equalVersions(got.st.versions[g.Name], fresh.st.versions[g.Name]) {
				t.Fatalf("rev %d group %s: versions %v, fresh %v", i, g.Name, got.st.versions[g.Name], fresh.st.versions[g.Name])
			}
			for _, rt := range []types.ResponseType{types.Listener, types.Route, types.Cluster} {
				a, b := got.snaps[g.Name].Resources[rt].Items, fresh.snaps[g.Name].Resources[rt].Items
				if len(a) != len(b) {
					t.Fatalf("rev %d group %s type %d: %d resources, fresh %d", i, g.Name, rt, len(a), len(b))
				}
				for name, r := range a {
					if !proto.Equal(r.Resource, b[name].Resource) {
						t.Fatalf("rev %d group %s: %s differs from a fresh build", i, g.Name, name)
					}
				}
			}
		}
		if len(got.eds) != len(fresh.eds) {
			t.Fatalf("rev %d: %d endpoint assignments, fresh %d", i, len(got.eds), len(fresh.eds))
		}
		for name, e := range got.eds {
			if !proto.Equal(e, fresh.eds[name]) || got.st.edsHash[name] != fresh.st.edsHash[name] {
				t.Fatalf("rev %d: endpoints %s differ from a fresh build", i, name)
			}
		}
	}
	if st := tr.Stats(); st.Reused == 0 {
		t.Fatalf("the translator reused no route (stats %+v): the test does not exercise reuse", st)
	}
}
