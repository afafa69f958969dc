package testutil

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// checkedFile reports whether a repository file is code, a build file or a script: the
// files whose paths a test, a build or CI follows. Documentation may name anything.
func checkedFile(name string) bool {
	base := path.Base(name)
	switch {
	case strings.HasSuffix(base, ".go"), base == "go.mod", base == "Makefile", strings.HasSuffix(base, ".mk"),
		strings.HasSuffix(base, ".sh"), strings.HasSuffix(base, ".bash"), strings.HasPrefix(name, ".ci/"),
		base == "Dockerfile", strings.HasSuffix(base, ".yaml"), strings.HasSuffix(base, ".yml"):
		return true
	}
	return false
}

// containerFile describes a container's own file system (paths in it are the image's, not
// this machine's): only its references into the build context are checked.
func containerFile(name string) bool {
	base := path.Base(name)
	return base == "Dockerfile" || strings.HasPrefix(name, "deploy/") && (strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml"))
}

// machinePath is a path on one machine rather than in the checkout: a work folder, home
// folders.
var machinePath = regexp.MustCompile(`(^|[^A-Za-z0-9_.~-])(/work/|/home/[A-Za-z0-9_.-]+|/Users/[A-Za-z0-9_.-]+|/root/|~/|\$HOME\b|\$\{HOME\})`)

// upPath is a relative path that starts by climbing ("../x", "../../y/z").
var upPath = regexp.MustCompile(`(?:^|[^A-Za-z0-9_.-])((?:\.\./)+\.?\.?[A-Za-z0-9_.*/-]*)`)

// joinClimbs counts the ".." elements a line of Go joins into a path (filepath.Join("..",
// "..", "x")): the climbs upPath cannot see, written one element at a time.
func joinClimbs(name, line string) int {
	if !strings.HasSuffix(name, ".go") || !strings.Contains(line, "Join(") {
		return 0
	}
	return strings.Count(line, `"..",`) + strings.Count(line, `"..")`)
}

// depth is the number of folders in a slash path from the repository root ("." is 0).
func depth(dir string) int {
	if dir == "." || dir == "" {
		return 0
	}
	return strings.Count(dir, "/") + 1
}

// attackStrings are relative climbs that are data under test (path-traversal payloads the
// WAF must catch), not paths anything opens: file and the exact text.
var attackStrings = map[string][]string{
	"waf/waf_test.go":         {"../../../../etc/passwd"},
	"waf/screen_fuzz_test.go": {"../../../../etc/passwd"},
}

// repoFiles lists the checkout's tracked files (git ls-files), or every file under root
// but .git when root is no git checkout (an exported tarball).
func repoFiles(t *testing.T, root string) []string {
	t.Helper()
	if out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output(); err == nil {
		var files []string
		for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
		return files
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// outsideReferences returns file:line: problem for every reference of a file's text to a
// path outside the checkout. name is the file's slash path from the repository root.
// top is the checkout's top-level entries (files and folders): a relative path that climbs
// to the root and names anything else means a folder beside the checkout's files that a
// fresh clone does not have. nil: not checked (examples in tests).
func outsideReferences(name string, data []byte, top map[string]bool) []string {
	if !checkedFile(name) || bytes.IndexByte(data, 0) >= 0 {
		return nil
	}
	var found []string
	for i, line := range strings.Split(string(data), "\n") {
		where := fmt.Sprintf("%s:%d", name, i+1)
		if !containerFile(name) {
			if m := machinePath.FindString(line); m != "" {
				m = strings.TrimLeftFunc(m, func(r rune) bool { return !strings.ContainsRune("/.~$", r) }) // the character before
				found = append(found, fmt.Sprintf("%s: %q is a path on one machine, outside the checkout", where, m))
			}
		}
		if n := joinClimbs(name, line); n > depth(path.Dir(name)) {
			found = append(found, fmt.Sprintf("%s: a path joined from %d \"..\" climbs out of the checkout", where, n))
		}
		for _, m := range upPath.FindAllStringSubmatch(line, -1) {
			rel := m[1]
			// Relative paths in a file are read from its folder: a Go test runs in its
			// package's folder, scripts and compose files name paths from their own.
			p := path.Join(path.Dir(name), rel)
			if p != ".." && !strings.HasPrefix(p, "../") {
				// Inside: unless it starts a path (not the dot segment of a URL or a longer path,
				// "/x/../../site"), climbs to the root and names what the root does not hold.
				first, _, _ := strings.Cut(p, "/")
				startsPath := !strings.HasPrefix(m[0], "/")
				if top != nil && startsPath && strings.Count(rel, "../") >= depth(path.Dir(name)) && first != "." && !top[first] && !strings.ContainsAny(first, "*") {
					found = append(found, fmt.Sprintf("%s: %q names %s, which the checkout does not hold", where, rel, first))
				}
				continue
			}
			attack := false
			for _, s := range attackStrings[name] {
				attack = attack || strings.HasPrefix(rel, s)
			}
			if !attack {
				found = append(found, fmt.Sprintf("%s: %q climbs out of the checkout (to %s)", where, rel, p))
			}
		}
	}
	return found
}

// topLevel is what the checkout's root holds: the first element of every tracked file, and
// what the build makes there (the root-anchored entries of .gitignore: bin/, data/).
func topLevel(t *testing.T, root string, files []string) map[string]bool {
	t.Helper()
	top := map[string]bool{}
	for _, f := range files {
		first, _, _ := strings.Cut(f, "/")
		top[first] = true
	}
	data, err := os.ReadFile(filepath.Join(root, ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "/"); ok {
			top[strings.TrimSuffix(name, "/")] = true
		}
	}
	return top
}

// Nothing in the checkout's code, build files or scripts reaches outside it: a fresh clone
// with nothing beside it builds and tests the same.
func TestRepositoryIsSelfContained(t *testing.T) {
	root := RepoRoot()
	files := repoFiles(t, root)
	if len(files) < 50 {
		t.Fatalf("found only %d files under %s", len(files), root)
	}
	top := topLevel(t, root, files)
	checked := 0
	for _, f := range files {
		// This file's patterns and examples are the strings the scan looks for; the
		// examples are checked by TestOutsideReferences instead.
		if !checkedFile(f) || f == "internal/testutil/selfcontained_test.go" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted in the work tree, not yet committed
			}
			t.Fatal(err)
		}
		checked++
		for _, p := range outsideReferences(f, data, top) {
			t.Error(p)
		}
	}
	if checked < 50 {
		t.Fatalf("checked only %d files", checked)
	}
}

// The scan finds each kind of outside reference and names its line; paths that stay inside
// the checkout, and the WAF's attack payloads, pass.
func TestOutsideReferences(t *testing.T) {
	top := map[string]bool{"extauthz": true, "e2e": true, "deploy": true, "bin": true, "README.md": true, "testdata": true, "waf": true}
	for _, tc := range []struct {
		name, text string
		want       int
	}{
		// A folder beside the checkout's files, which a fresh clone does not have.
		{"extauthz/geo_test.go", `dir := filepath.Join("../fixtures/testdata", "geoip")`, 1},
		{"e2e/authz/authz_test.go", `os.ReadFile("../../../fixtures/DESIGN.md")`, 1},
		{"e2e/authz/authz_test.go", `os.ReadFile("../../fixtures/DESIGN.md")`, 1},
		{"extauthz/x_test.go", `os.ReadFile("/work/fixtures/testdata/geoip/GeoIP2-Country-Test.mmdb")`, 1},
		{"Makefile", "bench:\n\tcp /home/dev/profiles/*.pprof .", 1},
		{"scripts/run.sh", `source "$HOME/.gatewayrc"`, 1},
		{".ci/run", "cd ../..\nmake test", 1},
		{"deploy/compose/docker-compose.yaml", "    context: ../../..", 1},
		{"go.mod", "replace example.com/x => ../x", 1},
		{"extauthz/geo_test.go", `dir := filepath.Join("..", "..", "fixtures", "testdata")`, 1},
		{"e2e/authz/authz_test.go", `p := filepath.Join(wd, "..", "..", "..")`, 1},
		// Inside the checkout.
		{"deploy/prometheus/promtool_test.go", `filepath.Abs("../../bin/promtool")`, 0},
		{"internal/testutil/gateway.go", `return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))`, 0},
		{"cmd/api-gateway/config_readme_test.go", `os.ReadFile("../../README.md")`, 0},
		{"deploy/compose/docker-compose.yaml", "    context: ../..\n      - /root/data:/data", 0},
		{"Dockerfile", "RUN --mount=type=cache,target=/root/.cache/go-build go build", 0},
		{"waf/waf_test.go", `url.QueryEscape("../../../../etc/passwd")`, 0},
		{"README.md", "see ../fixtures/DESIGN.md", 0},
		{"extauthz/geo_test.go", `filepath.Join("../testdata", "geoip")`, 0},
		{"e2e/edge/edge_test.go", `{"/../../site/admin", 403}`, 0},
		{"store/store.go", `// DATA_DIR defaults to ./data; "a/b/../c" is cleaned`, 0},
	} {
		got := outsideReferences(tc.name, []byte(tc.text), top)
		if len(got) != tc.want {
			t.Errorf("%s %q: %d finding(s) %q, want %d", tc.name, tc.text, len(got), got, tc.want)
		}
		for _, g := range got {
			if strings.Contains(g, `"(`) || strings.Contains(g, `"\"`) {
				t.Errorf("finding quotes more than the path: %s", g)
			}
			if !strings.HasPrefix(g, tc.name+":") {
				t.Errorf("finding does not name file:line: %s", g)
			}
		}
	}
}
