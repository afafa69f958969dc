package discovery

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/store"
)

// ServerOptions configure the gateway side of discovery.
type ServerOptions struct {
	Store store.Store
	Log   *slog.Logger
	// Reg receives the metrics (nil = none).
	Reg prometheus.Registerer
	// Lease picks the one replica that sweeps and probes (nil = Solo: this replica alone).
	Lease Lease
	// SweepInterval is how often the lease is renewed and instances are swept (default 1s).
	SweepInterval time.Duration
	// DeregisterAfter deletes instances expired for this long (0 = keep them, expired).
	DeregisterAfter time.Duration
	// NoServiceSweep leaves service instances alone (ENABLE_SERVICE_DISCOVERY=false): only
	// expired WAF bans are removed, and there is no prober.
	NoServiceSweep bool
	// BanGrace: expired WAF bans are deleted this long after their expiry (default
	// DefaultBanGrace).
	BanGrace time.Duration
	// BanInterval is how often expired WAF bans are looked for (default 5s; it lists every
	// ip-rule, so less often than instances).
	BanInterval time.Duration
	// Probe turns the control-plane health prober on (HEALTH_PROBE=true).
	Probe bool
	// ProbeClient overrides the prober's HTTP client.
	ProbeClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server runs the sweepers and the optional prober while this replica holds the lease.
type Server struct {
	opts    ServerOptions
	log     *slog.Logger
	Sweeper *Sweeper // nil with NoServiceSweep
	Bans    *BanSweeper
	Prober  *Prober // nil unless Probe
	m       *metrics
}

type metrics struct {
	expired prometheus.Counter
	deleted prometheus.Counter
	probes  *prometheus.CounterVec
	leader  prometheus.Gauge
	// bansDeleted counts expired WAF bans removed (BanSweeper).
	bansDeleted prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "api_gateway_discovery_expired_total",
			Help: "Service instances marked expired for missing their TTL."}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "api_gateway_discovery_deregistered_total",
			Help: "Expired service instances removed after DeregisterAfter."}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "api_gateway_discovery_probes_total",
			Help: "Control-plane health probes of service instances, by result."}, []string{"result"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "api_gateway_discovery_leader",
			Help: "1 while this replica holds the discovery lease (sweeps and probes)."}),
		bansDeleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "api_gateway_waf_bans_deleted_total",
			Help: "Expired WAF repeat-offender bans (ip-rules of source waf) deleted from the store."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.expired, m.deleted, m.probes, m.leader, m.bansDeleted} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// NewServer builds the discovery server side.
func NewServer(o ServerOptions) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Lease == nil {
		o.Lease = Solo{}
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = time.Second
	}
	if o.BanInterval <= 0 {
		o.BanInterval = 5 * time.Second
	}
	m, err := newMetrics(o.Reg)
	if err != nil {
		return nil, err
	}
	log := o.Log.With("component", "discovery")
	s := &Server{opts: o, log: log, m: m,
		Bans: &BanSweeper{Store: o.Store, Log: log, Now: o.Now, Grace: o.BanGrace, m: m}}
	if !o.NoServiceSweep {
		s.Sweeper = &Sweeper{Store: o.Store, Log: log, Now: o.Now, DeregisterAfter: o.DeregisterAfter, m: m}
	}
	if o.Probe && !o.NoServiceSweep {
		s.Prober = &Prober{Store: o.Store, Log: log, Client: o.ProbeClient, Now: o.Now, m: m}
	}
	return s, nil
}

// Run sweeps (service instances, expired WAF bans) and probes every SweepInterval while
// holding the lease, until ctx ends;
// then it releases the lease so another replica takes over at once.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	var probing chan struct{} // non-nil while a probe round runs
	leader := false
	failing := false
	var lastBans time.Time // real time of the last ban sweep
	defer func() {
		if leader {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = s.opts.Lease.Release(rctx)
			cancel()
		}
		if probing != nil {
			<-probing
		}
	}()
	for {
		held, err := s.opts.Lease.Hold(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing {
				s.log.Warn("discovery lease unavailable; not sweeping", "error", err.Error())
				failing = true
			}
			held = false
		} else {
			failing = false
		}
		if held != leader {
			leader = held
			if held {
				s.log.Info("this replica now sweeps expired service instances and WAF bans", "services", s.Sweeper != nil, "probe", s.Prober != nil)
				s.m.leader.Set(1)
			} else {
				s.log.Info("another replica sweeps service instances and WAF bans now")
				s.m.leader.Set(0)
			}
		}
		if leader {
			if s.Sweeper != nil {
				if res, err := s.Sweeper.Sweep(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("sweep failed", "error", err.Error())
				} else if res.Expired+res.Deleted+res.Revived+res.Forgotten > 0 {
					s.log.Debug("sweep", "expired", res.Expired, "revived", res.Revived, "deleted", res.Deleted,
						"forgotten", res.Forgotten, "conflicts", res.Conflicts)
				}
			}
			if time.Since(lastBans) >= s.opts.BanInterval {
				lastBans = time.Now()
				if _, err := s.Bans.Sweep(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("WAF ban sweep failed", "error", err.Error())
				}
			}
			if s.Prober != nil && probing == nil {
				probing = make(chan struct{})
				go func(done chan struct{}) {
					defer close(done)
					if _, err := s.Prober.Round(ctx); err != nil && ctx.Err() == nil {
						s.log.Warn("health probe round failed", "error", err.Error())
					}
				}(probing)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if probing != nil {
			select {
			case <-probing:
				probing = nil
			default:
			}
		}
	}
}
