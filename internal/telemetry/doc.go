// Package telemetry holds the logging and tracing plumbing shared by every component:
// a JSON slog logger that stamps request_id and trace_id from the context, the
// OpenTelemetry tracer provider (OTLP/gRPC export when OTEL_EXPORTER_OTLP_ENDPOINT is set,
// a no-op provider otherwise) with W3C tracecontext propagation, and the gRPC and HTTP
// server instrumentation built on them.
package telemetry
