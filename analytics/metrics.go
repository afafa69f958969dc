package analytics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names defined by this package (the seed README's names).
const (
	MetricRequests        = "api_gateway_requests_total"
	MetricDuration        = "api_gateway_request_duration_seconds"
	MetricRequestSize     = "api_gateway_request_size_bytes"
	MetricResponseSize    = "api_gateway_response_size_bytes"
	MetricErrors          = "api_gateway_errors_total"
	MetricActiveUsers     = "api_gateway_active_users"
	MetricUpstreamLatency = "api_gateway_upstream_latency_seconds"
	MetricALSEntries      = "api_gateway_als_entries_total"
	MetricALSStreams      = "api_gateway_als_streams_active"
	MetricFlushes         = "api_gateway_analytics_flushes_total"
	MetricFlushSeconds    = "api_gateway_analytics_flush_duration_seconds"
	MetricPendingRows     = "api_gateway_analytics_pending_rows"
	MetricOverflow        = "api_gateway_analytics_key_overflow_total"
	MetricDropped         = "api_gateway_analytics_dropped_requests_total"
)

// DurationBuckets are the buckets (seconds) of the latency histograms; they equal
// LatencyBoundsMs.
var DurationBuckets = func() []float64 {
	b := make([]float64, len(LatencyBoundsMs))
	for i, ms := range LatencyBoundsMs {
		b[i] = ms / 1000
	}
	return b
}()

// SizeBuckets are the buckets (bytes) of the size histograms: 64 B to 16 MiB.
var SizeBuckets = prometheus.ExponentialBuckets(64, 4, 10)

// maxRouteLabels bounds the distinct route label values; later routes count as Other.
const maxRouteLabels = 2000

type metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	reqSize      *prometheus.HistogramVec
	respSize     *prometheus.HistogramVec
	errors       *prometheus.CounterVec
	upstream     *prometheus.HistogramVec
	alsEntries   *prometheus.CounterVec
	alsStreams   prometheus.Gauge
	flushes      *prometheus.CounterVec
	flushSeconds prometheus.Histogram
	overflow     prometheus.Counter
	dropped      prometheus.Counter

	mu       sync.RWMutex
	children map[seriesKey]*series
	routes   map[string]bool
}

type seriesKey struct{ route, method, class string }

// series caches the label-bound children of one (route, method, status class) so the hot
// path does no label hashing.
type series struct {
	requests prometheus.Counter
	duration prometheus.Observer
	reqSize  prometheus.Observer
	respSize prometheus.Observer
	upstream prometheus.Observer
}

func newMetrics(reg prometheus.Registerer, users *activeUsers, pending func() float64, now func() time.Time) (*metrics, error) {
	rmc := []string{"route", "method", "status_class"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRequests,
			Help: "HTTP requests proxied by Envoy, from access logs."}, rmc),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricDuration,
			Help: "Total request duration seen by Envoy (to last downstream byte sent).", Buckets: DurationBuckets}, rmc),
		reqSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricRequestSize,
			Help: "Request size (headers and body).", Buckets: SizeBuckets}, []string{"route", "method"}),
		respSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricResponseSize,
			Help: "Response size (headers and body).", Buckets: SizeBuckets}, rmc),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricErrors,
			Help: "Failed requests (4xx, 5xx or no response) by error type."}, []string{"route", "status_class", "type"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricUpstreamLatency,
			Help: "Upstream service time (first upstream byte sent to first byte received).", Buckets: DurationBuckets}, []string{"route"}),
		alsEntries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricALSEntries,
			Help: "Access-log entries received over ALS, by log type (http: final request entries, http_intermediate: start/periodic entries not counted, tcp)."}, []string{"type"}),
		alsStreams: prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricALSStreams,
			Help: "Open ALS streams from Envoy."}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricFlushes,
			Help: "Analytics flushes to the store by result (ok, error)."}, []string{"result"}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: MetricFlushSeconds,
			Help: "Time to write one flush to the analytics store.", Buckets: prometheus.DefBuckets}),
		overflow: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricOverflow,
			Help: "Requests aggregated under an 'other' key because the per-minute key cap was reached."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: MetricDropped,
			Help: "Requests whose aggregates were dropped because the store failed for too long."}),
		children: make(map[seriesKey]*series),
		routes:   make(map[string]bool),
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricActiveUsers,
		Help: "Distinct users (ext_authz user_id) seen in the last 5 minutes (HyperLogLog estimate)."},
		func() float64 { return users.count(now()) })
	pend := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricPendingRows,
		Help: "Aggregate rows in memory waiting for the next flush."}, pending)
	// Series that alerts compare exist from the start, at zero.
	for _, r := range []string{"ok", "error"} {
		m.flushes.WithLabelValues(r)
	}
	for _, t := range []string{"http", "tcp"} {
		m.alsEntries.WithLabelValues(t)
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.reqSize, m.respSize, m.errors,
		m.upstream, m.alsEntries, m.alsStreams, m.flushes, m.flushSeconds, m.overflow, m.dropped, active, pend} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) seriesFor(route, method, class string) *series {
	k := seriesKey{route, method, class}
	m.mu.RLock()
	s := m.children[k]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.children[k]; s != nil {
		return s
	}
	if !m.routes[route] {
		if len(m.routes) >= maxRouteLabels {
			k.route = Other
			if s = m.children[k]; s != nil {
				return s
			}
		} else {
			m.routes[route] = true
		}
	}
	s = &series{
		requests: m.requests.WithLabelValues(k.route, method, class),
		duration: m.duration.WithLabelValues(k.route, method, class),
		reqSize:  m.reqSize.WithLabelValues(k.route, method),
		respSize: m.respSize.WithLabelValues(k.route, method, class),
		upstream: m.upstream.WithLabelValues(k.route),
	}
	m.children[seriesKey{route, method, class}] = s
	return s
}

// observe records one entry.
func (m *metrics) observe(e *Entry) {
	class := statusClass(e.Status)
	s := m.seriesFor(e.Route, e.Method, class)
	s.requests.Inc()
	s.duration.Observe(e.Duration.Seconds())
	s.reqSize.Observe(float64(e.BytesIn))
	s.respSize.Observe(float64(e.BytesOut))
	if e.HasUpstream {
		s.upstream.Observe(e.Upstream.Seconds())
	}
	if e.ErrorType != "" {
		route := e.Route
		m.mu.RLock()
		if !m.routes[route] {
			route = Other
		}
		m.mu.RUnlock()
		m.errors.WithLabelValues(route, class, e.ErrorType).Inc()
	}
}
