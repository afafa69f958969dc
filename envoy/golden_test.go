package envoy_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/translate"
)

var update = flag.Bool("update", false, "rewrite testdata/out from the current translation")

// TestGolden translates every testdata/in case and compares the Envoy and gRPC resources
// with testdata/out (go test ./envoy -run TestGolden -update rewrites them).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/in/*.yaml")
	if len(files) < 10 {
		t.Fatalf("expected the golden cases, found %d", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			snap, opts := golden.Load(t, f)
			cfg, err := translate.Translate(snap, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("IR does not validate: %v", err)
			}
			doc := map[string]any{}
			if len(cfg.RouteErrors) > 0 {
				doc["translation_errors"] = cfg.RouteErrors
			}
			if len(cfg.RouteWarnings) > 0 {
				doc["route_warnings"] = cfg.RouteWarnings
			}
			for _, fl := range []struct {
				key    string
				flavor envoy.Flavor
			}{{"envoy", envoy.FlavorEnvoy}, {"grpc", envoy.FlavorGRPC}} {
				res, err := envoy.Build(cfg, envoy.Options{Flavor: fl.flavor})
				if err != nil {
					t.Fatalf("%s: %v", fl.key, err)
				}
				for _, m := range allResources(res) {
					if err := envoy.Validate(m); err != nil {
						t.Errorf("%s: resource fails ValidateAll: %v", fl.key, err)
					}
				}
				v, err := envoy.ResourcesValue(res)
				if err != nil {
					t.Fatal(err)
				}
				doc[fl.key] = v
			}
			got, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join("testdata", "out", name+".yaml")
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the translation (run go test ./envoy -run TestGolden -update and review the diff):\n%s", out, firstDiff(string(want), string(got)))
			}
		})
	}
}

func allResources(r *envoy.Resources) []proto.Message {
	var out []proto.Message
	for _, ms := range r.ByKind() {
		out = append(out, ms...)
	}
	return out
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + itoa(i+1) + ":\n- " + w + "\n+ " + g
		}
	}
	return ""
}

func itoa(n int) string { return strconv.Itoa(n) }
