package server

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	pushes *prometheus.CounterVec
	acks   *prometheus.CounterVec
	nacks  *prometheus.CounterVec
	nodes  prometheus.Gauge
	build  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "api_gateway_xds_pushes_total",
			Help: "xDS responses sent to clients, by resource type."}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "api_gateway_xds_acks_total",
			Help: "xDS responses acknowledged (ACKed) by clients, by resource type: each response once, by the first request naming its nonce."}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "api_gateway_xds_nacks_total",
			Help: "xDS responses rejected (NACKed) by clients, by resource type: each response once, however often a client repeats the NACK."}, []string{"type"}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "api_gateway_xds_connected_nodes",
			Help: "xDS clients (Envoy nodes and gRPC clients) with an open stream."}),
		build: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "api_gateway_xds_snapshot_build_seconds",
			Help:    "Time to translate, build and validate the xDS snapshots of one model revision.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pushes, m.acks, m.nacks, m.nodes, m.build} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
