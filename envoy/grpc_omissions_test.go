package envoy_test

import (
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/translate"
)

// GRPCOmissions is what a gRPC-flavor Build leaves out, fresh or through a memo, on every
// golden case: `validate -f` reports from it, the served status from Build.
func TestGRPCOmissionsAreWhatBuildLeavesOut(t *testing.T) {
	files, _ := filepath.Glob("testdata/in/*.yaml")
	seen := 0
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			snap, opts := golden.Load(t, f)
			cfg, err := translate.Translate(snap, opts)
			if err != nil {
				t.Fatal(err)
			}
			got := envoy.GRPCOmissions(cfg)
			memo := envoy.NewMemo()
			for _, o := range []envoy.Options{{Flavor: envoy.FlavorGRPC}, {Flavor: envoy.FlavorGRPC, Memo: memo}, {Flavor: envoy.FlavorGRPC, Memo: memo}} {
				res, err := envoy.Build(cfg, o)
				if err != nil {
					t.Fatal(err)
				}
				if !maps.Equal(got, res.Omitted) {
					t.Fatalf("GRPCOmissions %v, Build left out %v", got, res.Omitted)
				}
			}
			res, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Omitted) > 0 {
				t.Fatalf("the Envoy flavor left out %v", res.Omitted)
			}
			seen += len(got)
		})
	}
	if seen == 0 {
		t.Fatal("no golden case leaves a route out of the gRPC flavor: the comparison proves nothing")
	}
}
