package testutil

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// packagesReadingBeyondThemselves returns the packages (./dir) whose tests open files outside
// their own folder: through RepoRoot or GeoIPDir, or a relative path climbing out of it.
// This package is left out (its tests are these checks).
func packagesReadingBeyondThemselves(t *testing.T, root string) []string {
	t.Helper()
	var pkgs []string
	for _, f := range repoFiles(t, root) {
		dir := path.Dir(f)
		if !strings.HasSuffix(f, "_test.go") || dir == "internal/testutil" || slices.Contains(pkgs, "./"+dir) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		reads := strings.Contains(text, "testutil.RepoRoot()") || strings.Contains(text, "testutil.GeoIPDir()")
		for _, m := range upPath.FindAllStringSubmatch(text, -1) {
			// Only a path to something the repository holds: "/../../site/admin" in a
			// request URL or "../" alone in a fuzz alphabet opens nothing.
			p := path.Join(dir, m[1])
			if p == "." || p == ".." || strings.HasPrefix(p, "../") || p == dir || strings.HasPrefix(p, dir+"/") {
				continue
			}
			if hits, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(p))); len(hits) > 0 {
				reads = true
			}
		}
		if reads {
			pkgs = append(pkgs, "./"+dir)
		}
	}
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
	pkgs := packagesReadingBeyondThemselves(t, root)
	for _, want := range []string{"./extauthz", "./e2e/authz", "./cmd/api-gateway"} {
		if !slices.Contains(pkgs, want) {
			t.Fatalf("the packages whose tests read the repository should include %s: %v", want, pkgs)
		}
	}
	// Nothing beside the clone: its parent is this test's own empty folder.
	clone := filepath.Join(t.TempDir(), "api-gateway")
	if out, err := exec.Command("git", "clone", "--quiet", "--depth", "1", "file://"+root, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	cmd := exec.Command("go", append([]string{"test", "-short", "-count=1", "-timeout", "15m"}, pkgs...)...)
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
		t.Fatalf("go test %s in a fresh clone: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	t.Logf("fresh clone: go test %s passed in %s", strings.Join(pkgs, " "), time.Since(start).Round(time.Second))
}

// The selection is the packages whose tests open the repository's files, not every test
// that has "../" in a string.
func TestPackagesReadingBeyondThemselves(t *testing.T) {
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
