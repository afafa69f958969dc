package envoy

import (
	"path/filepath"
	"testing"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/translate"
)

// goldenConfigs translates every testdata/in model (the golden inputs: every shape of route
// and cluster the builders emit).
func goldenConfigs(t *testing.T) map[string]*ir.Config {
	t.Helper()
	paths, err := filepath.Glob("testdata/in/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	out := map[string]*ir.Config{}
	for _, path := range paths {
		snap, opts := golden.Load(t, path)
		cfg, err := translate.Translate(snap, opts)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out[filepath.Base(path)] = cfg
	}
	return out
}

// mutateChecked visits, with a full reflective walk over every set field (Any payloads
// unpacked and packed again), the RegexMatchers and Durations of m in a fixed order, and
// makes the one numbered target (counting from *n) invalid for Envoy. It returns whether it
// changed m; *n counts the targets visited.
func mutateChecked(t *testing.T, m protoreflect.Message, n *int, target int) bool {
	switch v := m.Interface().(type) {
	case *matcherv3.RegexMatcher:
		*n++
		if *n-1 == target {
			v.Regex = "(" // RE2 refuses it
			return true
		}
		return false
	case *durationpb.Duration:
		*n++
		if *n-1 == target {
			v.Seconds, v.Nanos = -1, 0 // below Envoy's range
			return true
		}
		return false
	case *anypb.Any:
		inner, err := v.UnmarshalNew()
		if err != nil {
			t.Fatalf("%s: %v", v.GetTypeUrl(), err)
		}
		if !mutateChecked(t, inner.ProtoReflect(), n, target) {
			return false
		}
		if err := anypb.MarshalFrom(v, inner, proto.MarshalOptions{Deterministic: true}); err != nil {
			t.Fatal(err)
		}
		return true
	}
	changed := false
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				val.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					changed = mutateChecked(t, mv.Message(), n, target)
					return !changed
				})
			}
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				for i := 0; i < val.List().Len() && !changed; i++ {
					changed = mutateChecked(t, val.List().Get(i).Message(), n, target)
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			changed = mutateChecked(t, val.Message(), n, target)
		}
		return !changed
	})
	return changed
}

// TestRuntimeWalkFindsEveryCheckedMessage: the runtime-rule walk visits only the fields its
// per-type plan names, and reads a packed message instead of its Any. For every route and
// cluster the golden inputs build (both flavors), each RegexMatcher and Duration a full
// reflective walk finds, made invalid one at a time, must be refused by the planned walk;
// and every message a builder packed must be what its Any holds (a message changed after
// packing would be checked in a form Envoy never receives).
func TestRuntimeWalkFindsEveryCheckedMessage(t *testing.T) {
	targets := 0
	for name, cfg := range goldenConfigs(t) {
		for _, f := range []Flavor{FlavorEnvoy, FlavorGRPC} {
			var built []proto.Message
			var packs [][]packedAny
			for _, vh := range cfg.VirtualHosts {
				for _, r := range vh.Routes {
					b := &builder{o: Options{Flavor: f}, cfg: cfg}
					if er := b.route(r); b.err == nil {
						built, packs = append(built, er), append(packs, b.packed)
					}
				}
			}
			for _, c := range cfg.Clusters {
				b := &builder{o: Options{Flavor: f}, cfg: cfg}
				if pc, _ := b.cluster(c); b.err == nil {
					built, packs = append(built, pc), append(packs, b.packed)
				}
			}
			for i, res := range built {
				for _, p := range packs[i] {
					inner, err := p.a.UnmarshalNew()
					if err != nil {
						t.Fatal(err)
					}
					if !proto.Equal(inner, p.m) {
						t.Errorf("%s flavor %d: %s: the packed message differs from its Any", name, f, p.a.GetTypeUrl())
					}
				}
				for target := 0; ; target++ {
					c := proto.Clone(res)
					n := 0
					if !mutateChecked(t, c.ProtoReflect(), &n, target) {
						break
					}
					targets++
					if err := walkRuntime(c.ProtoReflect(), 0, nil); err == nil {
						t.Errorf("%s flavor %d: checked message %d of %s made invalid, and the walk passes it:\n%v", name, f, target,
							res.ProtoReflect().Descriptor().FullName(), c)
					}
				}
			}
		}
	}
	if targets < 20 {
		t.Fatalf("only %d checked messages in the golden resources: the test checks too little", targets)
	}
	t.Logf("%d checked messages made invalid one at a time", targets)
}
