// Package golden reads the shared golden-test models (envoy/testdata/in: small fixed models
// in YAML) and compares a stage's output, as YAML, with its golden file. Every stage with an
// output has one: translate (the IR), envoy (the Envoy and gRPC resources), extauthz (its
// tables), ratelimit (its rules); each package's -update flag rewrites its files, and a
// review reads the change as a YAML diff.
package golden

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// Now is the clock of every golden translation.
var Now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Input is a model in YAML: the collections by name.
type Input struct {
	Routes     []*model.Route     `json:"routes"`
	Services   []*model.Service   `json:"services"`
	RateLimits []*model.RateLimit `json:"rate_limits"`
	IPRules    []*model.IPRule    `json:"ip_rules"`
	Policies   []*model.Policy    `json:"policies"`
	Settings   *model.Settings    `json:"settings"`
	// OTLPEndpoint overrides the translation option.
	OTLPEndpoint string `json:"otlp_endpoint"`
}

// Inputs lists the shared golden models (envoy/testdata/in/*.yaml), by case name.
func Inputs(t testing.TB) map[string]string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(self), "..", "..", "envoy", "testdata", "in")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) < 10 {
		t.Fatalf("expected the golden models in %s, found %d (%v)", dir, len(files), err)
	}
	out := map[string]string{}
	for _, f := range files {
		out[strings.TrimSuffix(filepath.Base(f), ".yaml")] = f
	}
	return out
}

// Each translates every shared golden model and calls fn with the model and its IR, in a
// subtest named after the case (the IR has passed its Validate).
func Each(t *testing.T, fn func(t *testing.T, name string, snap *model.Snapshot, cfg *ir.Config)) {
	for name, f := range Inputs(t) {
		t.Run(name, func(t *testing.T) {
			snap, opts := Load(t, f)
			cfg, err := translate.Translate(snap, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("IR does not validate: %v", err)
			}
			fn(t, name, snap, cfg)
		})
	}
}

// Load reads one model and the translation options of the golden tests.
func Load(t testing.TB, path string) (*model.Snapshot, translate.Options) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var in Input
	if err := yaml.UnmarshalStrict(raw, &in); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	snap := &model.Snapshot{Revision: 1, Routes: in.Routes, Services: in.Services, RateLimits: in.RateLimits,
		IPRules: in.IPRules, Policies: in.Policies, Settings: in.Settings}
	if snap.Settings == nil {
		snap.Settings = &model.Settings{ID: model.SettingsID}
	}
	return snap, translate.Options{
		ListenerAddress: "0.0.0.0:10000", ControlPlane: "controlplane:18000",
		OTLPEndpoint: in.OTLPEndpoint, Now: func() time.Time { return Now },
	}
}

// Compare marshals v to YAML, without its zero values (unset fields, empty lists, the zero
// time), and compares it with the file at path (update: rewrites it). cmd is the command
// that rewrites the package's files, for the failure message.
func Compare(t testing.TB, path string, v any, update bool, cmd string) {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	tree, _ = prune(tree)
	got, err := yaml.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run %s to create it)", err, cmd)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run %s and review the diff):\n%s", path, cmd, firstDiff(string(want), string(got)))
	}
}

// prune drops zero values from a decoded JSON tree; keep is false for a zero value.
func prune(v any) (any, bool) {
	switch x := v.(type) {
	case nil:
		return nil, false
	case bool:
		return x, x
	case float64:
		return x, x != 0
	case string:
		return x, x != "" && x != "0001-01-01T00:00:00Z"
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			// A list keeps its zero elements: their position means something.
			p, _ := prune(e)
			out = append(out, p)
		}
		return out, len(out) > 0
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			if p, keep := prune(e); keep {
				out[k] = p
			}
		}
		return out, len(out) > 0
	}
	return v, true
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
			return "line " + strconv.Itoa(i+1) + ":\n- " + w + "\n+ " + g
		}
	}
	return "(equal lines, different bytes)"
}
