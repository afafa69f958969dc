package extauthz

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the ext_authz Prometheus metrics.
type Metrics struct {
	// Decisions is api_gateway_authz_decisions_total{checker,decision,reason}.
	Decisions *prometheus.CounterVec
	// Duration is api_gateway_authz_check_duration_seconds.
	Duration prometheus.Histogram
	// DependencyFailures is api_gateway_authz_dependency_failures_total{dependency,mode}
	// (mode: fail_closed | fail_open).
	DependencyFailures *prometheus.CounterVec
	// IntrospectionThrottled is api_gateway_authz_introspection_throttled_total: checks
	// answered without an introspection call because the outbound call budget was spent.
	IntrospectionThrottled prometheus.Counter
	// Abandoned is api_gateway_authz_checks_abandoned_total{stage}: checks stopped because
	// their deadline passed (Envoy no longer waits for the answer), by the stage not run.
	Abandoned *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "api_gateway_authz_decisions_total",
			Help: "ext_authz decisions by deciding checker, decision (allow, deny, dry_run_deny, fail_open) and reason.",
		}, []string{"checker", "decision", "reason"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "api_gateway_authz_check_duration_seconds",
			Help:    "Time to decide one ext_authz Check.",
			Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1},
		}),
		DependencyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "api_gateway_authz_dependency_failures_total",
			Help: "Checks where a dependency (JWKS, introspection, quota store) failed, by dependency and mode.",
		}, []string{"dependency", "mode"}),
		IntrospectionThrottled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "api_gateway_authz_introspection_throttled_total",
			Help: "Checks whose token introspection was refused by the outbound call budget (denied 503, never failed open).",
		}),
		Abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "api_gateway_authz_checks_abandoned_total",
			Help: "Checks stopped because their deadline passed, by the stage that was not run.",
		}, []string{"stage"}),
	}
	if reg == nil {
		return m, nil
	}
	// Registering twice with the same registerer reuses the collectors already there.
	reuse := func(c prometheus.Collector) (prometheus.Collector, error) {
		err := reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector, nil
		}
		return c, err
	}
	c, err := reuse(m.Decisions)
	if err != nil {
		return nil, err
	}
	if cv, ok := c.(*prometheus.CounterVec); ok {
		m.Decisions = cv
	}
	if c, err = reuse(m.Duration); err != nil {
		return nil, err
	}
	if h, ok := c.(prometheus.Histogram); ok {
		m.Duration = h
	}
	if c, err = reuse(m.DependencyFailures); err != nil {
		return nil, err
	}
	if cv, ok := c.(*prometheus.CounterVec); ok {
		m.DependencyFailures = cv
	}
	if c, err = reuse(m.IntrospectionThrottled); err != nil {
		return nil, err
	}
	if cn, ok := c.(prometheus.Counter); ok {
		m.IntrospectionThrottled = cn
	}
	if c, err = reuse(m.Abandoned); err != nil {
		return nil, err
	}
	if cv, ok := c.(*prometheus.CounterVec); ok {
		m.Abandoned = cv
	}
	return m, nil
}
