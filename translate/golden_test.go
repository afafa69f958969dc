package translate_test

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

var update = flag.Bool("update", false, "rewrite testdata/ir from the current translation")

// TestGoldenIR translates every shared golden model (envoy/testdata/in) and compares the IR
// with testdata/ir (go test ./translate -run TestGoldenIR -update rewrites them).
func TestGoldenIR(t *testing.T) {
	golden.Each(t, func(t *testing.T, name string, _ *model.Snapshot, cfg *ir.Config) {
		golden.Compare(t, filepath.Join("testdata", "ir", name+".yaml"), cfg, *update, "go test ./translate -run TestGoldenIR -update")
	})
}
