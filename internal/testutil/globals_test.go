package testutil

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const modulePath = "github.com/api-gateway/api-gateway"

// globalAssignments returns file:line for every assignment to an exported package-level
// variable of the module after its declaration: from another package (pkg.Var = ..., also
// pkg.Var[k] = ...) or from a function of its own. Such variables are configuration swapped
// at start; a component takes what it needs as an option instead.
func globalAssignments(files map[string][]byte) ([]string, error) {
	fset := token.NewFileSet()
	parsed := map[string]*ast.File{}
	exported := map[string]map[string]bool{} // import path -> exported package-level vars
	for name, src := range files {
		f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		parsed[name] = f
		pkg := modulePath + "/" + path.Dir(name)
		if path.Dir(name) == "." {
			pkg = modulePath
		}
		if strings.HasSuffix(f.Name.Name, "_test") {
			pkg += "_test"
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, s := range gd.Specs {
				for _, n := range s.(*ast.ValueSpec).Names {
					if n.IsExported() {
						if exported[pkg] == nil {
							exported[pkg] = map[string]bool{}
						}
						exported[pkg][n.Name] = true
					}
				}
			}
		}
	}
	var found []string
	for name, f := range parsed {
		own := modulePath + "/" + path.Dir(name)
		if path.Dir(name) == "." {
			own = modulePath
		}
		imports := map[string]string{} // local name -> import path
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			local := path.Base(p)
			if im.Name != nil {
				local = im.Name.Name
			}
			imports[local] = p
		}
		// Locals that shadow a package-level name (parameters, := and var in functions).
		check := func(lhs ast.Expr, locals map[string]bool) {
			for {
				switch e := lhs.(type) {
				case *ast.IndexExpr:
					lhs = e.X
					continue
				case *ast.ParenExpr:
					lhs = e.X
					continue
				case *ast.StarExpr:
					lhs = e.X
					continue
				case *ast.SelectorExpr:
					if x, ok := e.X.(*ast.Ident); ok && !locals[x.Name] {
						if p, ok := imports[x.Name]; ok && exported[p][e.Sel.Name] {
							found = append(found, fmt.Sprintf("%s: %s.%s", fset.Position(e.Pos()), x.Name, e.Sel.Name))
							return
						}
					}
					lhs = e.X // a field of a global is the global changed
					continue
				case *ast.Ident:
					if !locals[e.Name] && exported[own][e.Name] {
						found = append(found, fmt.Sprintf("%s: %s", fset.Position(e.Pos()), e.Name))
					}
				}
				return
			}
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			locals := map[string]bool{}
			addFields := func(fl *ast.FieldList) {
				if fl == nil {
					return
				}
				for _, fld := range fl.List {
					for _, n := range fld.Names {
						locals[n.Name] = true
					}
				}
			}
			addFields(fd.Recv)
			addFields(fd.Type.Params)
			addFields(fd.Type.Results)
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				switch s := n.(type) {
				case *ast.FuncLit:
					addFields(s.Type.Params)
					addFields(s.Type.Results)
				case *ast.ValueSpec:
					for _, n := range s.Names {
						locals[n.Name] = true
					}
				case *ast.RangeStmt:
					if s.Tok == token.DEFINE {
						for _, e := range []ast.Expr{s.Key, s.Value} {
							if id, ok := e.(*ast.Ident); ok {
								locals[id.Name] = true
							}
						}
					}
				case *ast.AssignStmt:
					if s.Tok == token.DEFINE {
						for _, e := range s.Lhs {
							if id, ok := e.(*ast.Ident); ok {
								locals[id.Name] = true
							}
						}
						return true
					}
					for _, e := range s.Lhs {
						check(e, locals)
					}
				case *ast.IncDecStmt:
					check(s.X, locals)
				}
				return true
			})
		}
	}
	return found, nil
}

// No exported package-level variable of the module is assigned after its declaration,
// anywhere, tests included: wiring passes values as options, not by swapping globals.
func TestNoExportedGlobalIsAssigned(t *testing.T) {
	root := RepoRoot()
	files := map[string][]byte{}
	for _, f := range repoFiles(t, root) {
		// e2e/ratelimitref is its own module.
		if !strings.HasSuffix(f, ".go") || strings.HasPrefix(f, "e2e/ratelimitref/") {
			continue
		}
		data, err := readFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		if data != nil {
			files[f] = data
		}
	}
	found, err := globalAssignments(files)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("exported package-level variable assigned: %s", f)
	}
}

// The check finds a global swapped from another package and from its own, and passes
// locals of the same name and fields of values that are not globals.
func TestGlobalAssignments(t *testing.T) {
	files := map[string][]byte{
		"manage/api.go": []byte(`package manage
import "context"
var RequestIDContext = func(ctx context.Context, id string) context.Context { return ctx }
var Limits = map[string]int{}
var Table []int
func reset() { Limits["x"] = 1 }
func shadow(Table []int) { Table = nil; RequestIDContext := 1; RequestIDContext++ }
`),
		"cmd/api-gateway/serve.go": []byte(`package main
import (
	"github.com/api-gateway/api-gateway/internal/telemetry"
	m "github.com/api-gateway/api-gateway/manage"
)
type opts struct{ Limits int }
func serve() {
	m.RequestIDContext = telemetry.WithRequestID
	var o opts
	o.Limits = 2
	for _, Table := range [][]int{} { Table = nil; _ = Table }
}
`),
		"manage/api_test.go": []byte(`package manage_test
import "github.com/api-gateway/api-gateway/manage"
func f() { manage.Table[0]++ }
`),
	}
	found, err := globalAssignments(files)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cmd/api-gateway/serve.go:8:2: m.RequestIDContext", "manage/api.go:6:16: Limits", "manage/api_test.go:3:12: manage.Table"}
	if fmt.Sprint(sorted(found)) != fmt.Sprint(want) {
		t.Fatalf("found %q, want %q", found, want)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}

// readFile reads a tracked file; nil when it was deleted in the work tree.
func readFile(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return nil, nil
	}
	return b, err
}
