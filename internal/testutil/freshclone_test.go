package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// readsBeyond reports whether a piece of a test file in dir opens files outside dir: through
// RepoRoot or GeoIPDir, or a relative path climbing out of dir to something the repository
// holds ("/../../site/admin" in a request URL or "../" alone in a fuzz alphabet opens nothing).
func readsBeyond(root, dir, text string) bool {
	if strings.Contains(text, "testutil.RepoRoot()") || strings.Contains(text, "testutil.GeoIPDir()") {
		return true
	}
	for _, line := range strings.Split(text, "\n") {
		if joinClimbs("x.go", line) > 0 { // filepath.Join("..", "README.md"): climbs out of dir
			return true
		}
	}
	for _, m := range upPath.FindAllStringSubmatch(text, -1) {
		p := path.Join(dir, m[1])
		if p == "." || p == ".." || strings.HasPrefix(p, "../") || p == dir || strings.HasPrefix(p, dir+"/") {
			continue
		}
		if hits, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(p))); len(hits) > 0 {
			return true
		}
	}
	return false
}

// testsReadingBeyondThemselves returns, per package (./dir), the tests that open files
// outside their own folder: the top-level declarations of its test files that read beyond
// it (readsBeyond), then every declaration naming one of those, until none is added; the
// tests (Test*, Fuzz*, Example*) among them. Names are matched as identifiers, not resolved,
// so a test calling a method or variable of the same name as a reading one is selected too:
// more tests, never fewer. A TestMain that reads selects every test of its package (it runs
// before each). This package is left out (its tests are these checks).
func testsReadingBeyondThemselves(t *testing.T, root string) map[string][]string {
	t.Helper()
	byDir := map[string][]string{}
	for _, f := range repoFiles(t, root) {
		if dir := path.Dir(f); strings.HasSuffix(f, "_test.go") && dir != "internal/testutil" {
			byDir[dir] = append(byDir[dir], f)
		}
	}
	out := map[string][]string{}
	for dir, files := range byDir {
		type decl struct {
			names []string
			uses  map[string]bool
			reads bool
		}
		var decls []*decl
		var tests []string
		fset := token.NewFileSet()
		for _, f := range files {
			src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
			if err != nil {
				t.Fatal(err)
			}
			file, err := parser.ParseFile(fset, f, src, parser.SkipObjectResolution)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for _, d := range file.Decls {
				dc := &decl{uses: map[string]bool{}}
				switch d := d.(type) {
				case *ast.FuncDecl:
					dc.names = []string{d.Name.Name}
					if d.Recv == nil && (strings.HasPrefix(d.Name.Name, "Test") || strings.HasPrefix(d.Name.Name, "Fuzz") ||
						strings.HasPrefix(d.Name.Name, "Example")) && d.Name.Name != "TestMain" {
						tests = append(tests, d.Name.Name)
					}
				case *ast.GenDecl:
					for _, sp := range d.Specs {
						switch sp := sp.(type) {
						case *ast.ValueSpec:
							for _, n := range sp.Names {
								dc.names = append(dc.names, n.Name)
							}
						case *ast.TypeSpec:
							dc.names = append(dc.names, sp.Name.Name)
						}
					}
				}
				ast.Inspect(d, func(n ast.Node) bool {
					if id, ok := n.(*ast.Ident); ok {
						dc.uses[id.Name] = true
					}
					return true
				})
				from, to := fset.Position(d.Pos()).Offset, fset.Position(d.End()).Offset
				dc.reads = readsBeyond(root, dir, string(src[from:to]))
				decls = append(decls, dc)
			}
		}
		reading := map[string]bool{}
		for changed := true; changed; {
			changed = false
			for _, dc := range decls {
				if !dc.reads {
					for u := range dc.uses {
						if reading[u] {
							dc.reads = true
							break
						}
					}
				}
				if dc.reads {
					for _, n := range dc.names {
						if !reading[n] {
							reading[n] = true
							changed = true
						}
					}
				}
			}
		}
		var sel []string
		for _, name := range tests {
			if reading[name] || reading["TestMain"] {
				sel = append(sel, name)
			}
		}
		if len(sel) > 0 {
			slices.Sort(sel)
			out["./"+dir] = sel
		}
	}
	return out
}

// packagesReadingBeyondThemselves returns the packages (./dir) with tests that open files
// outside their own folder, sorted.
func packagesReadingBeyondThemselves(t *testing.T, root string) []string {
	t.Helper()
	var pkgs []string
	for p := range testsReadingBeyondThemselves(t, root) {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	return pkgs
}

// A fresh clone, alone in an empty folder, passes the tests that read files beyond their
// package (test data, the README, deploy files): everything they need is in the repository.
// It clones the committed HEAD (uncommitted changes are not in it).
func TestFreshCloneRunsTestsThatReadTheRepository(t *testing.T) {
	if testing.Short() {
		t.Skip("clones the repository and runs other packages' tests (the first, non-short pass of make test runs it)")
	}
	if os.Getenv("API_GATEWAY_FRESH_CLONE") != "" {
		t.Skip("already in the fresh clone")
	}
	root := RepoRoot()
	if err := exec.Command("git", "-C", root, "rev-parse", "--verify", "HEAD").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI runs from a git checkout: %v", err)
		}
		t.Skipf("%s is no git checkout with a commit", root)
	}
	tests := testsReadingBeyondThemselves(t, root)
	pkgs := packagesReadingBeyondThemselves(t, root)
	var names []string
	for _, p := range pkgs {
		for _, n := range tests[p] {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	for _, want := range []string{"./extauthz", "./e2e/authz", "./cmd/api-gateway"} {
		if !slices.Contains(pkgs, want) {
			t.Fatalf("the packages whose tests read the repository should include %s: %v", want, pkgs)
		}
	}
	// Nothing beside the clone: its parent is a folder this test empties and creates. The
	// folder's name is the same on every run from this checkout, so the Go build cache
	// (whose keys hold a package's directory) serves the clone's packages again when their
	// files did not change: only the first run compiles the module in the clone.
	sum := sha256.Sum256([]byte(root))
	parent := filepath.Join(os.TempDir(), "agw-fresh-clone-"+hex.EncodeToString(sum[:6]))
	if err := os.RemoveAll(parent); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	clone := filepath.Join(parent, "api-gateway")
	if out, err := exec.Command("git", "clone", "--quiet", "--depth", "1", "file://"+root, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	// Only the tests that read the repository: the rest of these packages read nothing the
	// clone could lack, and run in the checkout anyway. The packages still compile whole.
	run := "^(" + strings.Join(names, "|") + ")$"
	cmd := exec.Command("go", append([]string{"test", "-short", "-count=1", "-timeout", "15m", "-run", run}, pkgs...)...)
	cmd.Dir = clone
	cmd.Env = append(os.Environ(), "API_GATEWAY_FRESH_CLONE=1")
	// promtool is a tool, built by make test-deps in the checkout like redis-server is
	// installed; the clone uses it rather than build it again.
	if _, err := os.Stat(filepath.Join(root, "bin", "promtool")); err == nil && os.Getenv("PROMTOOL") == "" {
		cmd.Env = append(cmd.Env, "PROMTOOL="+filepath.Join(root, "bin", "promtool"))
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test -run '%s' %s in a fresh clone: %v\n%s", run, strings.Join(pkgs, " "), err, out)
	}
	t.Logf("fresh clone: go test -run '%s' %s passed in %s", run, strings.Join(pkgs, " "), time.Since(start).Round(time.Second))
}

// The selection is the packages whose tests open the repository's files, not every test
// that has "../" in a string.
func TestPackagesReadingBeyondThemselves(t *testing.T) {
	tests := testsReadingBeyondThemselves(t, RepoRoot())
	// extauthz's GeoIP rules read the repository's test databases (through geoDir); its
	// token tests read nothing outside the package and are left to the checkout's run.
	if !slices.Contains(tests["./extauthz"], "TestGeoRules") || slices.Contains(tests["./extauthz"], "TestAPIKeySecrets") {
		t.Errorf("extauthz selection: %v", tests["./extauthz"])
	}
	if !slices.Contains(tests["./cmd/api-gateway"], "TestREADMEEnvironmentTableMatchesConfig") {
		t.Errorf("cmd/api-gateway selection: %v", tests["./cmd/api-gateway"])
	}
	got := packagesReadingBeyondThemselves(t, RepoRoot())
	for _, want := range []string{"./extauthz", "./e2e/authz", "./cmd/api-gateway", "./deploy"} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %s: %v", want, got)
		}
	}
	for _, not := range []string{"./waf", "./e2e/edge", "./internal/testutil"} {
		if slices.Contains(got, not) {
			t.Errorf("%s opens nothing outside itself (its \"../\" are request data): %v", not, got)
		}
	}
}
