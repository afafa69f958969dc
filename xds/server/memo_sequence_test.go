package server

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// seqState is a model as a few knobs a random step turns: which routes exist and in what
// order, their timeouts, balancing, a header value (a bad one drops the route), and which
// service instances exist on which port.
type seqState struct {
	order    []int // route indexes, in snapshot order
	present  []bool
	timeout  []int
	lb       []string
	badHdr   []bool
	sameAs   []int // >= 0: the route's conditions are another route's (two routes, same content but id)
	instance []bool
	port     []int
}

func newSeqState() *seqState {
	s := &seqState{}
	for i := 0; i < 30; i++ {
		s.order = append(s.order, i)
		s.present = append(s.present, true)
		s.timeout = append(s.timeout, i+1)
		s.lb = append(s.lb, "")
		s.badHdr = append(s.badHdr, false)
		s.sameAs = append(s.sameAs, -1)
	}
	for i := 0; i < 40; i++ {
		s.instance = append(s.instance, true)
		s.port = append(s.port, 8080)
	}
	return s
}

func (s *seqState) clone() *seqState {
	c := *s
	c.order = append([]int(nil), s.order...)
	c.present = append([]bool(nil), s.present...)
	c.timeout = append([]int(nil), s.timeout...)
	c.lb = append([]string(nil), s.lb...)
	c.badHdr = append([]bool(nil), s.badHdr...)
	c.sameAs = append([]int(nil), s.sameAs...)
	c.instance = append([]bool(nil), s.instance...)
	c.port = append([]int(nil), s.port...)
	return &c
}

// step turns one knob at random.
func (s *seqState) step(rng *rand.Rand) {
	r := rng.IntN(len(s.present))
	switch rng.IntN(9) {
	case 0: // swap two routes
		i, j := rng.IntN(len(s.order)), rng.IntN(len(s.order))
		s.order[i], s.order[j] = s.order[j], s.order[i]
	case 1:
		s.present[r] = !s.present[r]
	case 2:
		s.timeout[r] = 1 + rng.IntN(5)
	case 3:
		s.lb[r] = []string{"", "random", "ip_hash", "least_connections"}[rng.IntN(4)]
	case 4:
		s.badHdr[r] = !s.badHdr[r]
	case 5:
		i := rng.IntN(len(s.instance))
		s.instance[i] = !s.instance[i]
	case 6:
		i := rng.IntN(len(s.port))
		s.port[i] = 8080 + rng.IntN(3)
	case 7:
		if s.sameAs[r] >= 0 {
			s.sameAs[r] = -1
		} else {
			s.sameAs[r] = rng.IntN(len(s.present))
		}
	case 8: // nothing changes
	}
}

func (s *seqState) model(t *testing.T, rev uint64) *model.Snapshot {
	snap := memoModel(rev, nil)
	var svcs []*model.Service
	for i, sv := range snap.Services {
		if s.instance[i] {
			sv.Port = s.port[i]
			svcs = append(svcs, sv)
		}
	}
	snap.Services = svcs
	routes := snap.Routes
	snap.Routes = nil
	for _, i := range s.order {
		if !s.present[i] {
			continue
		}
		r := routes[i]
		r.Timeout = model.Duration(int64(s.timeout[i]) * 1e9)
		if s.lb[i] != "" {
			r.LoadBalance = s.lb[i]
		}
		if s.badHdr[i] {
			// Passes the model, refused by Envoy's header format rules: the route is dropped.
			r.RequestHeaders = &model.HeaderOps{Set: map[string]string{"x-a": "%NOPE%"}}
		}
		if j := s.sameAs[i]; j >= 0 && j != i {
			r.Hosts = append([]string(nil), routes[j].Hosts...)
			r.Conditions = []model.Condition{{PathPrefix: fmt.Sprintf("/same%d", j)}}
		}
		snap.Routes = append(snap.Routes, r)
	}
	return withContentRevisions(t, snap)
}

// TestMemoizedRevisionSequenceEqualsFreshBuild feeds a long random sequence of revisions
// (routes swapped, removed, restored, changed, dropped for a bad header, two routes of the
// same match; instances gone, back, moved to another port; unchanged revisions) through the
// pipeline's path: a memoizing translator and the memoized build, with dry-run checks of
// other revisions (a fresh translator, the same memos) and refused revisions in between.
// After every applied revision each group's resources, list versions, per-resource versions
// and endpoint assignments must be those of a fresh translation and build; and over the whole
// run one version string must never name two different contents (Envoy would not fetch the
// second).
func TestMemoizedRevisionSequenceEqualsFreshBuild(t *testing.T) {
	to := translate.Options{ControlPlane: "127.0.0.1:18000"}
	tr := translate.NewTranslator(to)
	memos := map[envoy.Flavor]*envoy.Memo{envoy.FlavorEnvoy: envoy.NewMemo(), envoy.FlavorGRPC: envoy.NewMemo()}
	shared, last := envoy.NewSharedMemo(), &lastBuild{}
	rng := rand.New(rand.NewPCG(7, 11))
	// content by version string: per group and type, the list version; per resource name,
	// its version.
	seen := map[string]string{}
	remember := func(i int, what, version string, content []byte) {
		key := what + "@" + version
		if prev, ok := seen[key]; ok && prev != string(content) {
			t.Fatalf("step %d: version %s of %s names two different contents", i, version, what)
		}
		seen[key] = string(content)
	}
	marshal := func(m proto.Message) []byte {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	variants := []translate.Options{
		{ControlPlane: "127.0.0.2:18000"},
		{ControlPlane: "127.0.0.1:18000", ListenerAddress: "0.0.0.0:10001"},
		{ControlPlane: "127.0.0.1:18000", OTLPEndpoint: "otel:4317"},
		{ControlPlane: "127.0.0.1:18000", OTLPEndpoint: "otel:4318"},
		{ControlPlane: "127.0.0.1:18000", OTLPEndpoint: "otel:4318", ServiceName: "other"},
	}
	nvariant := 0
	state := newSeqState()
	history := []*seqState{state.clone()}
	steps := 100
	if testing.Short() {
		steps = 30 // the -race pass of make test (-short): 10× slower per step under the race detector
	}
	for i := 0; i < steps; i++ {
		rev := uint64(i + 1)
		// Sometimes only the top-level settings change (listener, control plane, tracing,
		// service name): the memoized build must not take the previous output for them.
		opts := to
		variant := rng.IntN(4) == 0
		if variant {
			opts = variants[nvariant%len(variants)]
			nvariant++
		}
		switch k := rng.IntN(10); {
		case variant:
		case k == 0 && len(history) > 2:
			state = history[rng.IntN(len(history))].clone() // back to an earlier revision
		case k == 1:
			// The same model again (a WAF ban, a write of another consumer's object).
		default:
			for n := 1 + rng.IntN(3); n > 0; n-- {
				state.step(rng)
			}
		}
		history = append(history, state.clone())
		// A dry-run check of another revision, as the API makes for a write (a fresh
		// translator, the server's memos), sometimes before the apply.
		if rng.IntN(3) == 0 {
			other := state.clone()
			other.step(rng)
			other.step(rng)
			if _, err := buildSnapshot(other.model(t, rev), to, memos, shared, last); err != nil {
				t.Fatalf("step %d: check: %v", i, err)
			}
		}
		// A revision refused by validation (no control plane address: the whole config is
		// invalid) between two applies.
		if rng.IntN(8) == 0 {
			bad := translate.Options{}
			if _, err := buildSnapshot(state.model(t, rev), bad, memos, shared, last); err == nil {
				t.Fatalf("step %d: a configuration without a control plane address was accepted", i)
			}
		}
		apply := func(opts translate.Options, variant bool) {
			snap := state.model(t, rev)
			var got *prepared
			var err error
			var cfg *ir.Config
			if cfg, err = tr.Translate(snap); err != nil {
				t.Fatal(err)
			}
			if variant {
				// The memoizing translator's routes and clusters with the other settings' top
				// level: only what the settings change differs from the previous input.
				top, err := translate.Translate(state.model(t, rev), opts)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Listener, cfg.ControlPlane, cfg.OTLP, cfg.ServiceName = top.Listener, top.ControlPlane, top.OTLP, top.ServiceName
			}
			got, err = buildConfig(snap.Revision, cfg, memos, shared, last)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			fresh, err := buildSnapshot(state.model(t, rev), opts, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range Groups {
				if !equalVersions(got.st.versions[g.Name], fresh.st.versions[g.Name]) {
					t.Fatalf("step %d group %s: versions %v, fresh %v", i, g.Name, got.st.versions[g.Name], fresh.st.versions[g.Name])
				}
				for j, rt := range []types.ResponseType{types.Listener, types.Route, types.Cluster} {
					url := snapTypes[j].url
					a, b := got.snaps[g.Name].Resources[rt], fresh.snaps[g.Name].Resources[rt]
					if a.Version != b.Version || len(a.Items) != len(b.Items) {
						t.Fatalf("step %d group %s %s: version %s with %d resources, fresh %s with %d", i, g.Name, url, a.Version, len(a.Items), b.Version, len(b.Items))
					}
					names := slices.Sorted(maps.Keys(b.Items))
					var list []byte
					for _, name := range names {
						r := b.Items[name]
						ar, ok := a.Items[name]
						if !ok || !proto.Equal(ar.Resource, r.Resource) {
							t.Fatalf("step %d group %s: %s %s differs from a fresh build", i, g.Name, url, name)
						}
						vm, fvm := got.snaps[g.Name].VersionMap[url][name], fresh.snaps[g.Name].VersionMap[url][name]
						if vm != fvm {
							t.Fatalf("step %d group %s: %s %s version %s, fresh %s", i, g.Name, url, name, vm, fvm)
						}
						content := marshal(r.Resource)
						remember(i, g.Name+" "+url+" "+name, vm, content)
						list = append(append(list, name...), content...)
					}
					remember(i, g.Name+" "+url, a.Version, list)
					if len(got.snaps[g.Name].VersionMap[url]) != len(b.Items) {
						t.Fatalf("step %d group %s %s: version map of %d, %d resources", i, g.Name, url, len(got.snaps[g.Name].VersionMap[url]), len(b.Items))
					}
				}
			}
			if len(got.eds) != len(fresh.eds) {
				t.Fatalf("step %d: %d endpoint assignments, fresh %d", i, len(got.eds), len(fresh.eds))
			}
			for name, e := range fresh.eds {
				if ge, ok := got.eds[name]; !ok || !proto.Equal(ge, e) || got.st.edsHash[name] != fresh.st.edsHash[name] {
					t.Fatalf("step %d: endpoints %s differ from a fresh build", i, name)
				}
				remember(i, resourcev3.EndpointType+" "+name, got.st.edsHash[name], marshal(e))
			}
			for id, e := range fresh.st.routeErrors {
				if got.st.routeErrors[id] != e {
					t.Fatalf("step %d: route %s error %q, fresh %q", i, id, got.st.routeErrors[id], e)
				}
			}
			if len(got.st.routeErrors) != len(fresh.st.routeErrors) {
				t.Fatalf("step %d: %d route errors, fresh %d", i, len(got.st.routeErrors), len(fresh.st.routeErrors))
			}
		}
		if variant {
			// Two settings in a row that differ in one top-level value, then the default.
			apply(opts, true)
			apply(variants[nvariant%len(variants)], true)
			opts = to
		}
		apply(opts, false)
	}
	if st := tr.Stats(); st.Reused == 0 {
		t.Fatalf("the translator reused no route (stats %+v)", st)
	}
}
