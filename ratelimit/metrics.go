package ratelimit

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Hit results (the result label of api_gateway_rate_limit_hits_total).
const (
	resultOK          = "ok"
	resultOverLimit   = "over_limit"
	resultShadow      = "shadow_over_limit" // over the limit in shadow or quota mode: allowed
	resultUnlimited   = "unlimited"
	resultFailOpen    = "fail_open"
	resultFailClosed  = "fail_closed"
	resultCachedDeny  = "over_limit_local_cache"
	numLimitResults   = 7
	metricsNamespaceR = "api_gateway_rate_limit_"
)

var resultNames = [numLimitResults]string{resultOK, resultOverLimit, resultShadow, resultUnlimited, resultFailOpen, resultFailClosed, resultCachedDeny}

const (
	rOK = iota
	rOver
	rShadow
	rUnlimited
	rFailOpen
	rFailClosed
	rCached
)

type metrics struct {
	hits     *prometheus.CounterVec
	storeDur *prometheus.HistogramVec
	failOpen *prometheus.CounterVec
}

// limitMetrics are one limit's counters, resolved once.
type limitMetrics struct {
	owner *metrics
	c     [numLimitResults]prometheus.Counter
	fo    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricsNamespaceR + "hits_total",
			Help: "Rate-limit decisions per descriptor: domain, descriptor keys (values too with detailed_metric), algorithm and result.",
		}, []string{"domain", "descriptor", "algorithm", "result"}),
		storeDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metricsNamespaceR + "store_duration_seconds",
			Help:    "Time for one request's round trip to the counter store.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5},
		}, []string{"store", "result"}),
		failOpen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricsNamespaceR + "fail_open_total",
			Help: "Descriptors allowed because the counter store was unreachable (fail_mode open).",
		}, []string{"domain"}),
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	for _, c := range []prometheus.Collector{m.hits, m.storeDur, m.failOpen} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			switch v := are.ExistingCollector.(type) {
			case *prometheus.CounterVec:
				if c == m.hits {
					m.hits = v
				} else {
					m.failOpen = v
				}
			case *prometheus.HistogramVec:
				m.storeDur = v
			}
		}
	}
	return m, nil
}

func (m *metrics) forLimit(lim *limitDef) *limitMetrics {
	if lm := lim.metrics.Load(); lm != nil && lm.owner == m {
		return lm
	}
	lm := m.resolve(lim.domain, lim.label, lim.algLabel)
	lim.metrics.CompareAndSwap(nil, lm)
	return lm
}

func (m *metrics) resolve(domain, label, alg string) *limitMetrics {
	lm := &limitMetrics{owner: m, fo: m.failOpen.WithLabelValues(domain)}
	for i, r := range resultNames {
		lm.c[i] = m.hits.WithLabelValues(domain, label, alg, r)
	}
	return lm
}
