package main

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/discovery"
	"github.com/api-gateway/api-gateway/store"
)

// discoveryLeaseTTL: a replica that stops renewing (crash, partition) hands the sweeping to
// another after this long; a clean shutdown releases the lease at once.
const discoveryLeaseTTL = 5 * time.Second

// wireDiscovery starts the server side of service discovery: the TTL sweeper (instances
// that stop sending heartbeats leave EDS), the removal of expired WAF bans and, with
// HEALTH_PROBE=true, the control-plane health prober. With a shared Redis only the replica
// holding the lease key works; with the embedded store this replica works alone.
// ENABLE_SERVICE_DISCOVERY=false turns the sweeper and the prober off (registrations still
// work; TTLs are then only applied when something else triggers a rebuild); expired bans are
// removed either way.
func (a *app) wireDiscovery() error {
	deregisterAfter := a.cfg.DeregisterAfter
	var lease discovery.Lease = discovery.Solo{}
	if a.cfg.RedisURL != "" {
		// The store's own connection pool when it is the Redis store; else a small client.
		type redisBacked interface {
			Client() redis.UniversalClient
			Prefix() string
		}
		if rb, ok := a.store.(redisBacked); ok {
			lease = discovery.NewRedisLease(rb.Client(), rb.Prefix()+":lease:discovery", discoveryLeaseTTL)
		} else {
			opts, err := store.ParseRedisURL(a.cfg.RedisURL)
			if err != nil {
				return fmt.Errorf("REDIS_URL: %w", err)
			}
			opts.PoolSize = 2
			c := redis.NewUniversalClient(opts)
			a.closers = append(a.closers, c.Close)
			lease = discovery.NewRedisLease(c, "{"+store.DefaultRedisPrefix+"}:lease:discovery", discoveryLeaseTTL)
		}
	}
	sweep := a.cfg.EnableServiceDiscovery
	if !sweep {
		a.log.Info("service discovery sweeper disabled (ENABLE_SERVICE_DISCOVERY=false); expired WAF bans are still removed")
	}
	srv, err := discovery.NewServer(discovery.ServerOptions{
		Store: a.store, Log: a.log, Reg: a.reg, Lease: lease,
		DeregisterAfter: deregisterAfter, Probe: a.cfg.HealthProbe && sweep, NoServiceSweep: !sweep,
	})
	if err != nil {
		return err
	}
	a.runs = append(a.runs, srv.Run)
	a.log.Info("service discovery sweeper wired", "services", sweep, "shared_lease", a.cfg.RedisURL != "",
		"health_probe", a.cfg.HealthProbe && sweep, "deregister_after", deregisterAfter.String(),
		"ban_grace", discovery.DefaultBanGrace.String())
	return nil
}
