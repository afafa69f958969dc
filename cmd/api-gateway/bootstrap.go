package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/api-gateway/api-gateway/envoy"
)

// runEnvoyBootstrap prints an Envoy bootstrap for this control plane. When this environment
// serves TLS on the gRPC port (GRPC_TLS_*), a plaintext bootstrap would never connect, so
// the CA flag (and the client certificate flags under mutual TLS) are required.
func runEnvoyBootstrap(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("envoy-bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o envoy.BootstrapOptions
	var t envoy.BootstrapTLS
	var admin uint
	format := fs.String("format", "yaml", "output format: yaml or json")
	fs.StringVar(&o.NodeID, "node-id", "envoy-1", "Envoy node id")
	fs.StringVar(&o.Cluster, "cluster", "edge", "node group: edge or sidecar")
	fs.StringVar(&o.XDSAddress, "xds-address", bootstrapXDSAddress(), "HOST:PORT of the control plane's gRPC port (default: XDS_ADVERTISE_ADDRESS, else from GRPC_BIND_ADDRESS and GRPC_PORT)")
	fs.UintVar(&admin, "admin-port", 9901, "Envoy admin port")
	fs.StringVar(&t.CAFile, "xds-tls-ca", "", "Envoy's path to the CA of the gateway's gRPC certificate (turns TLS on)")
	fs.StringVar(&t.CertFile, "xds-tls-cert", "", "Envoy's path to its client certificate (mutual TLS)")
	fs.StringVar(&t.KeyFile, "xds-tls-key", "", "Envoy's path to its client key (mutual TLS)")
	fs.StringVar(&t.ServerName, "xds-tls-server-name", "", "name the gateway's certificate holds (default: the --xds-address host)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.AdminPort = uint32(admin)
	if t != (envoy.BootstrapTLS{}) {
		o.TLS = &t
	}
	if err := bootstrapMatchesGRPCTLS(o.TLS); err != nil {
		fmt.Fprintln(stderr, "envoy-bootstrap:", err)
		return 2
	}
	bs, err := envoy.Bootstrap(o)
	if err != nil {
		fmt.Fprintln(stderr, "envoy-bootstrap:", err)
		return 2
	}
	var out []byte
	switch *format {
	case "yaml":
		out, err = envoy.ToYAML(bs)
	case "json":
		out, err = envoy.ToJSON(bs)
		out = append(out, '\n')
	default:
		err = fmt.Errorf("format %q must be yaml or json", *format)
	}
	if err != nil {
		fmt.Fprintln(stderr, "envoy-bootstrap:", err)
		return 2
	}
	_, _ = stdout.Write(out)
	return 0
}

// bootstrapMatchesGRPCTLS refuses a bootstrap that could not connect to a gateway configured
// by this environment: plaintext to a TLS port, or no client certificate for mutual TLS.
// The environment is read directly, not through loadConfig, so an unrelated bad variable
// does not stop a bootstrap from being printed.
func bootstrapMatchesGRPCTLS(t *envoy.BootstrapTLS) error {
	serverTLS := os.Getenv("GRPC_TLS_CERT_FILE") != ""
	require := os.Getenv("GRPC_TLS_CLIENT_CA_FILE") != ""
	if v := os.Getenv("GRPC_TLS_REQUIRE_CLIENT_CERT"); v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			require = require && b
		}
	}
	switch {
	case serverTLS && t == nil:
		return fmt.Errorf("the gRPC port serves TLS here (GRPC_TLS_CERT_FILE); pass --xds-tls-ca (Envoy's path to the CA)")
	case require && (t == nil || t.CertFile == ""):
		return fmt.Errorf("the gRPC port requires client certificates here (GRPC_TLS_CLIENT_CA_FILE); pass --xds-tls-cert and --xds-tls-key")
	}
	return nil
}

// bootstrapXDSAddress is the default --xds-address: where this environment's gateway says
// Envoy reaches its gRPC port (XDS_ADVERTISE_ADDRESS, or the default the gateway computes
// from GRPC_BIND_ADDRESS, BIND_ADDRESS and GRPC_PORT). Read directly, not through loadConfig,
// so an unrelated bad variable does not stop a bootstrap; a bad GRPC_PORT or bind address
// falls back to 127.0.0.1:18000.
func bootstrapXDSAddress() string {
	port := 18000
	if p, err := strconv.Atoi(os.Getenv("GRPC_PORT")); err == nil && p > 0 && p <= 65535 {
		port = p
	}
	bind := envStr("GRPC_BIND_ADDRESS", os.Getenv("BIND_ADDRESS"))
	if len(bind) > 2 && bind[0] == '[' && bind[len(bind)-1] == ']' {
		bind = bind[1 : len(bind)-1]
	}
	if net.ParseIP(bind) == nil && strings.ContainsAny(bind, ":[]/ \t") {
		bind = ""
	}
	return envStr("XDS_ADVERTISE_ADDRESS", defaultAdvertiseAddr(bind, port))
}
