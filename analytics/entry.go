package analytics

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// ExtAuthzNamespace is the dynamic metadata namespace where Envoy stores what the ext_authz
// Check returned (contracts: user_id, api_key_id, tenant_id, auth_method, scopes).
const ExtAuthzNamespace = "envoy.filters.http.ext_authz"

// UnmatchedRoute is the route id of requests that matched no route.
const UnmatchedRoute = "unmatched"

// Entry is one access-log entry reduced to what analytics needs.
type Entry struct {
	Time     time.Time
	Route    string
	Method   string
	Status   uint32 // 0 when no response was sent
	APIKey   string
	User     string
	Tenant   string
	BytesIn  uint64 // request headers + body
	BytesOut uint64 // response headers + body
	Duration time.Duration
	// Upstream is the upstream service time; HasUpstream is false when the request never
	// reached an upstream.
	Upstream    time.Duration
	HasUpstream bool
	// ErrorType classifies failures from Envoy's response flags ("" when none).
	ErrorType string
}

// FromHTTPLog converts an Envoy HTTP access-log entry. now is used when the entry has no
// valid start time.
func FromHTTPLog(l *alsdata.HTTPAccessLogEntry, now time.Time) Entry {
	cp := l.GetCommonProperties()
	req := l.GetRequest()
	resp := l.GetResponse()
	e := Entry{
		Time:     now,
		Route:    cleanDim(cp.GetRouteName()),
		Method:   methodName(req.GetRequestMethod()),
		BytesIn:  req.GetRequestHeadersBytes() + req.GetRequestBodyBytes(),
		BytesOut: resp.GetResponseHeadersBytes() + resp.GetResponseBodyBytes(),
	}
	if e.Route == "" {
		e.Route = UnmatchedRoute
	}
	if ts := cp.GetStartTime(); ts != nil && ts.IsValid() {
		e.Time = ts.AsTime()
	}
	if rc := resp.GetResponseCode(); rc != nil {
		e.Status = rc.GetValue()
	}
	switch {
	case cp.GetTimeToLastDownstreamTxByte() != nil:
		e.Duration = dur(cp.GetTimeToLastDownstreamTxByte())
	case cp.GetDuration() != nil:
		e.Duration = dur(cp.GetDuration())
	}
	if rx := cp.GetTimeToFirstUpstreamRxByte(); rx != nil {
		e.HasUpstream = true
		e.Upstream = dur(rx)
		if tx := cp.GetTimeToFirstUpstreamTxByte(); tx != nil && dur(tx) <= e.Upstream {
			e.Upstream -= dur(tx)
		}
	}
	if md := cp.GetMetadata().GetFilterMetadata()[ExtAuthzNamespace]; md != nil {
		e.User = cleanDim(str(md, "user_id"))
		e.APIKey = cleanDim(str(md, "api_key_id"))
		e.Tenant = cleanDim(str(md, "tenant_id"))
	}
	e.ErrorType = errorType(cp.GetResponseFlags(), e.Status)
	return e
}

// Final reports whether l is the one entry Envoy writes when a request ends. Entries written
// at request start, periodically (access_log_flush_interval) or for upstream attempts are
// not counted, or a request would count more than once.
func Final(l *alsdata.HTTPAccessLogEntry) bool {
	cp := l.GetCommonProperties()
	if cp.GetIntermediateLogEntry() {
		return false
	}
	t := cp.GetAccessLogType()
	return t == alsdata.AccessLogType_NotSet || t == alsdata.AccessLogType_DownstreamEnd
}

func dur(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	v := d.AsDuration()
	if v < 0 {
		return 0
	}
	return v
}

func str(s *structpb.Struct, k string) string {
	if v, ok := s.GetFields()[k]; ok {
		return v.GetStringValue()
	}
	return ""
}

func methodName(m corev3.RequestMethod) string {
	switch m {
	case corev3.RequestMethod_GET:
		return "GET"
	case corev3.RequestMethod_HEAD:
		return "HEAD"
	case corev3.RequestMethod_POST:
		return "POST"
	case corev3.RequestMethod_PUT:
		return "PUT"
	case corev3.RequestMethod_DELETE:
		return "DELETE"
	case corev3.RequestMethod_CONNECT:
		return "CONNECT"
	case corev3.RequestMethod_OPTIONS:
		return "OPTIONS"
	case corev3.RequestMethod_TRACE:
		return "TRACE"
	case corev3.RequestMethod_PATCH:
		return "PATCH"
	}
	return "OTHER"
}

// Error types of api_gateway_errors_total{type}. The set is fixed so the label is bounded.
const (
	ErrUpstreamTimeout   = "upstream_timeout"
	ErrNoHealthyUpstream = "no_healthy_upstream"
	ErrUpstreamConnect   = "upstream_connection_failure"
	ErrUpstreamReset     = "upstream_reset"
	ErrRateLimited       = "rate_limited"
	ErrUnauthorized      = "unauthorized"
	ErrNoRoute           = "no_route"
	ErrDownstreamReset   = "downstream_reset"
	ErrClient            = "client_error"
	ErrServer            = "server_error"
)

// errorType classifies a failed request: Envoy's response flags first, then the status
// class. It returns "" for a success.
func errorType(f *alsdata.ResponseFlags, status uint32) string {
	switch {
	case f.GetUpstreamRequestTimeout() || f.GetStreamIdleTimeout() || f.GetDurationTimeout():
		return ErrUpstreamTimeout
	case f.GetNoHealthyUpstream():
		return ErrNoHealthyUpstream
	case f.GetUpstreamConnectionFailure() || f.GetUpstreamOverflow():
		return ErrUpstreamConnect
	case f.GetUpstreamRemoteReset() || f.GetUpstreamConnectionTermination() || f.GetUpstreamProtocolError():
		return ErrUpstreamReset
	case f.GetRateLimited():
		return ErrRateLimited
	case f.GetUnauthorizedDetails() != nil:
		return ErrUnauthorized
	case f.GetNoRouteFound() || f.GetNoClusterFound():
		return ErrNoRoute
	}
	switch {
	case status == 0 && (f.GetDownstreamConnectionTermination() || f.GetDownstreamRemoteReset()):
		return ErrDownstreamReset
	case status == 0:
		return ErrServer
	case status == 429:
		return ErrRateLimited
	case status == 401 || status == 403:
		return ErrUnauthorized
	case status >= 500:
		return ErrServer
	case status >= 400:
		return ErrClient
	}
	return ""
}

// statusClass returns "1xx".."5xx", or "none" when no response was sent.
func statusClass(code uint32) string {
	switch {
	case code >= 100 && code < 200:
		return "1xx"
	case code >= 200 && code < 300:
		return "2xx"
	case code >= 300 && code < 400:
		return "3xx"
	case code >= 400 && code < 500:
		return "4xx"
	case code >= 500 && code < 600:
		return "5xx"
	}
	return "none"
}
