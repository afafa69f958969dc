package deploy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The Dockerfile builds in a Go image matching go.mod, links statically (CGO_ENABLED=0),
// and runs as a non-root user on distroless or scratch.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	var user string
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
		case "USER":
			user = f[1]
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, got FROM %v", froms)
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final image %s: want distroless static or scratch", final)
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("USER %q: want a non-root user", user)
	}
	if !regexp.MustCompile(`CGO_ENABLED=0\s+GOOS=linux\s+go build`).MatchString(text) {
		t.Error("the go build must run with CGO_ENABLED=0 (static binary)")
	}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	if !strings.HasPrefix(froms[0], "golang:"+string(m[1])) {
		t.Errorf("builder %s does not match go.mod's go %s", froms[0], m[1])
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{".git", "data"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(must) + `$`).Match(ignore) {
			t.Errorf(".dockerignore must exclude %s", must)
		}
	}
}
