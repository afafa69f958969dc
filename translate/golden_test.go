package translate_test

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/translate"
)

var update = flag.Bool("update", false, "rewrite testdata/ir from the current translation")

// TestGoldenIR translates every shared golden model (envoy/testdata/in) and compares the IR
// with testdata/ir (go test ./translate -run TestGoldenIR -update rewrites them).
func TestGoldenIR(t *testing.T) {
	for name, f := range golden.Inputs(t) {
		t.Run(name, func(t *testing.T) {
			snap, opts := golden.Load(t, f)
			cfg, err := translate.Translate(snap, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("IR does not validate: %v", err)
			}
			golden.Compare(t, filepath.Join("testdata", "ir", name+".yaml"), cfg, *update, "go test ./translate -run TestGoldenIR -update")
		})
	}
}
