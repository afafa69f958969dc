package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/proto/model"
	"github.com/api-gateway/api-gateway/xds/server"
	"github.com/api-gateway/api-gateway/xds/translate"
)

func init() {
	register("xds", 50, (*app).wireXDS)
	subcommands["envoy-bootstrap"] = func(args []string) int { return runEnvoyBootstrap(args, os.Stdout, os.Stderr) }
}

// wireXDS serves the translated model over xDS on the gRPC port, follows each model
// revision through the pipeline, and plugs route status, the nodes endpoint and the route
// validator into the management API.
func (a *app) wireXDS() error {
	s, err := newXDSServer(a.cfg, a.log.With("component", "xds"), a.reg)
	if err != nil {
		return err
	}
	s.Register(a.grpc)
	a.pipe.Add(s)
	a.api.RouteStatus = s.RouteStatus
	a.api.Mount("GET /api/v1/management/xds/nodes", s.NodesHandler())
	a.api.AddValidator(model.KindRoutes, s.ValidateRoute)
	a.api.SetReady("xds", s.Ready)
	a.closers = append(a.closers, s.Close)
	return nil
}

// newXDSServer is the xDS server of cfg (serve, and validate's whole-revision checks).
func newXDSServer(cfg config, log *slog.Logger, reg prometheus.Registerer) (*server.Server, error) {
	return server.New(server.Options{
		Translate: translate.Options{
			ListenerAddress: cfg.EnvoyListenAddr,
			ControlPlane:    cfg.XDSAdvertiseAddr,
			OTLPEndpoint:    cfg.OTLPEndpoint,
			ServiceName:     cfg.ServiceName,
		},
		Logger:     log,
		Registerer: reg,
	})
}

// runEnvoyBootstrap prints an Envoy bootstrap for this control plane.
func runEnvoyBootstrap(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("envoy-bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o envoy.BootstrapOptions
	var admin uint
	format := fs.String("format", "yaml", "output format: yaml or json")
	fs.StringVar(&o.NodeID, "node-id", "envoy-1", "Envoy node id")
	fs.StringVar(&o.Cluster, "cluster", "edge", "node group: edge or sidecar")
	fs.StringVar(&o.XDSAddress, "xds-address", "127.0.0.1:18000", "HOST:PORT of the control plane's gRPC port")
	fs.UintVar(&admin, "admin-port", 9901, "Envoy admin port")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.AdminPort = uint32(admin)
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
