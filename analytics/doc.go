// Package analytics turns Envoy's access logs into Prometheus metrics and durable usage
// aggregates.
//
// Envoy streams HTTP access log entries to the AccessLogService (ALS) that Service
// registers on the gRPC server. Each entry is converted to an Entry (route, identity, status,
// sizes, latencies), observed into the Prometheus metrics and added to an in-memory
// aggregate keyed by (minute, route, API key, user, tenant). Nothing on the stream touches the
// disk: a background flusher writes the pending aggregates to a Store every flush interval
// and on Close, adding them into minute, hour and day buckets at once (write-through roll-up),
// and expires buckets past the Retention of their resolution.
//
// Two Store implementations exist: BoltStore (an embedded bbolt file, single node) and
// RedisStore (HINCRBY on shared hashes, safe for many gateway replicas writing at once).
//
// Decoding Envoy's entries with the standard protobuf codec costs more than everything
// else together (metadata Structs above all); ServerOption installs a codec on the gRPC
// server that decodes ALS messages straight into Entries (reading only the fields used) and
// passes every other message to the standard codec.
//
// The management API handlers (UsageHandler, ErrorsHandler) answer from the store plus the
// aggregates not yet flushed, so a request is visible as soon as Envoy has logged it.
package analytics
