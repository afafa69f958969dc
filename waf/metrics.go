package waf

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the WAF's Prometheus metrics.
type Metrics struct {
	// Threats is api_gateway_security_threats_total{route,category,rule}: one per matched
	// attack rule of a flagged request (blocked, or would be blocked in detect mode).
	Threats *prometheus.CounterVec
}

// NewMetrics creates the WAF metrics and registers them with reg (nil: not registered).
// Registering twice with the same registerer reuses the existing collector.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Threats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "api_gateway_security_threats_total",
			Help: "Requests flagged by the WAF, by route, attack category and matched rule id.",
		}, []string{"route", "category", "rule"}),
	}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m.Threats); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if cv, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				m.Threats = cv
				return m, nil
			}
		}
		return nil, err
	}
	return m, nil
}

// Observe counts one threat; callers that use WAF.Inspect directly (not RouteWAF.Check)
// can count with it. A nil Metrics does nothing.
func (m *Metrics) Observe(route, category, rule string) { m.observe(route, category, rule) }

func (m *Metrics) observe(route, category, rule string) {
	if m == nil {
		return
	}
	if category == "" {
		category = CategoryGeneric
	}
	m.Threats.WithLabelValues(route, category, rule).Inc()
}
