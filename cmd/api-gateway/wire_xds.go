package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/translate"
	"github.com/api-gateway/api-gateway/xds/server"
)

// wireXDS serves the translated model over xDS on the gRPC port, follows each model
// revision through the pipeline, and plugs route status, the nodes endpoint and the route
// validator into the management API.
func (a *app) wireXDS() error {
	s, err := newXDSServer(a.cfg, a.log.With("component", "xds"), a.reg)
	if err != nil {
		return err
	}
	s.Register(a.grpc)
	// The pipeline translates each revision once, with the addresses xDS serves, for every
	// consumer (xds, ext_authz, ratelimit).
	a.pipe.SetTranslate(translateOptions(a.cfg))
	a.pipe.Add(s)
	a.api.RouteStatus = s.RouteStatus
	a.api.Mount("GET /api/v1/management/xds/nodes", s.NodesHandler())
	// The consumers' object checks (xds: routes; ext_authz: CEL policies, WAF rule sets):
	// one validator the API runs on every write, asking every consumer the pipeline holds
	// when it runs (validate -f registers the same, offlineAPI).
	addConsumerChecks(a.api, a.pipe)
	a.api.SetReady("xds", s.Ready)
	a.closers = append(a.closers, s.Close)
	// Cancelling the xDS server's context at shutdown ends every ADS stream, which
	// grpc.Server.GracefulStop would otherwise wait for (see stopGRPC).
	a.drains = append(a.drains, func() { _ = s.Close() })
	return nil
}

// newXDSServer is the xDS server of cfg (serve, and validate's whole-revision checks).
func newXDSServer(cfg config, log *slog.Logger, reg prometheus.Registerer) (*server.Server, error) {
	return server.New(server.Options{Translate: translateOptions(cfg), Logger: log, Registerer: reg})
}

// translateOptions are the translation options of cfg: the addresses Envoy is given.
func translateOptions(cfg config) translate.Options {
	return translate.Options{
		ListenerAddress: cfg.EnvoyListenAddr,
		ControlPlane:    cfg.XDSAdvertiseAddr,
		OTLPEndpoint:    cfg.OTLPEndpoint,
		ServiceName:     cfg.ServiceName,
		UpstreamCAFile:  cfg.EnvoyUpstreamCAFile,
	}
}
