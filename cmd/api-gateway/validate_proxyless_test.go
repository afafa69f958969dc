package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// proxylessFile has a route with a method condition and one with a TLS target, which the
// gRPC flavor leaves out, and a plain route it serves.
const proxylessFile = `routes:
  - id: posts
    hosts: [om.test]
    require_auth: false
    conditions:
      - path_pattern: /pkg.Posts/*
        method: POST
    targets:
      - host: 10.0.40.1
        port: 8080
        protocol: grpc
  - id: legacy
    hosts: [om.test]
    require_auth: false
    conditions:
      - path_pattern: /pkg.Legacy/*
    targets:
      - host: 10.0.40.2
        port: 8443
        protocol: grpc
        tls: true
  - id: plain
    hosts: [om.test]
    require_auth: false
    conditions:
      - path_pattern: /pkg.Plain/*
    targets:
      - host: 10.0.40.3
        port: 8080
        protocol: grpc
`

// validate -f names, for a valid file, each route proxyless gRPC clients will not get, at
// the line of the field the reason names, sorted by id, before the valid line; exit 0.
func TestValidateNamesRoutesLeftOutForProxylessClients(t *testing.T) {
	file := writeValidateFile(t, proxylessFile)
	var out, errOut bytes.Buffer
	if code := runValidate([]string{"-proxyless", "-f", file}, &out, &errOut); code != 0 {
		t.Fatalf("validate: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	if errOut.Len() > 0 {
		t.Errorf("stderr: %s", errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{
		fmt.Sprintf("%s:%d: routes/legacy: not served to proxyless gRPC clients: targets[0].tls: a proxyless gRPC client takes upstream TLS only",
			file, lineContaining(t, proxylessFile, "tls: true")),
		fmt.Sprintf("%s:%d: routes/posts: not served to proxyless gRPC clients: conditions[0].method: proxyless gRPC clients do not put :method",
			file, lineContaining(t, proxylessFile, "method: POST")),
		file + ": 3 object(s), valid",
	}
	if len(lines) != len(want) {
		t.Fatalf("want %d lines, got:\n%s", len(want), out.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d:\n got %s\nwant %s...", i+1, lines[i], w)
		}
	}
	if strings.Contains(out.String(), "routes/plain") {
		t.Errorf("the plain route has a notice:\n%s", out.String())
	}
}

// A file of only routes proxyless clients get prints the valid line alone.
func TestValidateServedRoutesHaveNoNotice(t *testing.T) {
	file := writeValidateFile(t, manyGRPCRoutes(3, false))
	var out, errOut bytes.Buffer
	if code := runValidate([]string{"-proxyless", "-f", file}, &out, &errOut); code != 0 {
		t.Fatalf("validate: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	if got, want := out.String(), file+": 3 object(s), valid\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// 2,000 routes left out give 2,000 notices, one line each, sorted by id, and exit 0: every
// route is named (the operator asked), none is lost or printed twice.
func TestValidateNoticesOfManyRoutes(t *testing.T) {
	const n = 2000
	text := manyGRPCRoutes(n, true)
	file := writeValidateFile(t, text)
	var out, errOut bytes.Buffer
	if code := runValidate([]string{"-proxyless", "-f", file}, &out, &errOut); code != 0 {
		t.Fatalf("validate: exit %d\n%s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != n+1 || lines[n] != fmt.Sprintf("%s: %d object(s), valid", file, n) {
		t.Fatalf("want %d notices and the valid line, got %d lines ending %q", n, len(lines), lines[len(lines)-1])
	}
	// Each route takes 10 lines after "routes:", its method condition the 6th.
	methodLine := func(i int) int { return 1 + 10*i + 6 }
	if methodLine(n-1) != lineContaining(t, text, fmt.Sprintf("method: POST # r%04d", n-1)) {
		t.Fatal("the routes are not laid out as methodLine says")
	}
	for i := range n {
		id := fmt.Sprintf("r%04d", i)
		prefix := fmt.Sprintf("%s:%d: routes/%s: not served to proxyless gRPC clients: conditions[0].method: ", file, methodLine(i), id)
		if !strings.HasPrefix(lines[i], prefix) || len(lines[i]) > 512 {
			t.Fatalf("notice %d:\n got %s\nwant %s...", i, lines[i], prefix)
		}
	}
}

// BenchmarkValidateNotices runs validate -f on 2,000 routes, all left out for proxyless
// clients (a notice each) against the same routes all served (the baseline: no notice),
// and the notice step alone (translation, GRPCOmissions, the lines) on the 2,000 left out.
func BenchmarkValidateNotices(b *testing.B) {
	b.Run("notice-step", func(b *testing.B) {
		file := filepath.Join(b.TempDir(), "gw.yaml")
		data := []byte(manyGRPCRoutes(2000, true))
		if err := os.WriteFile(file, data, 0o644); err != nil {
			b.Fatal(err)
		}
		api, pipe, closeAPI, err := offlineAPI()
		if err != nil {
			b.Fatal(err)
		}
		defer closeAPI()
		ctx := context.Background()
		objs, probs := api.CheckFileData(ctx, file, data)
		if len(probs) > 0 {
			b.Fatal(probs)
		}
		for b.Loop() {
			if notices, err := proxylessNotices(ctx, api, pipe, file, objs); err != nil || len(notices) != 2000 {
				b.Fatalf("%d notices, %v", len(notices), err)
			}
		}
	})
	for _, c := range []struct {
		name    string
		omitted bool
	}{{"served", false}, {"omitted", true}} {
		b.Run(c.name, func(b *testing.B) {
			file := filepath.Join(b.TempDir(), "gw.yaml")
			if err := os.WriteFile(file, []byte(manyGRPCRoutes(2000, c.omitted)), 0o644); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				var out, errOut bytes.Buffer
				if code := runValidate([]string{"-proxyless", "-f", file}, &out, &errOut); code != 0 {
					b.Fatalf("exit %d: %s", code, errOut.String())
				}
			}
		})
	}
}

// manyGRPCRoutes is a file of n gRPC routes r0000..., each with a POST condition (left out
// for proxyless clients) when post.
func manyGRPCRoutes(n int, post bool) string {
	var b strings.Builder
	b.WriteString("routes:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - id: r%04d\n    hosts: [many.test]\n    require_auth: false\n    conditions:\n      - path_pattern: /pkg.S%d/*\n", i, i)
		if post {
			fmt.Fprintf(&b, "        method: POST # r%04d\n", i)
		}
		fmt.Fprintf(&b, "    targets:\n      - host: 10.0.%d.%d\n        port: 8080\n        protocol: grpc\n", i/250, 1+i%250)
	}
	return b.String()
}

func writeValidateFile(t *testing.T, text string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// Without -proxyless, validate counts the routes proxyless clients will not get in one line
// (a deployment without proxyless clients is not handed a line per authenticated route).
func TestValidateCountsRoutesLeftOutByDefault(t *testing.T) {
	file := writeValidateFile(t, proxylessFile)
	var out, errOut bytes.Buffer
	if code := runValidate([]string{"-f", file}, &out, &errOut); code != 0 {
		t.Fatalf("validate: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	want := file + ": 2 route(s) not served to proxyless gRPC clients (validate -proxyless -f " + file + " lists them with the reason)\n" +
		file + ": 3 object(s), valid\n"
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
