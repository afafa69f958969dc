package main

import (
	"path/filepath"

	"github.com/api-gateway/api-gateway/analytics"
	"github.com/api-gateway/api-gateway/store"
)

// wireAnalytics starts the access-log service (Envoy streams HTTP access logs to it), its
// per-minute aggregates (in Redis when the store is Redis, else DATA_DIR/analytics.db) and the
// analytics endpoints of the management API.
func (a *app) wireAnalytics() error {
	var st analytics.Store
	if rs, ok := a.store.(*store.Redis); ok {
		st = analytics.NewRedisStore(rs.Client(), rs.Prefix()+":analytics", analytics.DefaultRetention())
	} else {
		bs, err := analytics.OpenBoltStore(filepath.Join(a.cfg.DataDir, "analytics.db"))
		if err != nil {
			return err
		}
		a.closers = append(a.closers, bs.Close)
		st = bs
	}
	svc, err := analytics.New(a.log.With("component", "analytics"), a.reg, st, analytics.DefaultRetention())
	if err != nil {
		return err
	}
	// Closed after the gRPC server stopped (closers run in reverse): the final flush sees
	// every entry, and it runs before the store closes.
	a.closers = append(a.closers, svc.Close)
	svc.Register(a.grpc)
	a.api.Mount("GET /api/v1/management/analytics/usage", svc.UsageHandler())
	a.api.Mount("GET /api/v1/management/analytics/errors", svc.ErrorsHandler())
	return nil
}
