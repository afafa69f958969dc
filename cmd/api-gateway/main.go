// Command api-gateway is the control plane for Envoy: xDS, ext_authz, rate limiting, access-log
// analytics and the REST management API, in one binary.
//
//	api-gateway [serve] [--config gateway.yaml]   run (default)
//	api-gateway validate -f gateway.yaml          check a declarative config file
//	api-gateway envoy-bootstrap ...               print an Envoy bootstrap for this control plane
//	api-gateway version                           print the version
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	args := os.Args[1:]
	name := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	run, ok := commands(os.Stdout, os.Stderr)[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n", name)
		usage(os.Stderr)
		os.Exit(2)
	}
	os.Exit(run(args))
}

// commands is every subcommand of the binary, each with its own flags; usage lists them.
func commands(stdout, stderr io.Writer) map[string]func(args []string) int {
	help := func([]string) int { usage(stderr); return 0 }
	return map[string]func(args []string) int{
		"serve":           runServe,
		"validate":        func(args []string) int { return runValidate(args, stdout, stderr) },
		"envoy-bootstrap": func(args []string) int { return runEnvoyBootstrap(args, stdout, stderr) },
		"healthcheck":     runHealthcheck,
		"version":         func([]string) int { fmt.Fprintln(stdout, "api-gateway", version); return 0 },
		"help":            help,
		"-h":              help,
		"--help":          help,
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  api-gateway [serve] [--config FILE]    run the control plane (default)
  api-gateway validate [-proxyless] -f FILE  check a declarative config file; exit 1 on problems
                                         (-proxyless: list the routes proxyless gRPC clients will not get)
  api-gateway envoy-bootstrap [flags]    print an Envoy bootstrap for this control plane
  api-gateway healthcheck [--path /ready] exit 0 when this host's gateway answers 200 (for containers)
  api-gateway version                    print the version

Environment: PORT (8080) METRICS_PORT (9090) GRPC_PORT (18000) DATA_DIR (./data) REDIS_URL
LOG_LEVEL (info) ADMIN_TOKEN CORS_ORIGINS GEOIP_DB JWT_ISSUER JWT_AUDIENCE JWKS_ENDPOINT
OAUTH2_INTROSPECTION_ENDPOINT OTEL_EXPORTER_OTLP_ENDPOINT BIND_ADDRESS GRPC_BIND_ADDRESS
GRPC_TLS_CERT_FILE GRPC_TLS_KEY_FILE GRPC_TLS_CLIENT_CA_FILE GRPC_TLS_REQUIRE_CLIENT_CERT;
see README.md.
`)
}
