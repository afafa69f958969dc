package main

import (
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/extauthz"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/waf"
)

func init() { register("authz", 40, (*app).wireAuthz) }

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
	addAuthzChecks(a.api, wafs)

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

// addAuthzChecks registers ext_authz's write-time checks with api (serve and validate): a
// WAF ruleset that does not compile is refused, and so is a policy rule that does not.
func addAuthzChecks(api *manage.API, wafs *waf.Registry) {
	// A WAF ruleset that does not compile is refused at write time. The registry compiles
	// (and caches, for the next snapshot) each distinct ruleset once; only on failure is
	// the ruleset compiled again by waf.ValidateSettings to name the bad field and line.
	wafCheck := func(s *model.WAFSettings) model.FieldErrors {
		if !s.IsEnabled() || len(s.Validate()) > 0 {
			return nil // the model reports shape errors itself
		}
		if _, err := wafs.Get(s); err == nil {
			return nil
		}
		var errs model.FieldErrors
		errs.Nest("waf", waf.ValidateSettings(s))
		return errs
	}
	api.AddValidator(model.KindRoutes, func(o model.Object, _ *model.Snapshot) model.FieldErrors {
		if r, ok := o.(*model.Route); ok {
			return wafCheck(r.WAF)
		}
		return nil
	})
	api.AddValidator(model.KindSettings, func(o model.Object, _ *model.Snapshot) model.FieldErrors {
		if s, ok := o.(*model.Settings); ok {
			return wafCheck(s.WAF)
		}
		return nil
	})
	api.AddValidator(model.KindPolicies, extauthz.ValidatePolicy)
}
