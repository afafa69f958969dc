package analytics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Service is the ALS receiver, the Prometheus metrics derived from access logs and the
// usage aggregates with their HTTP API.
type Service struct {
	accesslogv3.UnimplementedAccessLogServiceServer

	log       *slog.Logger
	store     Store
	retention Retention
	now       func() time.Time
	agg       *aggregator
	users     *activeUsers
	m         *metrics
	interval  time.Duration

	flushMu   sync.Mutex // one flush at a time; queries hold it so no batch is seen twice
	lastExp   time.Time
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// Option changes a Service setting.
type Option func(*config)

type config struct {
	clock         func() time.Time
	flushInterval time.Duration
	maxKeys       int
}

// WithClock injects the clock (tests).
func WithClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }

// WithFlushInterval sets how often pending aggregates are written (default 10s). Zero
// disables the background flusher: the owner calls Flush (tests).
func WithFlushInterval(d time.Duration) Option { return func(c *config) { c.flushInterval = d } }

// WithMaxKeysPerMinute caps the distinct (route, api key, user, tenant) keys kept in memory
// per minute (default 10000); more keys are folded into Other keys.
func WithMaxKeysPerMinute(n int) Option { return func(c *config) { c.maxKeys = n } }

// New creates the service and starts its flusher. store is not closed by the Service.
func New(logger *slog.Logger, reg prometheus.Registerer, store Store, retention Retention, opts ...Option) (*Service, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if store == nil {
		return nil, errors.New("analytics: a Store is required")
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if err := retention.Validate(); err != nil {
		return nil, err
	}
	cfg := config{clock: time.Now, flushInterval: 10 * time.Second, maxKeys: 10000}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxKeys < 1 {
		return nil, fmt.Errorf("analytics: max keys per minute must be positive, got %d", cfg.maxKeys)
	}
	s := &Service{
		log:       logger.With("component", "analytics"),
		store:     store,
		retention: retention,
		now:       cfg.clock,
		agg:       newAggregator(cfg.maxKeys),
		users:     newActiveUsers(),
		interval:  cfg.flushInterval,
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	m, err := newMetrics(reg, s.users, func() float64 { return float64(s.agg.size()) }, s.now)
	if err != nil {
		return nil, fmt.Errorf("analytics: register metrics: %w", err)
	}
	s.m = m
	if s.interval > 0 {
		go s.loop()
	} else {
		close(s.done)
	}
	return s, nil
}

// Register adds the AccessLogService to the gRPC server. With ServerOption on that server
// the stream decodes with the fast decoder.
func (s *Service) Register(g *grpc.Server) { g.RegisterService(&alsServiceDesc, s) }

// alsServiceDesc is the generated AccessLogService descriptor with a handler that receives
// into alsMessage (so ServerCodec can decode it the fast way).
var alsServiceDesc = grpc.ServiceDesc{
	ServiceName: accesslogv3.AccessLogService_ServiceDesc.ServiceName,
	HandlerType: (*accesslogv3.AccessLogServiceServer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "StreamAccessLogs",
		Handler:       func(srv any, stream grpc.ServerStream) error { return srv.(*Service).serve(stream) },
		ClientStreams: true,
	}},
	Metadata: accesslogv3.AccessLogService_ServiceDesc.Metadata,
}

// StreamAccessLogs implements accesslogv3.AccessLogServiceServer.
func (s *Service) StreamAccessLogs(stream grpc.ClientStreamingServer[accesslogv3.StreamAccessLogsMessage, accesslogv3.StreamAccessLogsResponse]) error {
	return s.serve(stream)
}

// serve receives Envoy's access-log stream. Entries are counted in memory only; the stream
// never waits on the store.
func (s *Service) serve(stream grpc.ServerStream) error {
	s.m.alsStreams.Inc()
	defer s.m.alsStreams.Dec()
	first := true
	for {
		m := newALSMessage()
		err := stream.RecvMsg(m)
		if err == io.EOF {
			return stream.SendMsg(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			if stream.Context().Err() != nil {
				return nil // Envoy went away
			}
			return err
		}
		if !m.fast {
			m.fromProto()
		}
		if first && m.hasIdentifier {
			s.log.Debug("access log stream opened", "node", m.node, "log_name", m.logName)
		}
		first = false
		if len(m.entries) > 0 {
			now := s.now()
			for i := range m.entries {
				e := &m.entries[i]
				if e.Time.IsZero() {
					e.Time = now
				}
				s.Record(e)
			}
			s.m.alsEntries.WithLabelValues("http").Add(float64(len(m.entries)))
		}
		if m.intermediate > 0 {
			s.m.alsEntries.WithLabelValues("http_intermediate").Add(float64(m.intermediate))
		}
		if m.tcp > 0 {
			s.m.alsEntries.WithLabelValues("tcp").Add(float64(m.tcp))
		}
	}
}

// fromProto fills the decoded fields from the message the standard codec decoded.
func (m *alsMessage) fromProto() {
	msg := m.StreamAccessLogsMessage
	if id := msg.GetIdentifier(); id != nil {
		m.hasIdentifier, m.node, m.logName = true, id.GetNode().GetId(), id.GetLogName()
	}
	for _, le := range msg.GetHttpLogs().GetLogEntry() {
		if !Final(le) {
			m.intermediate++
			continue
		}
		m.entries = append(m.entries, FromHTTPLog(le, time.Time{}))
	}
	m.tcp = len(msg.GetTcpLogs().GetLogEntry())
}

// Record counts one entry in the metrics and the in-memory aggregates.
func (s *Service) Record(e *Entry) {
	s.m.observe(e)
	s.users.add(e.User, e.Time)
	if s.agg.add(e) {
		s.m.overflow.Inc()
	}
}

func (s *Service) loop() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(s.interval*3, 30*time.Second))
			if err := s.Flush(ctx); err != nil {
				s.log.Warn("analytics flush failed; will retry", "err", err)
			}
			cancel()
		}
	}
}

// Flush writes the pending aggregates to the store (minute, hour and day rows) and, at most
// once a minute, expires rows past their retention. A failed write is kept and retried by
// the next Flush.
func (s *Service) Flush(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	if batch := s.agg.takeForFlush(); batch != nil {
		start := time.Now()
		err := s.store.Merge(ctx, rollUp(batch))
		s.m.flushSeconds.Observe(time.Since(start).Seconds())
		if dropped := s.agg.doneFlush(batch, err == nil); dropped > 0 {
			s.m.dropped.Add(float64(dropped))
			s.log.Error("analytics store failing for long: dropped the oldest pending minutes", "requests", dropped)
		}
		if err != nil {
			s.m.flushes.WithLabelValues("error").Inc()
			return err
		}
		s.m.flushes.WithLabelValues("ok").Inc()
	}
	now := s.now()
	if now.Sub(s.lastExp) < time.Minute {
		return nil
	}
	var errs []error
	for _, res := range Resolutions {
		before := res.Truncate(now.Add(-s.retention.For(res)))
		if err := s.store.Expire(ctx, res, before); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		s.lastExp = now
	}
	return errors.Join(errs...)
}

// Close stops the flusher and flushes what is pending. It does not close the store.
func (s *Service) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.interval > 0 {
			close(s.stop)
		}
		<-s.done
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = s.Flush(ctx)
	})
	return err
}
