package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// runtimeEnv are variables the README lists that the Go runtime reads, not the gateway.
var runtimeEnv = map[string]bool{"GOMEMLIMIT": true}

// retiredNames are read only to refuse a value that asks for what the binary no longer does
// (retiredEnv); the README's table must not list them.
var retiredNames = map[string]bool{"SERVICE_DISCOVERY_TYPE": true}

// readmeEnv returns the variables named in the first column of the README's Environment table.
func readmeEnv(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n### Environment\n")
	if !ok {
		t.Fatal("README.md has no ### Environment section")
	}
	sec, _, _ = strings.Cut(sec, "\n### ")
	name := regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")
	var vars []string
	for _, line := range strings.Split(sec, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			vars = append(vars, m[1])
		}
	}
	if len(vars) < 20 {
		t.Fatalf("read %d variables from the README's Environment table: %v", len(vars), vars)
	}
	return vars
}

// configReads returns every variable name config.go passes to os.Getenv, os.LookupEnv or
// its env helpers.
func configReads(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "config.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	readers := map[string]bool{"os.Getenv": true, "os.LookupEnv": true, "envStr": true, "envInt": true, "envBool": true}
	var vars []string
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		var fn string
		switch f := call.Fun.(type) {
		case *ast.Ident:
			fn = f.Name
		case *ast.SelectorExpr:
			if x, ok := f.X.(*ast.Ident); ok {
				fn = x.Name + "." + f.Sel.Name
			}
		}
		if !readers[fn] {
			return true
		}
		lit, ok := call.Args[0].(*ast.BasicLit)
		if !ok {
			return true // the helpers' own bodies read their parameter
		}
		if s, err := strconv.Unquote(lit.Value); err == nil {
			vars = append(vars, s)
		}
		return true
	})
	return vars
}

// unsetEnv clears every variable the gateway reads, for the test's duration.
func unsetEnv(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		t.Setenv(n, "")
		os.Unsetenv(n)
	}
}

// The README's table and config.go name the same variables, in both directions.
func TestREADMEEnvironmentTableMatchesConfig(t *testing.T) {
	documented, read := readmeEnv(t), configReads(t)
	for _, v := range documented {
		if retiredNames[v] {
			t.Errorf("README lists %s, which the gateway no longer reads", v)
		}
		if !runtimeEnv[v] && !slices.Contains(read, v) {
			t.Errorf("README lists %s; config.go never reads it", v)
		}
	}
	for _, v := range read {
		if !retiredNames[v] && !slices.Contains(documented, v) {
			t.Errorf("config.go reads %s; the README's Environment table does not list it", v)
		}
	}
}

// Every documented variable has an effect: set to a value of its kind, it changes the
// configuration; set to one no setting accepts, the start is refused naming it.
func TestEveryDocumentedVariableHasAnEffect(t *testing.T) {
	documented := readmeEnv(t)
	unsetEnv(t, append(documented, configReads(t)...)...)
	base, err := loadConfig()
	if err != nil {
		t.Fatalf("empty environment: %v", err)
	}
	// A value each variable takes and that differs from its default; the ones that refine
	// another setting are set together with it.
	good := map[string][]string{
		"PORT": {"8081"}, "METRICS_PORT": {"9091"}, "GRPC_PORT": {"18001"},
		"BIND_ADDRESS": {"10.0.0.1"}, "GRPC_BIND_ADDRESS": {"10.0.0.2"},
		"GRPC_TLS_CERT_FILE":           {"testdata/none.crt", "GRPC_TLS_KEY_FILE", "testdata/none.key"},
		"GRPC_TLS_KEY_FILE":            {"testdata/none.key", "GRPC_TLS_CERT_FILE", "testdata/none.crt"},
		"GRPC_TLS_CLIENT_CA_FILE":      {"testdata/none-ca.crt"},
		"GRPC_TLS_REQUIRE_CLIENT_CERT": {"true"},
		"DATA_DIR":                     {"/var/lib/gw"}, "REDIS_URL": {"redis://127.0.0.1:6379/0"},
		"RATE_LIMIT_RESERVE": {"250ms"}, "ADMIN_TOKEN": {"tok"}, "LOG_LEVEL": {"debug"},
		"CORS_ORIGINS": {"https://console.example"}, "ENVOY_LISTENER_ADDRESS": {"0.0.0.0:10001"},
		"ENVOY_UPSTREAM_CA_FILE": {"/etc/pki/tls/certs/ca-bundle.crt"},
		"XDS_ADVERTISE_ADDRESS":  {"gw.internal:18000"}, "GEOIP_DB": {"geo.mmdb"},
		"JWT_ISSUER": {"https://idp.example"}, "JWT_AUDIENCE": {"api", "JWT_ISSUER", "https://idp.example"},
		"JWKS_ENDPOINT":                 {"https://idp.example/jwks", "JWT_ISSUER", "https://idp.example"},
		"OAUTH2_INTROSPECTION_ENDPOINT": {"https://idp.example/introspect"},
		"OAUTH2_CLIENT_ID":              {"gw", "OAUTH2_INTROSPECTION_ENDPOINT", "https://idp.example/introspect"},
		"OAUTH2_CLIENT_SECRET":          {"s", "OAUTH2_INTROSPECTION_ENDPOINT", "https://idp.example/introspect"},
		"ENABLE_SERVICE_DISCOVERY":      {"false"}, "HEALTH_PROBE": {"true"}, "SERVICE_DEREGISTER_AFTER": {"1h"},
		"OTEL_EXPORTER_OTLP_ENDPOINT": {"http://otel:4317"}, "OTEL_SERVICE_NAME": {"gw"},
	}
	for _, v := range documented {
		if runtimeEnv[v] {
			continue
		}
		t.Run(v, func(t *testing.T) {
			g, ok := good[v]
			if !ok {
				t.Fatalf("no test value for %s", v)
			}
			t.Setenv(v, g[0])
			if len(g) == 3 {
				t.Setenv(g[1], g[2])
			}
			c, err := loadConfig()
			if err != nil && !strings.HasPrefix(v, "GRPC_TLS_") {
				t.Fatalf("%s=%s: %v", v, g[0], err)
			}
			// The TLS files do not exist: the refusal names them, which is their effect here.
			if err == nil && reflect.DeepEqual(c, base) {
				t.Errorf("%s=%s changed nothing", v, g[0])
			}
			if err != nil && !strings.Contains(err.Error(), "GRPC_TLS_") {
				t.Errorf("%s: %v", v, err)
			}
			unsetEnv(t, v)
			if len(g) == 3 {
				unsetEnv(t, g[1])
			}
			t.Setenv(v, "not a value")
			if _, err := loadConfig(); err != nil {
				if !strings.Contains(err.Error(), v) && !strings.HasPrefix(v, "GRPC_TLS_") {
					t.Errorf("refused without naming %s: %v", v, err)
				}
			}
		})
	}
}
