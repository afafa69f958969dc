package main

import (
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/extauthz"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/waf"
)

// wireAuthz starts ext_authz: the engine (a pipeline consumer), the Check service on the
// gRPC server, the WAF registry it calls last (with the repeat-offender tracker writing
// ip-rules through the store), the CEL policy validator and the JWKS refresh loop.
func (a *app) wireAuthz() error {
	opts := extauthz.Options{Logger: a.log.With("component", "extauthz"), Registerer: a.reg}

	if a.cfg.GeoIPDB != "" {
		geo, err := extauthz.OpenGeoDB(a.cfg.GeoIPDB)
		if err != nil {
			return fmt.Errorf("GEOIP_DB: %w", err)
		}
		opts.Geo = geo
		a.closers = append(a.closers, geo.Close)
	}
	if a.cfg.RedisURL != "" {
		ro, err := store.ParseRedisURL(a.cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("REDIS_URL: %w", err)
		}
		rc := redis.NewUniversalClient(ro)
		a.closers = append(a.closers, rc.Close)
		opts.Quota = extauthz.NewRedisQuota(rc)
	}
	if a.cfg.JWTIssuer != "" {
		is := &model.JWTIssuer{Name: "env", Issuer: a.cfg.JWTIssuer, JWKSURI: a.cfg.JWKSEndpoint}
		for _, aud := range strings.Split(a.cfg.JWTAudience, ",") {
			if aud = strings.TrimSpace(aud); aud != "" {
				is.Audiences = append(is.Audiences, aud)
			}
		}
		opts.DefaultIssuer = is
	}
	if a.cfg.OAuth2IntrospectionEndpoint != "" {
		opts.Introspection = &model.Introspection{URL: a.cfg.OAuth2IntrospectionEndpoint,
			ClientID: a.cfg.OAuth2ClientID, ClientSecret: a.cfg.OAuth2ClientSecret}
	}

	wm, err := waf.NewMetrics(a.reg)
	if err != nil {
		return err
	}
	tracker := waf.NewTracker(&extauthz.StoreIPDenier{Store: a.store}, nil, a.log.With("component", "waf"))
	wafs := waf.NewRegistry(waf.RegistryOptions{Logger: a.log.With("component", "waf"), Metrics: wm, Tracker: tracker})
	opts.WAF = wafs

	eng, err := extauthz.New(opts)
	if err != nil {
		return err
	}
	a.keys = extauthz.KeyMinter{}
	a.pipe.Add(eng) // compiles the pipeline's IR; its CheckRevision refuses a global WAF that does not compile
	extauthz.NewServer(eng).Register(a.grpc)
	a.api.SetReady("extauthz", eng.Ready)
	a.runs = append(a.runs, eng.Run)
	return nil
}
