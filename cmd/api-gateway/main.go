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
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var code int
	switch cmd {
	case "serve":
		code = runServe(args)
	case "validate":
		code = runValidate(args, os.Stdout, os.Stderr)
	case "healthcheck":
		code = runHealthcheck(args)
	case "version":
		fmt.Println("api-gateway", version)
	case "help", "-h", "--help":
		usage()
	default:
		if sub, ok := subcommands[cmd]; ok {
			code = sub(args)
			break
		}
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n", cmd)
		usage()
		code = 2
	}
	os.Exit(code)
}

// subcommands registered by component wire files (e.g. envoy-bootstrap).
var subcommands = map[string]func(args []string) int{}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  api-gateway [serve] [--config FILE]    run the control plane (default)
  api-gateway validate -f FILE           check a declarative config file; exit 1 on problems
  api-gateway envoy-bootstrap [flags]    print an Envoy bootstrap for this control plane
  api-gateway healthcheck [--path /ready] exit 0 when this host's gateway answers 200 (for containers)
  api-gateway version                    print the version

Environment: PORT (8080) METRICS_PORT (9090) GRPC_PORT (18000) DATA_DIR (./data) REDIS_URL
LOG_LEVEL (info) ADMIN_TOKEN CORS_ORIGINS GEOIP_DB JWT_ISSUER JWT_AUDIENCE JWKS_ENDPOINT
OAUTH2_* OTEL_EXPORTER_OTLP_ENDPOINT BIND_ADDRESS GRPC_BIND_ADDRESS GRPC_TLS_CERT_FILE
GRPC_TLS_KEY_FILE GRPC_TLS_CLIENT_CA_FILE GRPC_TLS_REQUIRE_CLIENT_CERT; see README.md.
`)
}
